"""The embedded benchmark: procedural multi-task scenes (see ``synthetic-benchmark.md``).

A scene is a small 3D world (ground, optional back wall, 1-5 objects among sphere, box, cylinder, cone or
capsule and an articulated figure; :mod:`tsn.data.synthetic_scene`) ray-cast analytically by
:mod:`tsn.data.synthetic_render`. The ``synthetic`` dataset has six labels, exact and in the real datasets'
conventions:

* ``semseg``: class ids of :data:`SEMSEG_CLASSES` (the back wall counts as background, like the sky);
* ``human_parts``: ids of :data:`PART_CLASSES` on figure pixels, all 0 when no figure is visible;
* ``edges``: 1 on one-pixel-thin instance boundaries (see :func:`~tsn.data.synthetic_labels.instance_edges`);
* ``normals``: camera-space unit normals (x right, y up, z towards the camera), zero vector on the sky;
* ``saliency``: 1 on object pixels (not ground, wall or sky);
* ``depth``: metres along the optical axis, 0 on the sky.

The ``synthetic_full`` dataset (:class:`SyntheticScenesFull`) is the same scenes with seven more exact labels
(:data:`~tsn.data.synthetic_render.EXTRA_LABELS`): ``albedo``, ``shading``, ``unlit``, ``material``,
``contours``, ``occlusion`` and ``boundary_distance``. The extra labels are rendered only for that dataset, so
``synthetic`` (the demo's) keeps its samples, its speed and its cache files.

Every sample is a pure function of ``(seed, split, index, size)``. A split is rendered once, in parallel, and
cached compressed in ``cache_dir("synthetic")``; later runs load it in well under a second.
"""

from __future__ import annotations

import contextlib
import os
import sys
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from tsn.data.paths import cache_dir
from tsn.data.synthetic_render import EXTRA_LABELS, Rendering, render
from tsn.data.synthetic_scene import sample_scene
from tsn.dataset_catalog import dataset_tasks
from tsn.errors import TsnError
from tsn.utils.io import atomic_write
from tsn.utils.processes import process_pool
from tsn.utils.progress import progress_enabled

__all__ = [
    "SEMSEG_CLASSES",
    "PART_CLASSES",
    "SPLITS",
    "DEFAULT_LENGTHS",
    "GENERATOR_VERSION",
    "scene_rng",
    "render_scene",
    "SyntheticScenes",
    "SyntheticScenesFull",
]

SEMSEG_CLASSES = ("background", "ground", "sphere", "box", "cylinder", "cone_or_capsule", "figure")
PART_CLASSES = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")

DEFAULT_LENGTHS = {"train": 2000, "val": 300, "test": 300}
"""Images per split. At 64 px, 2000 training scenes render and are cached in ~5 s on two cores (then load in
under 1 s, 184 MB in memory) and let the demo train several epochs within its 5-minute budget; 300 evaluation
scenes keep mIoU estimates within about a point while an evaluation pass stays a few seconds."""
SPLITS = tuple(DEFAULT_LENGTHS)

GENERATOR_VERSION = 1
"""Part of the cache key: bump it whenever a change to the generator changes any sample."""


def _stored_dtypes(dataset: str) -> dict[str, type]:
    """On-disk dtype per array of ``dataset``'s cache, from the output kind: class ids and {0, 1} maps fit uint8
    exactly; normals, depth and the other real-valued maps stay float32."""
    return {"image": np.uint8} | {spec.name: spec.kind.stored_dtype for spec in dataset_tasks(dataset)}

_CHUNK = 64
"""Scenes per worker task: large enough to amortise inter-process transfer, small enough for smooth progress."""


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise TsnError(f"unknown synthetic split {split!r}; use one of: {', '.join(SPLITS)}")


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of scene ``index`` of ``split``, derived with ``SeedSequence`` from all three.

    The split enters as its CRC-32 (stable across runs, unlike ``hash``), so splits never share a scene.
    """
    _check_split(split)
    if seed < 0 or index < 0:
        raise TsnError(f"synthetic seed and index must be >= 0 (got seed={seed}, index={index})")
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)]))


def render_scene(seed: int, split: str, index: int, size: int, tasks: Sequence[str] | None = None,
                 dataset: str = "synthetic") -> dict[str, Any]:
    """Sample dict of scene ``index`` of ``split`` at ``size x size``: image, the labels of ``tasks`` (default:
    every task of ``dataset``, ``synthetic`` or ``synthetic_full``) and meta. Only the labels asked are rendered.

    Pure and deterministic: the same arguments give byte-identical arrays on every run.
    """
    if size < 2:
        raise TsnError(f"synthetic image size must be at least 2 pixels (got {size})")
    names = [spec.name for spec in dataset_tasks(dataset, tasks)]
    rendering = render(sample_scene(scene_rng(seed, split, index)), size, [n for n in names if n in EXTRA_LABELS])
    sample: dict[str, Any] = {"image": rendering.image}
    sample.update({name: _label(rendering, name) for name in names})
    sample["meta"] = _meta(split, index, size, dataset)
    return sample


def _label(rendering: Rendering, name: str) -> np.ndarray:
    return rendering.extras[name] if name in EXTRA_LABELS else getattr(rendering, name)


def _meta(split: str, index: int, size: int, dataset: str) -> dict[str, Any]:
    return {"id": f"{split}_{index:06d}", "size": (size, size), "dataset": dataset}


# ------------------------------------------------------------------------------------------------ split cache
def _render_range(seed: int, split: str, size: int, start: int, stop: int,
                  dataset: str = "synthetic") -> dict[str, np.ndarray]:
    """Scenes ``start..stop-1`` of ``dataset`` stacked per key in their on-disk dtypes (a worker's unit of work)."""
    samples = [render_scene(seed, split, index, size, dataset=dataset) for index in range(start, stop)]
    return {key: np.stack([s[key] for s in samples]).astype(dtype, copy=False)
            for key, dtype in _stored_dtypes(dataset).items()}


def _worker_count(requested: int | None, chunks: int) -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(requested or available, chunks))


def _render_split(seed: int, split: str, size: int, length: int, workers: int | None,
                  dataset: str = "synthetic") -> dict[str, np.ndarray]:
    """Render a whole split, chunk by chunk, on a process pool when there is more than one chunk and one core.

    A tqdm bar appears when rendering takes more than a second.
    """
    starts = range(0, length, _CHUNK)
    stops = [min(start + _CHUNK, length) for start in starts]
    n_workers = _worker_count(workers, len(starts))
    parts: list[dict[str, np.ndarray]] = []
    with contextlib.ExitStack() as stack:
        mapper = stack.enter_context(process_pool(n_workers)).map if n_workers > 1 else map  # workers end with us
        progress = stack.enter_context(tqdm(total=length, desc=f"{dataset} {split} {size}px", unit="img",
                                            delay=1.0, file=sys.stderr, disable=not progress_enabled()))
        n = len(starts)
        for part in mapper(_render_range, [seed] * n, [split] * n, [size] * n, starts, stops, [dataset] * n):
            parts.append(part)
            progress.update(len(part["image"]))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path, "wb") as handle:
        # numpy's stub types **kwds next to the keyword allow_pickle: bool; these keys are array names, never that.
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]


def _load_arrays(path: Path, length: int, size: int, dataset: str = "synthetic") -> dict[str, np.ndarray] | None:
    """The cached split at ``path``, or None when it is missing, unreadable or not of ``dataset``'s layout."""
    if not path.is_file():
        return None
    dtypes = _stored_dtypes(dataset)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in dtypes}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    for key, array in arrays.items():
        if array.dtype != dtypes[key] or array.shape[:3] != (length, size, size):
            return None
    return arrays


# ------------------------------------------------------------------------------------------------ dataset
class SyntheticScenes(torch.utils.data.Dataset):
    """The procedural multi-task scenes as a map-style dataset returning the shared sample dict.

    Args:
        split: ``train``, ``val`` or ``test`` (disjoint scenes).
        size: image side in pixels, a multiple of 32.
        length: number of scenes; default :data:`DEFAULT_LENGTHS` of the split.
        seed: dataset seed; scene ``i`` depends only on ``(seed, split, i, size)``.
        tasks: task names (aliases allowed) to include; None = all six (all thirteen for
            :class:`SyntheticScenesFull`).
        transform: callable applied to each sample dict.
        cache: render the split once and keep it in a compressed file (loaded into memory); if False, every
            ``__getitem__`` renders its scene and only the labels of ``tasks`` (no disk, little memory, ~4 ms per
            64 px scene).
        cache_root: folder for the cache file; default ``cache_dir("synthetic")``.
        workers: processes rendering a split that is not cached yet; default: every available core.
    """

    dataset: ClassVar[str] = "synthetic"
    """The registered dataset this class serves: it decides the labels, the cache file and ``meta["dataset"]``."""

    def __init__(
        self,
        split: str = "train",
        size: int = 64,
        length: int | None = None,
        seed: int = 0,
        tasks: Sequence[str] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        cache: bool = True,
        cache_root: str | os.PathLike[str] | None = None,
        workers: int | None = None,
    ) -> None:
        _check_split(split)
        if size <= 0 or size % 32:
            raise TsnError(f"synthetic image size must be a positive multiple of 32 (got {size}); try 64 or 128")
        length = DEFAULT_LENGTHS[split] if length is None else length
        if length <= 0:
            raise TsnError(f"synthetic split length must be positive (got {length})")
        if seed < 0:
            raise TsnError(f"synthetic seed must be >= 0 (got {seed})")
        self.split, self.size, self.length, self.seed = split, size, length, seed
        self.tasks = tuple(spec.name for spec in dataset_tasks(self.dataset, tasks))
        self.transform = transform
        self.cache_path: Path | None = None
        self._arrays: dict[str, np.ndarray] | None = None
        if cache:
            folder = Path(cache_root).expanduser() if cache_root is not None else cache_dir("synthetic")
            name = f"{self.dataset}-v{GENERATOR_VERSION}-seed{seed}-{split}-{size}px-n{length}.npz"
            self.cache_path = folder / name
            self._arrays = self._load_or_render(workers)

    def _load_or_render(self, workers: int | None) -> dict[str, np.ndarray]:
        assert self.cache_path is not None
        arrays = _load_arrays(self.cache_path, self.length, self.size, self.dataset)
        if arrays is None:
            arrays = _render_split(self.seed, self.split, self.size, self.length, workers, self.dataset)
            try:
                _save_arrays(self.cache_path, arrays)
            except OSError as error:
                raise TsnError(f"cannot write the synthetic cache {self.cache_path} ({error.strerror}); set "
                               "$TSN_CACHE_DIR to a writable folder or pass cache=False") from None
        return arrays

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a synthetic split of {self.length} scenes")
        if self._arrays is None:
            sample = render_scene(self.seed, self.split, index, self.size, self.tasks, self.dataset)
        else:
            # Copies (the float32 conversion is one), so that in-place transforms cannot alter the cache.
            sample = {"image": self._arrays["image"][index].copy()}
            sample.update({name: self._arrays[name][index].astype(np.float32) for name in self.tasks})
            sample["meta"] = _meta(self.split, index, self.size, self.dataset)
        return self.transform(sample) if self.transform is not None else sample


class SyntheticScenesFull(SyntheticScenes):
    """The same scenes with all thirteen labels: the six of ``synthetic`` and
    :data:`~tsn.data.synthetic_render.EXTRA_LABELS` (the ``synthetic_full`` dataset; arguments as
    :class:`SyntheticScenes`). Its cache is a file of its own, so the six-task cache stays as it is."""

    dataset: ClassVar[str] = "synthetic_full"
