"""Output kinds: what a task's raw network output *is*, and everything that follows from it.

A task (:class:`tsn.tasks.TaskSpec`) names one kind; the kind alone decides how a raw output ``(N, C, H, W)``
becomes a prediction (argmax / sigmoid / L2-normalise / identity), how a prediction is resized, saved in the
authors' file conventions and read back, how a label or prediction is drawn, what the trivial constant predictor
outputs, how labels of the kind behave in the data pipeline, and which metric scores it. Four kinds are built in:

* :class:`ClassMap` (``classes``): one class index per pixel (semantic segmentation, human parts);
* :class:`BinaryMap` (``binary``): one probability per pixel (edges, saliency);
* :class:`UnitVectorMap` (``unit_vector``): one unit vector per pixel (surface normals);
* :class:`ScalarMap` (``scalar``): one real value per pixel (depth).

Nothing else in the package branches on the kind: code asks the kind. A new kind is a subclass of
:class:`OutputKind` (optionally registered with :func:`register_kind` so that its name can be used in files).

torch is imported where it is used, so that ``import tsn`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

from tsn.errors import TsnError
from tsn.utils.constants import IGNORE_INDEX
from tsn.utils.registry import Registry

if TYPE_CHECKING:
    import torch

    from tsn.metrics.base import TaskMetric

__all__ = [
    "Interpolation",
    "OutputKind",
    "ClassMap",
    "BinaryMap",
    "UnitVectorMap",
    "ScalarMap",
    "CLASSES",
    "BINARY",
    "UNIT_VECTOR",
    "SCALAR",
    "KINDS",
    "get_kind",
    "register_kind",
    "color_palette",
]

Interpolation = Literal["nearest", "bilinear", "bicubic"]
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")

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
    import torch
    import torch.nn.functional as F

    shape, new_shape = [1, 1, 1, 1], [1, 1]
    shape[axis], new_shape[axis - 2] = length, new_length
    ramp = torch.arange(length, dtype=torch.float32, device=device).view(shape)
    return F.interpolate(ramp, size=tuple(new_shape), mode="nearest").view(-1).long()


def _resize_class_indices(indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of ``(N, h, w)`` class indices to ``(N, *size)`` int64, equal to the former
    ``F.interpolate(indices[:, None].float(), size, mode="nearest")[:, 0].long()`` but without its full-size float32
    map: the rows and columns are gathered straight from the integer map. Inputs where the float32 detour could
    change a value (float maps, integers beyond 2**24) still take it."""
    import torch
    import torch.nn.functional as F

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


class MetricTask(Protocol):
    """What a kind needs of a task to build its metric (a :class:`tsn.tasks.TaskSpec` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def channels(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def ignore_index(self) -> int: ...
    @property
    def class_names(self) -> Sequence[str]: ...
    @property
    def metric_options(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class OutputKind:
    """Base of the output kinds. Subclasses set the class attributes and override what differs.

    Kinds are frozen and field-less, so two instances of one kind compare equal (also after pickling into a
    DataLoader or benchmark worker).
    """

    name: ClassVar[str] = ""
    """The kind's name in files (checkpoints, ONNX metadata) and in :data:`KINDS`."""
    saved_suffix: ClassVar[str] = ".png"
    """File suffix of a saved prediction (:meth:`to_saved`)."""
    stored_dtype: ClassVar[type] = np.float32
    """The dtype that holds a label of this kind exactly (cached synthetic scenes)."""
    label_fit_interpolation: ClassVar[Interpolation] = "nearest"
    """How a label whose size differs from its image's is fitted to it when it is read (the reference loaders)."""
    unit_length: ClassVar[bool] = False
    """Labels are vectors renormalised after resizing, whose in-plane components (0, 1) rotate with the image."""
    zero_is_invalid: ClassVar[bool] = False
    """A label pixel whose value (every channel) is exactly 0 carries no label and becomes the ignore value."""
    indexed_png: ClassVar[bool] = False
    """The saved PNG holds class indices, which a palette can colour without changing them."""
    metric_families: ClassVar[Mapping[str, str]] = {}
    """Headline metric name (``TaskSpec.metric``) -> its family in :data:`tsn.metrics.METRIC_FAMILIES`."""

    # ------------------------------------------------------------------------------- raw output -> prediction
    def postprocess(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw network output ``(N, C, H, W)`` -> prediction (unchanged unless the kind says otherwise)."""
        return raw

    def resize_prediction(self, pred: torch.Tensor, size: tuple[int, int], mode: Interpolation) -> torch.Tensor:
        """Resize a postprocessed prediction of one or more images ``(N, C, h, w)`` to ``size = (H, W)`` with
        the task's ``mode``."""
        if tuple(pred.shape[-2:]) == tuple(size):
            return pred
        import torch.nn.functional as F

        kwargs = {} if mode == "nearest" else {"align_corners": False}
        return F.interpolate(pred.float(), size=size, mode=mode, **kwargs)

    # ------------------------------------------------------------------------------------------- files
    def to_saved(self, pred: np.ndarray) -> np.ndarray:
        """One image's postprocessed prediction (``H x W`` or ``C x H x W``) -> the array the authors save."""
        pred = np.asarray(pred)
        return pred.reshape(pred.shape[-2:]).astype(np.float32)

    def read_saved(self, saved: np.ndarray) -> np.ndarray:
        """A saved prediction (:meth:`to_saved`) as the reference evaluators read it back from its file."""
        return saved

    # ------------------------------------------------------------------------------------------- pictures
    def render(self, value: np.ndarray, *, is_label: bool = False, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
        """Draw a label or a postprocessed prediction as an ``H x W x 3`` uint8 picture (grey, values clipped to
        ``[0, 1]``); ignored label pixels are drawn black."""
        return _render_grey(np.asarray(value), is_label, ignore_index, stretch=False)

    # ------------------------------------------------------------------------------------------- baselines
    def constant_output(self, labels: torch.Tensor, channels: int, ignore_index: int) -> tuple[torch.Tensor, str]:
        """The raw output (and its description) that predicts the dataset-wide constant of ``labels``, a batch
        of transformed labels ``(N, C, H, W)``; ignored / invalid pixels are left out."""
        raise TsnError(f"output kind {self.name!r} has no constant predictor; implement constant_output")

    def random_label(self, channels: int, batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        """Random transformed labels ``(batch, C, size, size)`` of this kind (for speed measurements)."""
        raise TsnError(f"output kind {self.name!r} has no random labels; implement random_label")

    def agreement(self, out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        """How far the predictions of two raw outputs of the same input differ (beyond their largest absolute
        difference, which the caller measures): nothing more by default."""
        return {}

    # ------------------------------------------------------------------------------------------- metric
    def supports_metric(self, metric: str) -> bool:
        """Whether :meth:`make_metric` can score a task whose headline metric is ``metric``."""
        return metric in self.metric_families

    def make_metric(self, task: MetricTask, **options: Any) -> TaskMetric:
        """A fresh metric for ``task`` from its headline metric (see :func:`tsn.metrics.build_metric` for the
        options; the task's ``metric_options`` are its own defaults)."""
        from tsn.metrics import build_metric, check_metric_options

        check_metric_options(options)
        family = self.metric_families.get(task.metric)
        if family is None:
            known = ", ".join(f"{kind.name}/{metric}" for kind in KINDS.values() for metric in kind.metric_families)
            raise TsnError(
                f"task {task.name!r} has output {self.name!r} with metric {task.metric!r}, which no metric "
                f"implements; known output/metric pairs: {known}"
            )
        return build_metric(
            family, channels=task.channels, ignore_index=task.ignore_index, class_names=task.class_names,
            defaults=task.metric_options, **options,
        )


def _plane(value: np.ndarray) -> np.ndarray:
    """The ``H x W`` map of an ``H x W`` array or of one with a leading singleton axis (``1 x H x W``)."""
    return value.reshape(value.shape[-2:])


def _render_grey(value: np.ndarray, is_label: bool, ignore_index: int, *, stretch: bool) -> np.ndarray:
    """A single-channel map as a grey picture; ``stretch`` maps the range of its valid (positive, not ignored)
    values to black..white first."""
    plane = _plane(value)
    picture = np.empty(plane.shape + (3,), dtype=np.uint8)
    bands = list(_row_bands(plane.shape[0], plane.shape[1]))
    low, high = 0.0, 1.0
    if stretch:
        found = [_valid_range(np.asarray(plane[rows], dtype=np.float64), is_label, ignore_index) for rows in bands]
        ranges = [r for r in found if r is not None]
        if ranges:
            low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    for rows in bands:
        grey = np.asarray(plane[rows], dtype=np.float64)
        invalid = grey == ignore_index if is_label else np.zeros(grey.shape, dtype=bool)
        if stretch:
            grey = (grey - low) / max(high - low, 1e-8)
        grey = np.where(invalid, 0.0, np.clip(grey, 0.0, 1.0))
        picture[rows] = (grey * 255).astype(np.uint8)[..., None]
    return picture


def _valid_range(grey: np.ndarray, is_label: bool, ignore_index: int) -> tuple[float, float] | None:
    """``(min, max)`` of the positive values of ``grey`` that are not ignored, None when there are none."""
    valid = grey > 0
    if is_label:
        valid &= grey != ignore_index
    if not valid.any():
        return None
    chosen = grey[valid]
    return float(chosen.min()), float(chosen.max())


@dataclass(frozen=True)
class ClassMap(OutputKind):
    """One class index per pixel: raw outputs are per-class scores, predictions their argmax ``(N, H, W)``."""

    name: ClassVar[str] = "classes"
    stored_dtype: ClassVar[type] = np.uint8
    indexed_png: ClassVar[bool] = True
    metric_families: ClassVar[Mapping[str, str]] = {"mIoU": "segmentation"}

    def postprocess(self, raw: torch.Tensor) -> torch.Tensor:
        """``(N, H, W)`` int64 argmax over the classes."""
        return raw.argmax(dim=1)

    def resize_prediction(self, pred: torch.Tensor, size: tuple[int, int], mode: Interpolation) -> torch.Tensor:
        """Class indices are always resized nearest (``mode`` does not apply: indices cannot be blended)."""
        if tuple(pred.shape[-2:]) == tuple(size):
            return pred
        return _resize_class_indices(pred, size)

    def to_saved(self, pred: np.ndarray) -> np.ndarray:
        """uint8 class indices."""
        return np.asarray(pred).astype(np.uint8)

    def render(self, value: np.ndarray, *, is_label: bool = False, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
        """The VOC palette colour of each class (ignored pixels, 255, white)."""
        plane = _plane(np.asarray(value))
        picture = np.empty(plane.shape + (3,), dtype=np.uint8)
        palette = color_palette()
        for rows in _row_bands(plane.shape[0], plane.shape[1]):
            index = np.asarray(plane[rows], dtype=np.float64).astype(np.int64)
            picture[rows] = palette[np.clip(index, 0, 255)]
        return picture

    def constant_output(self, labels: torch.Tensor, channels: int, ignore_index: int) -> tuple[torch.Tensor, str]:
        """The one-hot scores of the majority class."""
        import torch

        values = labels[labels != ignore_index].long()
        majority = int(torch.bincount(values, minlength=channels).argmax())
        return torch.nn.functional.one_hot(torch.tensor(majority), channels).float(), f"majority class {majority}"

    def random_label(self, channels: int, batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        return torch.randint(0, channels, (batch, 1, size, size), generator=generator).float()

    def agreement(self, out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        """The fraction of pixels whose class is unchanged."""
        return {"agreement": float((self.postprocess(out) == self.postprocess(ref)).float().mean())}


@dataclass(frozen=True)
class BinaryMap(OutputKind):
    """One probability per pixel: raw outputs are logits ``(N, 1, H, W)``, predictions their sigmoid."""

    name: ClassVar[str] = "binary"
    stored_dtype: ClassVar[type] = np.uint8
    metric_families: ClassVar[Mapping[str, str]] = {"mIoU": "saliency", "odsF": "edges"}

    def postprocess(self, raw: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` probabilities."""
        import torch

        return torch.sigmoid(raw)

    def to_saved(self, pred: np.ndarray) -> np.ndarray:
        """uint8 ``255 * p`` (truncated, as the reference)."""
        probability = _plane(np.asarray(pred))
        saved = np.empty(probability.shape, dtype=np.uint8)
        for rows in _row_bands(probability.shape[0], probability.shape[1]):
            saved[rows] = np.clip(255.0 * probability[rows], 0, 255).astype(np.uint8)
        return saved

    def read_saved(self, saved: np.ndarray) -> np.ndarray:
        """The grey level as a probability, ``saved / 255``."""
        return saved / 255.0

    def constant_output(self, labels: torch.Tensor, channels: int, ignore_index: int) -> tuple[torch.Tensor, str]:
        """The logit of the fraction of positive pixels."""
        import torch

        prior = float((labels[labels != ignore_index] >= 0.5).float().mean())
        prior = min(max(prior, 1e-6), 1 - 1e-6)
        return torch.tensor([math.log(prior / (1 - prior))]), f"constant probability {prior:.3f}"

    def random_label(self, channels: int, batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        return (torch.rand(batch, 1, size, size, generator=generator) > 0.8).float()

    def agreement(self, out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        """The fraction of pixels whose decision (logit > 0) is unchanged."""
        return {"agreement": float(((out > 0) == (ref > 0)).float().mean())}


@dataclass(frozen=True)
class UnitVectorMap(OutputKind):
    """One unit vector per pixel ``(N, C, H, W)``: predictions are the L2-normalised raw outputs."""

    name: ClassVar[str] = "unit_vector"
    label_fit_interpolation: ClassVar[Interpolation] = "bicubic"
    unit_length: ClassVar[bool] = True
    zero_is_invalid: ClassVar[bool] = True  # normals: the zero vector = no normal
    metric_families: ClassVar[Mapping[str, str]] = {"mErr": "normals"}

    def postprocess(self, raw: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` L2-normalised over the channels."""
        import torch.nn.functional as F

        return F.normalize(raw, p=2, dim=1)

    def to_saved(self, pred: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(n + 1) * 255 / 2``, ``H x W x C``."""
        vectors = np.asarray(pred).transpose(1, 2, 0)
        saved = np.empty(vectors.shape, dtype=np.uint8)
        for rows in _row_bands(vectors.shape[0], vectors.shape[1] * vectors.shape[2]):
            saved[rows] = np.clip((vectors[rows] + 1.0) * 255.0 / 2.0, 0, 255).astype(np.uint8)
        return saved

    def read_saved(self, saved: np.ndarray) -> np.ndarray:
        """``H x W x 3`` uint8 RGB -> ``3 x H x W`` in ``[-1, 1]``."""
        return saved.transpose(2, 0, 1) * (2.0 / 255.0) - 1.0

    def render(self, value: np.ndarray, *, is_label: bool = False, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
        """Vectors as RGB ``(n + 1) * 127.5``; ignored (all 255) and zero vectors black."""
        value = np.asarray(value)
        vectors = value.reshape((-1,) + value.shape[-2:]).transpose(1, 2, 0)
        picture = np.empty(vectors.shape, dtype=np.uint8)
        for rows in _row_bands(vectors.shape[0], vectors.shape[1] * vectors.shape[2]):
            vec = np.asarray(vectors[rows], dtype=np.float64)
            invalid = np.all(vec == ignore_index, axis=-1) | np.all(vec == 0, axis=-1)
            band = np.clip((vec + 1.0) * 127.5, 0, 255).astype(np.uint8)
            band[invalid] = 0
            picture[rows] = band
        return picture

    def constant_output(self, labels: torch.Tensor, channels: int, ignore_index: int) -> tuple[torch.Tensor, str]:
        """The normalised mean of the valid vectors."""
        import torch

        vectors = labels.movedim(1, -1).reshape(-1, labels.shape[1])
        valid = (vectors != ignore_index).all(dim=1) & (vectors != 0).any(dim=1)
        mean = torch.nn.functional.normalize(vectors[valid].mean(dim=0), dim=0)
        return mean, "mean normal (" + ", ".join(f"{v:.2f}" for v in mean.tolist()) + ")"

    def random_label(self, channels: int, batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        return torch.nn.functional.normalize(torch.randn(batch, channels, size, size, generator=generator), dim=1)

    def agreement(self, out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        """The mean and largest angle between the predicted vectors, in degrees."""
        import torch

        cosine = (self.postprocess(out) * self.postprocess(ref)).sum(dim=1).clamp(-1, 1)
        angle = torch.rad2deg(torch.arccos(cosine))
        return {"mean_angle_deg": float(angle.mean()), "max_angle_deg": float(angle.max())}


@dataclass(frozen=True)
class ScalarMap(OutputKind):
    """One real value per pixel ``(N, 1, H, W)`` (depth): predictions are the raw outputs; 0 marks no label."""

    name: ClassVar[str] = "scalar"
    saved_suffix: ClassVar[str] = ".mat"
    zero_is_invalid: ClassVar[bool] = True  # depth: 0 = no measurement
    metric_families: ClassVar[Mapping[str, str]] = {"rmse": "depth"}

    def render(self, value: np.ndarray, *, is_label: bool = False, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
        """Grey, stretched by the range of the valid (positive, not ignored) values."""
        return _render_grey(np.asarray(value), is_label, ignore_index, stretch=True)

    def constant_output(self, labels: torch.Tensor, channels: int, ignore_index: int) -> tuple[torch.Tensor, str]:
        """The mean of the valid (positive, not ignored) values."""
        values = labels[(labels != ignore_index) & (labels > 0)]
        return values.mean().reshape(1), f"mean value {float(values.mean()):.3f}"

    def random_label(self, channels: int, batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        return 0.5 + 4 * torch.rand(batch, channels, size, size, generator=generator)


CLASSES, BINARY, UNIT_VECTOR, SCALAR = ClassMap(), BinaryMap(), UnitVectorMap(), ScalarMap()

KINDS: Registry[OutputKind] = Registry(
    "output kind", "register one with tsn.register_kind in a plugin: tsn --plugin MODULE",
    normalize=lambda name: name.strip().lower(),
)
"""Every output kind by name (the name used in checkpoints and ONNX metadata)."""


def get_kind(kind: str | OutputKind) -> OutputKind:
    """The output kind called ``kind`` (or ``kind`` itself when it already is one)."""
    if isinstance(kind, OutputKind):
        return kind
    return KINDS.lookup(kind)


def register_kind(kind: OutputKind) -> OutputKind:
    """Make a new output kind known by its name (for files that store kinds by name); refuses duplicates."""
    if not isinstance(kind, OutputKind) or type(kind) is OutputKind:
        raise TsnError(f"register_kind takes an instance of an OutputKind subclass, got {kind!r}")
    if not kind.name or not kind.name.isidentifier():
        raise TsnError(f"output kind {type(kind).__name__} needs a name that is a Python identifier, got {kind.name!r}")
    return KINDS.register(kind.name, kind)


for _builtin in (CLASSES, BINARY, UNIT_VECTOR, SCALAR):
    register_kind(_builtin)
