"""NYUv2-13 and Cityscapes-7 in the preprocessed ``.npy`` layout MTAN released and LibMTL reads.

Layout (both datasets; files numbered from 0 without gaps, the count taken from ``image/``)::

    <root>/<folder>/<split>/image/<i>.npy    float32 H x W x 3, RGB in [0, 1]
    <root>/<folder>/<split>/label/<i>.npy    float32 H x W, class index, -1 = ignore
    <root>/<folder>/<split>/depth/<i>.npy    float32 H x W x 1, 0 = no measurement
    <root>/<folder>/<split>/normal/<i>.npy   float32 H x W x 3, unit vectors, all-zero = invalid (NYUv2 only)

Samples follow the shared contract, except that the image keeps LibMTL's float precision: float32 ``255 x``
(not rounded to 8 bits; the transforms' ``ToTensor`` divides by 255 again, which returns ``x`` within one float32
rounding), ``-1`` labels become the project's ignore index, depth and normals keep their zeros (the transforms mark
them ignored). ``augment=True`` applies LibMTL's optional NYUv2 augmentation (off by default, as MTAN trained):
a random scale crop with scale 1.0, 1.2 or 1.5 (image and normals bilinear with aligned corners, label and depth
nearest, depth divided by the scale), then a horizontal flip with probability 0.5 that negates the normals' x.
Its draws come from torch's generator, which the DataLoader seeds differently in every worker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tsn.data.paths import data_root
from tsn.data.readers import Sample, Transform
from tsn.dataset_catalog import DatasetSpec, get_dataset
from tsn.errors import TsnError
from tsn.tasks import IGNORE_INDEX, TaskSpec, get_task

__all__ = ["MtanDataset", "NYUv2", "Cityscapes", "AUGMENT_SCALES"]

AUGMENT_SCALES = (1.0, 1.2, 1.5)
"""Zoom factors of LibMTL's random scale crop."""

# The layout's own per-task rules, as tables (MTAN stores class maps without a channel axis; LibMTL resizes normals
# bilinearly and the others by nearest neighbour, and divides depth by the zoom of a scale crop).
_CLASS_MAP_TASKS = frozenset({"semseg"})
_BILINEAR_TASKS = frozenset({"normals"})
_ZOOM_DIVIDED_TASKS = frozenset({"depth"})

_NUMBERED = re.compile(r"(0|[1-9][0-9]*)\.npy")


class MtanDataset(Dataset):
    """A dataset in the MTAN layout; subclasses name the registered dataset and its folder."""

    name: ClassVar[str]
    """Key of the dataset registry (also ``meta["dataset"]``)."""
    folder: ClassVar[str]
    """Folder name under the data root, e.g. ``nyuv2``."""
    files: ClassVar[Mapping[str, str]] = {"semseg": "label", "depth": "depth", "normals": "normal"}
    """Task -> the sub-folder of a split holding its labels."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str | Sequence[str] = "val",
        tasks: Sequence[str | TaskSpec] | None = None,
        transform: Transform | None = None,
        augment: bool = False,
    ) -> None:
        self.spec: DatasetSpec = get_dataset(self.name)
        names = None if tasks is None else [t.name if isinstance(t, TaskSpec) else t for t in tasks]
        self.tasks: tuple[TaskSpec, ...] = self.spec.task_specs(names)
        self.splits = [split] if isinstance(split, str) else list(split)
        if not self.splits:
            raise TsnError(f"no split given for {self.name}; use one of: {', '.join(self.spec.splits)}")
        for name in self.splits:
            if name not in self.spec.splits:
                raise TsnError(f"{self.name} has no split {name!r}; use one of: {', '.join(self.spec.splits)}")
        self.root = self._locate(root)
        self.transform = transform
        self.augment = bool(augment)
        self.items: list[tuple[str, int]] = [(name, i) for name in self.splits for i in range(self._count(name))]

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.tasks)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.splits}, "
                f"tasks={list(self.task_names)}, n={len(self)})")

    def path(self, kind: str, split: str, index: int) -> Path:
        """The file of ``kind`` (``image`` or a task) of image ``index`` of ``split``."""
        return self.root / split / ("image" if kind == "image" else self.files[kind]) / f"{index}.npy"

    def __getitem__(self, index: int) -> Sample:
        split, number = self.items[index]
        image = self._load(self.path("image", split, number), 3)
        labels = {spec.name: self._load(self.path(spec.name, split, number), None if spec.name in _CLASS_MAP_TASKS
                                        else spec.channels) for spec in self.tasks}
        for name, label in labels.items():
            if label.shape[:2] != image.shape[:2]:
                raise TsnError(f"{self.path(name, split, number)} is {label.shape[0]} x {label.shape[1]} but its "
                               f"image is {image.shape[0]} x {image.shape[1]}; the dataset is corrupt")
        if self.augment:
            image, labels = _augment(image, labels)
        # float32 255 x, not rounded to uint8: LibMTL feeds the float image to the network (docs/protocols.md).
        sample: Sample = {"image": (np.asarray(image, dtype=np.float32) * np.float32(255.0)).astype(np.float32)}
        for spec in self.tasks:
            label = labels[spec.name]
            if spec.name in _CLASS_MAP_TASKS:
                label = self._classes(label, spec, self.path(spec.name, split, number))
            sample[spec.name] = label[..., 0] if label.ndim == 3 and label.shape[-1] == 1 else label
        height, width = image.shape[:2]
        sample["meta"] = {"id": f"{split}_{number}", "size": (int(height), int(width)), "dataset": self.name}
        return self.transform(sample) if self.transform is not None else sample

    # ------------------------------------------------------------------------------------------------ helpers
    def _hint(self) -> str:
        return self.spec.download_hint or f"pass the folder holding {self.folder} as --data-root"

    def _locate(self, root: str | os.PathLike[str] | None) -> Path:
        """``<root>/<folder>``, or ``root`` itself when it already holds the split folders."""
        base = data_root(root)
        for candidate in (base / self.folder, base):
            if (candidate / self.splits[0] / "image").is_dir():
                return candidate
        raise TsnError(f"{self.folder} not found in {base} (no {self.splits[0]}/image folder); {self._hint()}")

    def _count(self, split: str) -> int:
        """Number of images of ``split``, checking that every task folder holds the same numbered files."""
        folder = self.root / split / "image"
        if not folder.is_dir():
            raise TsnError(f"{folder} is missing; {self._hint()}")
        numbers = sorted(int(m.group(1)) for m in map(_NUMBERED.fullmatch, os.listdir(folder)) if m)
        if not numbers:
            raise TsnError(f"{folder} holds no numbered .npy image (0.npy, 1.npy, ...); {self._hint()}")
        if numbers[-1] != len(numbers) - 1:
            gap = next(i for i, n in enumerate(numbers) if i != n)
            raise TsnError(f"{folder} has {len(numbers)} images but no {gap}.npy; files must be numbered from 0 "
                           "without gaps")
        for spec in self.tasks:
            task_folder = self.root / split / self.files[spec.name]
            present = set(os.listdir(task_folder)) if task_folder.is_dir() else set()
            absent = [n for n in numbers if f"{n}.npy" not in present]
            if absent:
                raise TsnError(f"{self.folder} is incomplete: missing {task_folder / f'{absent[0]}.npy'}"
                               f"{f' (and {len(absent) - 1} more)' if len(absent) > 1 else ''}; {self._hint()}")
        return len(numbers)

    @staticmethod
    def _load(path: Path, channels: int | None) -> np.ndarray:
        """A float32 array ``H x W x channels`` (``H x W`` when ``channels`` is None), or a one-line error."""
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise TsnError(f"missing file {path}; the dataset is incomplete") from None
        except (OSError, ValueError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise TsnError(f"cannot read {path} ({reason}); the file is corrupt") from None
        expected = "H x W" if channels is None else f"H x W x {channels}"
        shape_ok = array.ndim == 2 if channels is None else array.ndim == 3 and array.shape[-1] == channels
        if not shape_ok or not np.issubdtype(array.dtype, np.floating):
            raise TsnError(f"{path} is a {array.dtype} array of shape {array.shape}; expected float32 {expected}")
        return array.astype(np.float32, copy=False)

    @staticmethod
    def _classes(label: np.ndarray, spec: TaskSpec, path: Path) -> np.ndarray:
        """MTAN class indices with -1 (ignore) -> :data:`IGNORE_INDEX`; any other value outside the classes is
        refused (it would be a dataset with another class count)."""
        ignored = label < 0
        kept = label[~ignored]
        if kept.size and (kept.max() >= spec.channels or np.any(kept != np.floor(kept))):
            bad = kept[(kept >= spec.channels) | (kept != np.floor(kept))][0]
            raise TsnError(f"{path} holds class {bad:g}, but {spec.name} has {spec.channels} classes (0..."
                           f"{spec.channels - 1}, -1 = ignore); is this the right dataset?")
        return np.where(ignored, np.float32(IGNORE_INDEX), label).astype(np.float32)


def _resized(array: np.ndarray, rows: slice, cols: slice, size: tuple[int, int], mode: str) -> np.ndarray:
    """``array[rows, cols]`` (``H x W`` or ``H x W x C``) resized to ``size`` as LibMTL resizes it."""
    crop = torch.from_numpy(np.ascontiguousarray(array[rows, cols]))
    planes = crop[None, None] if crop.ndim == 2 else crop.permute(2, 0, 1)[None]
    options: dict[str, Any] = {"align_corners": True} if mode == "bilinear" else {}
    out = F.interpolate(planes, size=size, mode=mode, **options)[0]
    return (out[0] if crop.ndim == 2 else out.permute(1, 2, 0)).numpy()


def _augment(image: np.ndarray, labels: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """LibMTL's random scale crop and horizontal flip (see the module docstring)."""
    height, width = image.shape[:2]
    scale = AUGMENT_SCALES[int(torch.randint(len(AUGMENT_SCALES), ()))]
    h, w = int(height / scale), int(width / scale)
    top, left = int(torch.randint(height - h + 1, ())), int(torch.randint(width - w + 1, ()))
    rows, cols, size = slice(top, top + h), slice(left, left + w), (height, width)
    image = _resized(image, rows, cols, size, "bilinear")
    out = {}
    for name, label in labels.items():
        out[name] = _resized(label, rows, cols, size, "bilinear" if name in _BILINEAR_TASKS else "nearest")
        if name in _ZOOM_DIVIDED_TASKS:
            out[name] = out[name] / scale
    if float(torch.rand(())) < 0.5:
        image = image[:, ::-1]
        out = {name: label[:, ::-1] for name, label in out.items()}
        for name, label in out.items():  # a horizontal flip negates the x component of vectors (normals)
            negate = get_task(name).flip_negate_channels
            if negate:
                label = label.copy()
                label[..., list(negate)] *= -1.0
                out[name] = label
    return np.ascontiguousarray(image), {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in out.items()}


class NYUv2(MtanDataset):
    """NYUv2-13 (``<root>/nyuv2``): semseg (13 classes), depth (metres), normals; 288 x 384; train 795, val 654.

    Args:
        root: the data root holding ``nyuv2`` (or that folder itself); default :func:`tsn.data.paths.data_root`.
        split: ``"train"``, ``"val"`` or both as a list.
        tasks: task names (aliases allowed) or specs; ``None`` = all three.
        transform: applied to each raw sample (see :func:`tsn.data.transforms.build_transforms`).
        augment: LibMTL's random scale crop and flip (off, as MTAN trained).
    """

    name = "nyuv2_13"
    folder = "nyuv2"


class Cityscapes(MtanDataset):
    """Cityscapes-7 (``<root>/cityscapes``): semseg (7 classes), depth (as MTAN stored it); 128 x 256; train 2,975,
    val 500. Arguments as :class:`NYUv2`."""

    name = "cityscapes_7"
    folder = "cityscapes"
