"""The task registry: every dense-prediction task is described exactly once, here.

Models read ``channels``; losses read ``loss``/``loss_weight``/``loss_options``; metrics read ``metric``,
``metric_options`` and ``higher_is_better``; loaders and transforms read ``label_interpolation``,
``flip_negate_channels`` and ``ignore_index``; commands read ``postprocess``, ``to_saved`` and ``render``. Nothing
else in the project branches on a task's name.

The output *kind* of a task (:mod:`tsn.kinds`: ``classes``, ``binary``, ``unit_vector``, ``scalar``) decides how
a raw network output becomes a prediction (argmax / sigmoid / L2-normalise / identity), how it is saved (the
authors' PNG conventions), read back, drawn and scored; a :class:`TaskSpec` delegates all of that to its kind.
User code adds a task with :func:`register_task`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tsn.errors import TsnError
from tsn.kinds import (
    BINARY,
    CLASSES,
    INTERPOLATIONS,
    SCALAR,
    UNIT_VECTOR,
    Interpolation,
    OutputKind,
    color_palette,
    get_kind,
)
from tsn.utils.constants import IGNORE_INDEX
from tsn.utils.registry import Registry

if TYPE_CHECKING:
    import torch

    from tsn.metrics.base import TaskMetric

__all__ = [
    "IGNORE_INDEX",
    "OutputKind",
    "TaskSpec",
    "TASKS",
    "PAPER_TASK_ORDER",
    "get_task",
    "resolve_tasks",
    "register_task",
    "color_palette",
]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the project knows about one task."""

    name: str
    title: str
    channels: int
    kind: OutputKind
    """The task's output kind (:mod:`tsn.kinds`); its name (``"classes"``...) is accepted and turned into it."""
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
    metric_options: Mapping[str, Any] = field(default_factory=dict)
    """The task's own protocol choices for its metric (keywords of its builder in :mod:`tsn.metrics`)."""
    ignore_index: int = IGNORE_INDEX
    flip_negate_channels: tuple[int, ...] = ()
    """Channels whose sign flips under a horizontal flip (the x component of normals)."""
    empty_label_ignored: bool = False
    """An all-zero label map means "not annotated" and is ignored whole (PASCAL parts of images without persons)."""
    class_names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", get_kind(self.kind))

    @property
    def output(self) -> str:
        """The name of the output kind, as files store it (checkpoints, ONNX metadata)."""
        return self.kind.name

    def with_channels(self, channels: int, class_names: Sequence[str] = ()) -> TaskSpec:
        """The same task with a dataset-specific number of output channels (e.g. NYUD's 41 classes)."""
        return dataclasses.replace(self, channels=int(channels), class_names=tuple(class_names))

    # ---------------------------------------------------------------- what the kind decides
    def postprocess(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw network output ``(N, C, H, W)`` -> prediction.

        ``classes`` -> ``(N, H, W)`` int64 argmax; ``binary`` -> ``(N, 1, H, W)`` probability; ``unit_vector`` ->
        ``(N, C, H, W)`` L2-normalised; ``scalar`` -> unchanged.
        """
        return self.kind.postprocess(raw)

    def resize_prediction(self, pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resize a postprocessed prediction of one or more images to ``size = (H, W)``."""
        return self.kind.resize_prediction(pred, size, self.prediction_interpolation)

    def to_saved(self, pred: np.ndarray) -> np.ndarray:
        """One image's postprocessed prediction (``H x W`` or ``C x H x W``) -> the array the authors save.

        ``classes`` -> uint8 class indices; ``binary`` -> uint8 ``255 * p`` (truncated, as the reference);
        ``unit_vector`` -> uint8 RGB ``(n + 1) * 255 / 2``; ``scalar`` -> float32 as is (saved as ``.mat``).
        """
        return self.kind.to_saved(pred)

    def read_saved(self, saved: np.ndarray) -> np.ndarray:
        """A saved prediction (:meth:`to_saved`) as the reference evaluators read it back from its file."""
        return self.kind.read_saved(saved)

    @property
    def saved_suffix(self) -> str:
        return self.kind.saved_suffix

    def render(self, value: np.ndarray, *, is_label: bool = False) -> np.ndarray:
        """Draw a label or a postprocessed prediction as an ``H x W x 3`` uint8 picture.

        Ignored pixels (255 in a label) are drawn white for class maps and black elsewhere.
        """
        return self.kind.render(value, is_label=is_label, ignore_index=self.ignore_index)

    def constant_output(self, labels: torch.Tensor) -> tuple[torch.Tensor, str]:
        """The raw output of the trivial predictor of ``labels`` (transformed, ``(N, C, H, W)``), and what it
        predicts in words (majority class, prior probability, mean normal, mean value)."""
        return self.kind.constant_output(labels, self.channels, self.ignore_index)

    def make_metric(self, **options: Any) -> TaskMetric:
        """A fresh metric of this task (options: :func:`tsn.metrics.build_metric`)."""
        return self.kind.make_metric(self, **options)


_VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_PART_CLASSES = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")


def _task_key(name: str) -> str:
    """How a typed task name is matched: ``" Seg"`` means ``seg``."""
    return name.strip().lower()


TASKS: Registry[TaskSpec] = Registry(
    "task", "register one with tsn.register_task in a plugin: tsn --plugin MODULE", normalize=_task_key
)
"""Every known task by canonical name, with PASCAL-Context's channel counts; ``TASKS.aliases`` maps each alias
(``seg``, ``parts``...) to its task."""

_BUILTIN_TASKS = (
    TaskSpec(
        name="semseg", title="Semantic segmentation", channels=21, kind=CLASSES,
        loss="cross_entropy", loss_weight=1.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
        label_interpolation="nearest", prediction_interpolation="nearest",
        class_names=_VOC_CLASSES, aliases=("seg", "segmentation", "semantic"),
    ),
    TaskSpec(
        name="human_parts", title="Human parts", channels=7, kind=CLASSES,
        loss="cross_entropy", loss_weight=2.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
        label_interpolation="nearest", prediction_interpolation="nearest",
        class_names=_PART_CLASSES, aliases=("parts", "human_parts_seg"), empty_label_ignored=True,
        # The reference parts evaluator skips images whose label is all background or all ignored.
        metric_options={"skip_uniform_labels": True},
    ),
    TaskSpec(
        name="edges", title="Edge detection", channels=1, kind=BINARY,
        loss="balanced_bce", loss_weight=50.0, loss_options={"pos_weight": 0.95},
        metric="odsF", higher_is_better=True, table_scale=100.0,
        label_interpolation="nearest", prediction_interpolation="bilinear", aliases=("edge", "boundaries"),
    ),
    TaskSpec(
        name="normals", title="Surface normals", channels=3, kind=UNIT_VECTOR,
        loss="normals_l1", loss_weight=10.0, metric="mErr", higher_is_better=False, table_scale=1.0,
        label_interpolation="bicubic", prediction_interpolation="bilinear",
        flip_negate_channels=(0,), aliases=("normal", "surface_normals"),
    ),
    TaskSpec(
        name="saliency", title="Saliency", channels=1, kind=BINARY,
        loss="balanced_bce", loss_weight=5.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
        label_interpolation="nearest", prediction_interpolation="bilinear", aliases=("sal",),
    ),
    TaskSpec(
        name="depth", title="Depth", channels=1, kind=SCALAR,
        loss="depth_l1", loss_weight=1.0, metric="rmse", higher_is_better=False, table_scale=1.0,
        label_interpolation="bilinear", prediction_interpolation="bilinear",
    ),
    # The synthetic scenes' extra tasks (dataset synthetic_full, tsn.data.synthetic_render.EXTRA_LABELS).
    # Weights bring each loss near the scale of the others at initialisation: maps in [0, 1] x10 (as normals),
    # pixel distances x1 (as depth in metres), batch-balanced binary maps x5 (as saliency).
    TaskSpec(
        name="albedo", title="Albedo (luminance)", channels=1, kind=SCALAR,
        loss="scalar_l1", loss_weight=10.0, metric="rmse", higher_is_better=False, table_scale=1.0,
        label_interpolation="bilinear", prediction_interpolation="bilinear", aliases=("reflectance",),
    ),
    TaskSpec(
        name="shading", title="Shading", channels=1, kind=SCALAR,
        loss="scalar_l1", loss_weight=10.0, metric="rmse", higher_is_better=False, table_scale=1.0,
        label_interpolation="bilinear", prediction_interpolation="bilinear",
    ),
    TaskSpec(
        name="unlit", title="Unlit (no direct light)", channels=1, kind=BINARY,
        loss="balanced_bce", loss_weight=5.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
        label_interpolation="nearest", prediction_interpolation="bilinear",
    ),
    TaskSpec(
        name="material", title="Material", channels=5, kind=CLASSES,
        loss="cross_entropy", loss_weight=1.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
        label_interpolation="nearest", prediction_interpolation="nearest",
        class_names=("sky", "plain", "stripes", "checks", "noise"), aliases=("materials",),
    ),
    TaskSpec(
        name="contours", title="Instance contours", channels=1, kind=BINARY,
        loss="balanced_bce", loss_weight=5.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
        label_interpolation="nearest", prediction_interpolation="bilinear", aliases=("instance_contours",),
    ),
    TaskSpec(
        name="occlusion", title="Occlusion boundaries", channels=1, kind=BINARY,
        loss="balanced_bce", loss_weight=5.0, metric="mIoU", higher_is_better=True, table_scale=100.0,
        label_interpolation="nearest", prediction_interpolation="bilinear", aliases=("occlusion_boundaries",),
    ),
    TaskSpec(
        name="boundary_distance", title="Distance to the nearest boundary", channels=1, kind=SCALAR,
        loss="scalar_l1", loss_weight=1.0, metric="rmse", higher_is_better=False, table_scale=1.0,
        label_interpolation="bilinear", prediction_interpolation="bilinear",
        # A distance is at least 1 pixel; 255 px is a real distance in scenes of 256 px or more.
        ignore_index=-1,
    ),
)

PAPER_TASK_ORDER: tuple[str, ...] = ("semseg", "human_parts", "edges", "normals", "saliency")
"""The authors' task order; position ``i`` owns block ``i`` of the task code."""


def get_task(name: str) -> TaskSpec:
    """The registered task called ``name`` (canonical name or alias such as ``seg``, ``parts``, ``sal``)."""
    return TASKS.lookup(name)


def _malformation(spec: TaskSpec) -> str | None:
    """What is wrong with ``spec`` as a new task (None when nothing is)."""
    if not (isinstance(spec.name, str) and spec.name.isidentifier() and spec.name == spec.name.lower()):
        return f"its name {spec.name!r} is not a lower-case identifier (e.g. 'roads')"
    if isinstance(spec.channels, bool) or not isinstance(spec.channels, int) or spec.channels < 1:
        return f"channels must be a positive integer, got {spec.channels!r}"
    if not spec.kind.supports_metric(spec.metric):
        supported = ", ".join(spec.kind.metric_families) or "none"
        return f"output kind {spec.kind.name!r} has no metric {spec.metric!r} (it offers: {supported})"
    for what in ("label_interpolation", "prediction_interpolation"):
        if getattr(spec, what) not in INTERPOLATIONS:
            return f"{what} must be one of {', '.join(INTERPOLATIONS)}, got {getattr(spec, what)!r}"
    if not (isinstance(spec.loss, str) and spec.loss):
        return f"loss must name a loss of tsn.training.losses.LOSSES, got {spec.loss!r}"
    for what in ("loss_weight", "table_scale"):
        value = getattr(spec, what)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            return f"{what} must be a finite number >= 0, got {value!r}"
    if any(not 0 <= c < spec.channels for c in spec.flip_negate_channels):
        return f"flip_negate_channels {spec.flip_negate_channels} must lie in 0..{spec.channels - 1}"
    if spec.class_names and len(spec.class_names) != spec.channels:
        return f"it has {len(spec.class_names)} class names for {spec.channels} channels; give one per channel or none"
    return None


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a user task to the registry, so that models, losses, data transforms, metrics and commands know it.

    ``spec`` is a :class:`TaskSpec` whose kind (:mod:`tsn.kinds`) offers its headline metric. A name or alias
    that is already taken, or a malformed spec, is refused with a one-line :class:`~tsn.errors.TsnError`.
    Returns ``spec``.
    """
    if not isinstance(spec, TaskSpec):
        raise TsnError(f"register_task takes a tsn.tasks.TaskSpec, got {type(spec).__name__}")
    problem = _malformation(spec)
    if problem:
        raise TsnError(f"cannot register task {spec.name!r}: {problem}")
    return TASKS.register(spec.name, spec, aliases=spec.aliases)


for _spec in _BUILTIN_TASKS:
    register_task(_spec)
del _spec


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
