"""The task registry: every dense-prediction task is described exactly once, here.

Models read ``channels``; losses read ``loss``/``loss_weight``/``loss_options``; metrics read ``metric`` and
``higher_is_better``; loaders and transforms read ``label_interpolation``, ``flip_negate_channels`` and
``ignore_index``; commands read ``postprocess``, ``to_saved`` and ``render``. Nothing else in the project
branches on a task's name.

The output *kind* of a task (``classes``, ``binary``, ``unit_vector``, ``scalar``) decides how a raw network
output becomes a prediction (argmax / sigmoid / L2-normalise / identity), how it is saved (the authors' PNG
conventions) and how it is drawn.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tsn.errors import TsnError

__all__ = [
    "IGNORE_INDEX",
    "OutputKind",
    "TaskSpec",
    "TASKS",
    "DATASET_TASKS",
    "PAPER_TASK_ORDER",
    "get_task",
    "resolve_tasks",
    "dataset_tasks",
    "color_palette",
]

IGNORE_INDEX = 255
"""Ignore value of every label map (as in ASTMT / TSNs)."""

OutputKind = Literal["classes", "binary", "unit_vector", "scalar"]

Interpolation = Literal["nearest", "bilinear", "bicubic"]


ROW_CHUNK_ELEMENTS = 1 << 20
"""Values of a full-size map that the per-pixel output code (``to_saved``, ``render``) converts at once. Working
through a map in row bands of about this many values bounds the float temporaries to a few MB whatever the image
size (a 10000 x 10000 map would otherwise take several GB of float64 copies); every value goes through the same
formula, so the result is the same bit for bit."""

_FLOAT32_EXACT_INTEGERS = 1 << 24
"""Integers of magnitude up to this are exact in float32 (the nearest resize's former float detour)."""


def _row_bands(height: int, values_per_row: int) -> Iterator[slice]:
    """Consecutive row slices covering ``height`` rows, each of about :data:`ROW_CHUNK_ELEMENTS` values."""
    step = max(1, ROW_CHUNK_ELEMENTS // max(1, values_per_row))
    for start in range(0, height, step):
        yield slice(start, min(start + step, height))


def _nearest_sources(length: int, new_length: int, axis: int, device: torch.device) -> torch.Tensor:
    """The source index of every output position of a ``mode="nearest"`` resize along ``axis`` (2: height, 3:
    width) from ``length`` to ``new_length``, as ``F.interpolate`` picks it: found by resizing an index ramp with
    ``F.interpolate`` itself, so the choice (rounding of the scale, exact 2x shortcut) is PyTorch's own."""
    shape, new_shape = [1, 1, 1, 1], [1, 1]
    shape[axis], new_shape[axis - 2] = length, new_length
    ramp = torch.arange(length, dtype=torch.float32, device=device).view(shape)
    return F.interpolate(ramp, size=tuple(new_shape), mode="nearest").view(-1).long()


def _resize_class_indices(indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of ``(N, h, w)`` class indices to ``(N, *size)`` int64, equal to the former
    ``F.interpolate(indices[:, None].float(), size, mode="nearest")[:, 0].long()`` but without its full-size float32
    map: the rows and columns are gathered straight from the integer map. Inputs where the float32 detour could
    change a value (float maps, integers beyond 2**24) still take it."""
    exact = (
        indices.dim() == 3
        and indices.numel() > 0
        and not indices.is_floating_point()
        and not indices.is_complex()
        and max(indices.shape[-2:]) <= _FLOAT32_EXACT_INTEGERS
        and (
            indices.dtype == torch.bool
            or -_FLOAT32_EXACT_INTEGERS <= int(indices.min()) <= int(indices.max()) <= _FLOAT32_EXACT_INTEGERS
        )
    )
    if not exact:
        return F.interpolate(indices[:, None].float(), size=size, mode="nearest")[:, 0].long()
    (height, width), (new_height, new_width) = indices.shape[-2:], (int(size[0]), int(size[1]))
    rows = _nearest_sources(height, new_height, 2, indices.device)
    columns = _nearest_sources(width, new_width, 3, indices.device)
    if new_height * width <= height * new_width:  # the smaller intermediate first
        resized = indices.index_select(1, rows).index_select(2, columns)
    else:
        resized = indices.index_select(2, columns).index_select(1, rows)
    return resized.long()


def color_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved RGB), ``n x 3`` uint8; index 255 is drawn as white."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    if n > IGNORE_INDEX:
        palette[IGNORE_INDEX] = (255, 255, 255)
    return palette


@dataclass(frozen=True)
class TaskSpec:
    """Everything the project knows about one task."""

    name: str
    title: str
    channels: int
    output: OutputKind
    loss: str
    """Key of :data:`tsn.training.losses.LOSSES`."""
    loss_weight: float
    """The paper's weight of this task's loss (ASTMT / MTL-survey weights)."""
    metric: str
    """Headline metric key in the task's metric result (e.g. ``mIoU``, ``odsF``, ``mErr``)."""
    higher_is_better: bool
    table_scale: float
    """Factor from the metric's stored value to the paper's table units (100 for fractions such as mIoU, odsF)."""
    label_interpolation: Interpolation
    """Interpolation used when a label is resized (ASTMT config)."""
    prediction_interpolation: Interpolation
    """Interpolation used when a prediction is resized back to the original image size (ASTMT ``INFER``)."""
    loss_options: Mapping[str, float] = field(default_factory=dict)
    ignore_index: int = IGNORE_INDEX
    flip_negate_channels: tuple[int, ...] = ()
    """Channels whose sign flips under a horizontal flip (the x component of normals)."""
    empty_label_ignored: bool = False
    """An all-zero label map means "not annotated" and is ignored whole (PASCAL parts of images without persons)."""
    class_names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def with_channels(self, channels: int, class_names: Sequence[str] = ()) -> "TaskSpec":
        """The same task with a dataset-specific number of output channels (e.g. NYUD's 41 classes)."""
        return dataclasses.replace(self, channels=int(channels), class_names=tuple(class_names))

    # ---------------------------------------------------------------- raw output -> prediction
    def postprocess(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw network output ``(N, C, H, W)`` -> prediction.

        ``classes`` -> ``(N, H, W)`` int64 argmax; ``binary`` -> ``(N, 1, H, W)`` probability; ``unit_vector`` ->
        ``(N, C, H, W)`` L2-normalised; ``scalar`` -> unchanged.
        """
        if self.output == "classes":
            return raw.argmax(dim=1)
        if self.output == "binary":
            return torch.sigmoid(raw)
        if self.output == "unit_vector":
            return F.normalize(raw, p=2, dim=1)
        return raw

    def resize_prediction(self, pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resize a postprocessed prediction of one or more images to ``size = (H, W)``."""
        if tuple(pred.shape[-2:]) == tuple(size):
            return pred
        if self.output == "classes":
            return _resize_class_indices(pred, size)
        mode = self.prediction_interpolation
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        return F.interpolate(pred.float(), size=size, mode=mode, **kwargs)

    def to_saved(self, pred: np.ndarray) -> np.ndarray:
        """One image's postprocessed prediction (``H x W`` or ``C x H x W``) -> the array the authors save.

        ``classes`` -> uint8 class indices; ``binary`` -> uint8 ``255 * p`` (truncated, as the reference);
        ``unit_vector`` -> uint8 RGB ``(n + 1) * 255 / 2``; ``scalar`` -> float32 as is (saved as ``.mat``).
        """
        pred = np.asarray(pred)
        if self.output == "classes":
            return pred.astype(np.uint8)
        if self.output == "binary":
            probability = pred.reshape(pred.shape[-2:])
            saved = np.empty(probability.shape, dtype=np.uint8)
            for rows in _row_bands(probability.shape[0], probability.shape[1]):
                saved[rows] = np.clip(255.0 * probability[rows], 0, 255).astype(np.uint8)
            return saved
        if self.output == "unit_vector":
            vectors = pred.transpose(1, 2, 0)
            saved = np.empty(vectors.shape, dtype=np.uint8)
            for rows in _row_bands(vectors.shape[0], vectors.shape[1] * vectors.shape[2]):
                saved[rows] = np.clip((vectors[rows] + 1.0) * 255.0 / 2.0, 0, 255).astype(np.uint8)
            return saved
        return pred.reshape(pred.shape[-2:]).astype(np.float32)

    @property
    def saved_suffix(self) -> str:
        return ".mat" if self.output == "scalar" else ".png"

    def render(self, value: np.ndarray, *, is_label: bool = False) -> np.ndarray:
        """Draw a label or a postprocessed prediction as an ``H x W x 3`` uint8 picture.

        Ignored pixels (255 in a label) are drawn white for class maps and black elsewhere.
        """
        value = np.asarray(value)
        if self.output == "unit_vector":
            vectors = value.reshape((-1,) + value.shape[-2:]).transpose(1, 2, 0)
            picture = np.empty(vectors.shape, dtype=np.uint8)
            for rows in _row_bands(vectors.shape[0], vectors.shape[1] * vectors.shape[2]):
                vec = np.asarray(vectors[rows], dtype=np.float64)
                invalid = np.all(vec == self.ignore_index, axis=-1) | np.all(vec == 0, axis=-1)
                band = np.clip((vec + 1.0) * 127.5, 0, 255).astype(np.uint8)
                band[invalid] = 0
                picture[rows] = band
            return picture
        plane = value.reshape(value.shape[-2:])
        picture = np.empty(plane.shape + (3,), dtype=np.uint8)
        bands = list(_row_bands(plane.shape[0], plane.shape[1]))
        if self.output == "classes":
            palette = color_palette()
            for rows in bands:
                index = np.asarray(plane[rows], dtype=np.float64).astype(np.int64)
                picture[rows] = palette[np.clip(index, 0, 255)]
            return picture
        low, high = 0.0, 1.0
        if self.output == "scalar":  # stretched by the range of the valid (positive, not ignored) values
            ranges = [self._valid_range(np.asarray(plane[rows], dtype=np.float64), is_label) for rows in bands]
            ranges = [r for r in ranges if r is not None]
            if ranges:
                low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        for rows in bands:
            grey = np.asarray(plane[rows], dtype=np.float64)
            invalid = grey == self.ignore_index if is_label else np.zeros(grey.shape, dtype=bool)
            if self.output == "scalar":
                grey = (grey - low) / max(high - low, 1e-8)
            grey = np.where(invalid, 0.0, np.clip(grey, 0.0, 1.0))
            picture[rows] = (grey * 255).astype(np.uint8)[..., None]
        return picture

    def _valid_range(self, grey: np.ndarray, is_label: bool) -> tuple[float, float] | None:
        """``(min, max)`` of the positive values of ``grey`` that are not ignored, None when there are none."""
        valid = grey > 0
        if is_label:
            valid &= grey != self.ignore_index
        if not valid.any():
            return None
        chosen = grey[valid]
        return float(chosen.min()), float(chosen.max())


_VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_PART_CLASSES = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="semseg", title="Semantic segmentation", channels=21, output="classes",
            loss="cross_entropy", loss_weight=1.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
            label_interpolation="nearest", prediction_interpolation="nearest",
            class_names=_VOC_CLASSES, aliases=("seg", "segmentation", "semantic"),
        ),
        TaskSpec(
            name="human_parts", title="Human parts", channels=7, output="classes",
            loss="cross_entropy", loss_weight=2.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
            label_interpolation="nearest", prediction_interpolation="nearest",
            class_names=_PART_CLASSES, aliases=("parts", "human_parts_seg"), empty_label_ignored=True,
        ),
        TaskSpec(
            name="edges", title="Edge detection", channels=1, output="binary",
            loss="balanced_bce", loss_weight=50.0, loss_options={"pos_weight": 0.95},
            metric="odsF", higher_is_better=True, table_scale=100.0,
            label_interpolation="nearest", prediction_interpolation="bilinear", aliases=("edge", "boundaries"),
        ),
        TaskSpec(
            name="normals", title="Surface normals", channels=3, output="unit_vector",
            loss="normals_l1", loss_weight=10.0, metric="mErr", higher_is_better=False, table_scale=1.0,
            label_interpolation="bicubic", prediction_interpolation="bilinear",
            flip_negate_channels=(0,), aliases=("normal", "surface_normals"),
        ),
        TaskSpec(
            name="saliency", title="Saliency", channels=1, output="binary",
            loss="balanced_bce", loss_weight=5.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
            label_interpolation="nearest", prediction_interpolation="bilinear", aliases=("sal",),
        ),
        TaskSpec(
            name="depth", title="Depth", channels=1, output="scalar",
            loss="depth_l1", loss_weight=1.0, metric="rmse", higher_is_better=False, table_scale=1.0,
            label_interpolation="bilinear", prediction_interpolation="bilinear",
        ),
    )
}
"""Every known task by canonical name, with PASCAL-Context's channel counts."""

PAPER_TASK_ORDER: tuple[str, ...] = ("semseg", "human_parts", "edges", "normals", "saliency")
"""The authors' task order; position ``i`` owns block ``i`` of the task code."""

DATASET_TASKS: dict[str, dict[str, int]] = {
    "pascal_context": {"semseg": 21, "human_parts": 7, "edges": 1, "normals": 3, "saliency": 1},
    # ASTMT convention: 41 classes, class 0 is trained and evaluated as a real class.
    "nyud": {"semseg": 41, "depth": 1, "normals": 3, "edges": 1},
    # background, ground, sphere, box, cylinder, cone/capsule, figure (see tsn.data.synthetic)
    "synthetic": {"semseg": 7, "human_parts": 7, "edges": 1, "normals": 3, "saliency": 1, "depth": 1},
}
"""The tasks of each dataset, in the order a model built for that dataset uses, with their channel counts."""

_ALIASES = {alias: spec.name for spec in TASKS.values() for alias in (spec.name, *spec.aliases)}


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name`` (canonical name or alias such as ``seg``, ``parts``, ``sal``)."""
    try:
        return TASKS[_ALIASES[name.strip().lower()]]
    except KeyError:
        raise TsnError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def resolve_tasks(names: Sequence[str], channels: Mapping[str, int] | None = None) -> tuple[TaskSpec, ...]:
    """Task specs for ``names`` (aliases allowed, duplicates refused), with optional channel overrides."""
    specs: list[TaskSpec] = []
    for name in names:
        spec = get_task(name)
        if any(s.name == spec.name for s in specs):
            raise TsnError(f"task {spec.name!r} is listed twice; list each task once")
        if channels and spec.name in channels and channels[spec.name] != spec.channels:
            names_kept = spec.class_names if len(spec.class_names) == channels[spec.name] else ()
            spec = spec.with_channels(channels[spec.name], names_kept)
        specs.append(spec)
    if not specs:
        raise TsnError("no task given; name at least one of: " + ", ".join(TASKS))
    return tuple(specs)


def dataset_tasks(dataset: str, names: Sequence[str] | None = None) -> tuple[TaskSpec, ...]:
    """The task specs of ``dataset`` (all of them, or the subset ``names``) with the dataset's channels."""
    key = dataset.strip().lower().replace("-", "_")
    if key not in DATASET_TASKS:
        raise TsnError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASET_TASKS)}")
    available = DATASET_TASKS[key]
    chosen = list(available) if names is None or list(names) in (["all"], []) else [get_task(n).name for n in names]
    missing = [n for n in chosen if n not in available]
    if missing:
        raise TsnError(f"dataset {dataset!r} has no task {missing[0]!r}; its tasks: {', '.join(available)}")
    return resolve_tasks(chosen, available)
