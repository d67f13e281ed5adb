"""Safe reading of dataset files, and the split/sample machinery shared by the real-dataset loaders.

Every reader turns a missing, unreadable or malformed file into a one-line :class:`~tsn.errors.TsnError` that
names the file, so a corrupt download never surfaces as a deep traceback from PIL, SciPy or OpenCV.

:class:`FolderDataset` holds what PASCAL-Context and NYUD share: locating ``<root>/<FOLDER>``, reading (possibly
combined) split lists, checking that every needed file exists, and assembling the shared sample contract
``{"image", <task>: label, "meta": {"id", "size", "dataset"}}`` with labels fitted to the image size.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import scipy.io
from PIL import Image
from torch.utils.data import Dataset

from tsn.data.paths import data_root
from tsn.dataset_catalog import dataset_tasks
from tsn.errors import TsnError
from tsn.tasks import TaskSpec

__all__ = [
    "read_image",
    "read_label_png",
    "read_mat",
    "read_id_list",
    "rgb_to_normals",
    "fit_label",
    "FolderDataset",
    "Sample",
    "Transform",
]

Sample = dict[str, Any]
"""A sample of the shared contract: ``image``, one entry per task, ``meta``."""

Transform = Callable[[Sample], Sample]

# PIL modes whose pixels are one number each: grey, palette indices (read as indices, never as colours),
# 16/32-bit grey, and 1-bit.
_SINGLE_CHANNEL_MODES = frozenset({"L", "P", "I", "I;16", "I;16B", "I;16L", "1", "F"})

# Labels whose size differs from the image's are fitted to it, as the reference loaders do, with their output
# kind's ``label_fit_interpolation``: unit vectors (normals) bicubic, everything else nearest (class ids, binary
# maps, and NYUD depth alike).
_CV2_FLAGS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def _unreadable(path: Path, what: str, error: Exception) -> TsnError:
    """The one-line error for a file that is missing or that a library failed to parse."""
    if isinstance(error, FileNotFoundError):
        return TsnError(f"missing file {path}; the dataset is incomplete, download it again")
    reason = " ".join(str(error).split()) or type(error).__name__
    return TsnError(f"cannot read {what} {path} ({reason}); the file is corrupt, download it again")


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, or raise a one-line :class:`TsnError` naming it."""
    try:
        image = Image.open(path)
        image.load()
    except Exception as error:  # PIL signals a bad file with OSError, SyntaxError, ValueError, ... alike
        raise _unreadable(path, "image", error) from None
    return image


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as an ``H x W x 3`` uint8 RGB array (decoded with PIL, as the reference loaders do)."""
    return np.asarray(_open_image(Path(path)).convert("RGB"))


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """A single-channel PNG as an ``H x W`` array of its stored values.

    Palette images give their palette *indices* (class ids), never colours; grey images their grey values.
    """
    path = Path(path)
    image = _open_image(path)
    if image.mode not in _SINGLE_CHANNEL_MODES:
        raise TsnError(f"{path} is a {image.mode} image, expected a single-channel (grey or palette) label PNG")
    return np.asarray(image)


def read_mat(path: str | os.PathLike[str], key: str) -> Any:
    """Variable ``key`` of a MATLAB ``.mat`` file (as :func:`scipy.io.loadmat` returns it)."""
    path = Path(path)
    try:
        content = scipy.io.loadmat(path, variable_names=[key])
    except Exception as error:  # SciPy signals a bad file with MatReadError, IndexError, OSError, zlib.error, ...
        raise _unreadable(path, "MATLAB file", error) from None
    if key not in content:
        raise TsnError(f"MATLAB file {path} has no variable {key!r}; the file is corrupt, download it again")
    return content[key]


def read_id_list(path: Path) -> list[str]:
    """Image ids of a split list: one id per line, blank lines skipped."""
    try:
        text = path.read_text()
    except OSError as error:
        raise _unreadable(path, "split list", error) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def rgb_to_normals(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB-encoded normals -> float64 vectors ``2 x / 255 - 1`` (channel 0 = R = x), not renormalised."""
    return 2.0 * rgb.astype(np.float64) / 255.0 - 1.0


def fit_label(label: np.ndarray, size: tuple[int, int], spec: TaskSpec) -> np.ndarray:
    """``label`` resized to the image ``size = (H, W)`` when it differs (nearest, bicubic for unit vectors)."""
    if label.shape[:2] == tuple(size):
        return label
    return cv2.resize(label, (size[1], size[0]), interpolation=_CV2_FLAGS[spec.kind.label_fit_interpolation])


def _missing(paths: Iterable[Path]) -> list[Path]:
    """The paths that do not exist, listing each folder once (much faster than a stat per file)."""
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for path in paths:
        by_folder[path.parent].append(path)
    missing: list[Path] = []
    for folder, files in by_folder.items():
        present = set(os.listdir(folder)) if folder.is_dir() else set()
        missing.extend(path for path in files if path.name not in present)
    return missing


class FolderDataset(Dataset):
    """A multi-task dataset stored as one folder per task (the ASTMT layout of PASCAL_MT and NYUD_MT).

    Subclasses set the class attributes and implement :meth:`read_labels`.
    """

    name: ClassVar[str]
    """Name of the dataset in the registry :mod:`tsn.dataset_catalog` (also ``meta["dataset"]``)."""
    folder: ClassVar[str]
    """Folder name under the data root, e.g. ``PASCAL_MT``."""
    split_folder: ClassVar[str]
    """Folder of the split lists ``<split>.txt``, relative to the dataset folder."""
    files: ClassVar[Mapping[str, str]]
    """File kind (``image``, a task name, or another source such as PASCAL's ``label_map``) -> path template
    relative to the dataset folder, with ``{}`` for the image id."""
    sources: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Task -> the file kinds its label is read from, where that is not just the file kind named as the task."""
    optional_splits: ClassVar[Mapping[str, str]] = {}
    """Split lists that are not part of the archive, with where to get them."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        split: str | Sequence[str],
        tasks: Sequence[str | TaskSpec] | None,
        transform: Transform | None,
        check_files: bool,
    ) -> None:
        self.root = self._locate(root)
        self.splits = sorted([split] if isinstance(split, str) else split)
        if not self.splits:
            raise TsnError(f"no split given for {self.folder}; use e.g. 'train' or 'val'")
        names = None if tasks is None else [t.name if isinstance(t, TaskSpec) else t for t in tasks]
        self.tasks: tuple[TaskSpec, ...] = dataset_tasks(self.name, names)
        self.transform = transform
        self.ids: list[str] = [i for split_name in self.splits for i in read_id_list(self._split_list(split_name))]
        if check_files:
            self._check_files()

    # --------------------------------------------------------------------------------------------- to override
    def read_labels(self, image_id: str) -> dict[str, np.ndarray]:
        """The raw labels (float32, before transforms) of every enabled task for ``image_id``."""
        raise NotImplementedError

    def path(self, kind: str, image_id: str) -> Path:
        """Path of the file of ``kind`` (a key of :attr:`files`) for ``image_id``."""
        return self.root / self.files[kind].format(image_id)

    # --------------------------------------------------------------------------------------------- shared
    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.tasks)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self.ids[index]
        image = read_image(self.path("image", image_id))
        size = image.shape[:2]
        labels = self.read_labels(image_id)
        sample: Sample = {"image": image}
        sample.update({spec.name: fit_label(labels[spec.name], size, spec) for spec in self.tasks})
        sample["meta"] = {"id": image_id, "size": (int(size[0]), int(size[1])), "dataset": self.name}
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.splits}, "
                f"tasks={list(self.task_names)}, n={len(self)})")

    def _download_hint(self) -> str:
        return f"download it with `tsn download {self.name} --root DIR` or pass --data-root DIR"

    def _locate(self, root: str | os.PathLike[str] | None) -> Path:
        """``<root>/<folder>``, or ``root`` itself when it already is that folder."""
        base = data_root(root)
        for candidate in (base / self.folder, base):
            if (candidate / self.split_folder).is_dir():
                return candidate
        raise TsnError(f"{self.folder} not found in {base} (no {self.split_folder} folder); {self._download_hint()}")

    def _split_list(self, split: str) -> Path:
        path = self.root / self.split_folder / f"{split}.txt"
        if path.is_file():
            return path
        if split in self.optional_splits:
            raise TsnError(f"split list {path} is missing; {self.optional_splits[split]}")
        known = sorted(p.stem for p in (self.root / self.split_folder).glob("*.txt"))
        raise TsnError(f"split list {path} is missing (splits present: {', '.join(known) or 'none'}); "
                       f"use one of those, or if the dataset is incomplete {self._download_hint()}")

    def _check_files(self) -> None:
        """Fail early, with the first missing file named, if any file of the enabled tasks is absent."""
        kinds = {"image"}.union(*(self.sources.get(spec.name, (spec.name,)) for spec in self.tasks))
        wanted = [self.path(kind, image_id) for kind in sorted(kinds) for image_id in self.ids]
        missing = _missing(wanted)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise TsnError(f"{self.folder} is incomplete: missing {missing[0]}{more}; {self._download_hint()}")
