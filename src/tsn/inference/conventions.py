"""Saved-prediction conventions: where each codebase writes a task's predictions, and reading them back checked.

The field's codebases save the same files: an 8-bit PNG per image and task (class indices; ``255 * p`` for
probabilities, truncated; RGB ``(n + 1) * 255 / 2`` for normals) and a ``.mat`` file with the key ``depth``
holding float depth, all at the image's original size. They differ in the folder names:

* ``authors``: the TSNs authors' test script and ``tsn predict --save-format authors``: ``<task>/<id>.png``
  with tsn's task names (``saliency``, ``edges``);
* ``astmt``: ASTMT and the MTL survey code (``save_model_predictions``): ``sal/`` and ``edge/``, the other
  tasks by their names;
* ``invpt``: the InvPT family's ``save_model_pred_for_one_task`` (the prediction cropped from the padded
  network input first): the same folders and files as ``astmt``.

:func:`write_prediction` writes one prediction in a convention (``tsn predict --format``, ``tsn evaluate
--save-predictions``); :func:`read_saved_prediction` reads one back as the array :meth:`TaskSpec.to_saved` gives,
refusing a missing file, a size other than the image's and values outside the convention's range in one line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsn.errors import TsnError
from tsn.tasks import TaskSpec
from tsn.utils.registry import Registry

__all__ = [
    "PredictionConvention",
    "register_convention",
    "get_convention",
    "list_conventions",
    "prediction_path",
    "write_prediction",
    "read_saved_prediction",
]


@dataclass(frozen=True)
class PredictionConvention:
    name: str
    title: str
    folders: Mapping[str, str] = field(default_factory=dict)
    """Task -> folder name where it is not the task's name."""

    def folder(self, task: str) -> str:
        return self.folders.get(task, task)


_CONVENTIONS: Registry[PredictionConvention] = Registry(
    "prediction convention", "register one with tsn.inference.conventions.register_convention"
)


def register_convention(convention: PredictionConvention) -> PredictionConvention:
    return _CONVENTIONS.register(convention.name, convention)


def get_convention(name: str | PredictionConvention) -> PredictionConvention:
    if isinstance(name, PredictionConvention):
        return name
    return _CONVENTIONS.lookup(name)


def list_conventions() -> list[str]:
    return list(_CONVENTIONS)


_REFERENCE_FOLDERS = {"saliency": "sal", "edges": "edge"}
register_convention(PredictionConvention("authors", "the TSNs authors' test script (tsn's task names)"))
register_convention(PredictionConvention("astmt", "ASTMT and the MTL survey code (sal/, edge/)", _REFERENCE_FOLDERS))
register_convention(PredictionConvention("invpt", "the InvPT family (the same files as astmt)", _REFERENCE_FOLDERS))


def prediction_path(spec: TaskSpec, root: str | os.PathLike[str], image_id: str, convention: str) -> Path:
    return Path(root) / get_convention(convention).folder(spec.name) / f"{image_id}{spec.saved_suffix}"


def write_prediction(
    spec: TaskSpec, prediction: np.ndarray, root: str | os.PathLike[str], image_id: str, convention: str = "authors"
) -> Path:
    """Write one postprocessed prediction (at the image's size) in ``convention``, atomically; returns its path."""
    from tsn.inference.pipeline import saved_files
    from tsn.utils.io import atomic_write

    path = prediction_path(spec, root, image_id, convention)
    for suffix, payload in saved_files(spec, prediction, "authors").items():
        with atomic_write(path.with_suffix(suffix)) as handle:
            handle.write(payload)
    return path


def _expected(spec: TaskSpec, size: tuple[int, int]) -> np.ndarray:
    """What ``spec.to_saved`` gives for an image of ``size`` (its dtype and shape)."""
    shape = size if spec.kind.indexed_png else (spec.channels, *size)
    return spec.to_saved(np.zeros(shape, dtype=np.int64 if spec.kind.indexed_png else np.float32))


def _read_file(spec: TaskSpec, path: Path) -> np.ndarray:
    if path.suffix == ".mat":
        import scipy.io

        try:
            content = scipy.io.loadmat(path)
        except (ValueError, OSError, TypeError) as error:
            raise TsnError(f"cannot read {path} as a MATLAB file ({error}); save {spec.name} as <id>.mat") from None
        keys = [key for key in content if not key.startswith("__")]
        key = spec.name if spec.name in content else (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise TsnError(f"{path} has no array {spec.name!r} (keys: {', '.join(keys) or 'none'}); save it as "
                           f"{{'{spec.name}': array}}")
        return np.asarray(content[key])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image)
    except (UnidentifiedImageError, OSError) as error:
        raise TsnError(f"cannot read {path} as an image ({error}); save predictions as PNG files") from None


def read_saved_prediction(spec: TaskSpec, path: str | os.PathLike[str], size: tuple[int, int]) -> np.ndarray:
    """One saved prediction of ``spec`` for an image of ``size = (H, W)``, as :meth:`TaskSpec.to_saved` gives it.

    One-line refusals: a missing file, another size than the image's (predictions are saved at the original
    size), another layout or dtype than the convention's (8-bit grey, RGB normals, float ``.mat`` depth), class
    indices beyond the dataset's classes, probabilities saved as 0..1 instead of 0..255, non-finite depth.
    """
    path = Path(path)
    if not path.is_file():
        raise TsnError(f"prediction {path} is missing; save one {spec.saved_suffix} file per image and task")
    array = _read_file(spec, path)
    expected = _expected(spec, size)
    if spec.saved_suffix == ".mat":
        array = np.squeeze(array)
    if array.shape[:2] != tuple(size):
        raise TsnError(f"prediction {path} is {array.shape[0]} x {array.shape[1]} but its image is {size[0]} x "
                       f"{size[1]}; save predictions at the original image size")
    if array.ndim != expected.ndim or array.shape[2:] != expected.shape[2:]:
        layout = "RGB" if expected.ndim == 3 else "single-channel"
        raise TsnError(f"prediction {path} has shape {array.shape}; {spec.name} is saved as a {layout} image")
    if expected.dtype == np.uint8:
        if array.dtype != np.uint8:
            raise TsnError(f"prediction {path} has {array.dtype} values; {spec.name} is saved as 8-bit (0..255)")
        if spec.kind.indexed_png:
            if array.size and int(array.max()) >= spec.channels:
                raise TsnError(f"prediction {path} holds class {int(array.max())} but {spec.name} has "
                               f"{spec.channels} classes (0..{spec.channels - 1}); check the class convention")
        elif array.size and int(array.max()) == 1:
            raise TsnError(f"prediction {path} holds only values 0 and 1; save {spec.name} as 0..255 "
                           "(255 * probability), as the authors do")
        return array
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise TsnError(f"prediction {path} holds non-numeric or non-finite values; save finite {spec.name} values")
    return array.astype(expected.dtype)
