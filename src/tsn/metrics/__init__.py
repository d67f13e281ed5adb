"""Dense-prediction metrics: one dataset-level accumulator per task, and the multi-task score.

This is pure array code: it knows metric *families* (segmentation, saliency, edges, normals, depth), never tasks.
A task's output kind (:mod:`tsn.kinds`) names the family of its headline metric and builds it with
:func:`build_metric` from plain arguments (channels, ignore value, class names), so a new task with a known kind
needs no change here. Every metric follows :class:`TaskMetric` (``update(pred, label)`` per image, ``compute()``,
``reset()``) and reports fractions for IoU-type scores (tables print them x100), degrees for normals and label
units for depth. See ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tsn.errors import TsnError
from tsn.metrics.base import MetricResult, TaskMetric
from tsn.metrics.depth import DEPTH_PROTOCOLS, AstmtDepthMetric, PooledDepthMetric, depth_metric
from tsn.metrics.multitask import average_drop, delta_m, task_drops
from tsn.metrics.normals import NormalsMetric
from tsn.metrics.saliency import SaliencyMetric
from tsn.metrics.segmentation import SegmentationMetric

if TYPE_CHECKING:
    from tsn.metrics.edges import EdgeMetric

__all__ = [
    "TaskMetric",
    "MetricResult",
    "SegmentationMetric",
    "NormalsMetric",
    "SaliencyMetric",
    "AstmtDepthMetric",
    "PooledDepthMetric",
    "DEPTH_PROTOCOLS",
    "depth_metric",
    "EdgeMetric",
    "METRIC_FAMILIES",
    "METRIC_OPTIONS",
    "MetricFamily",
    "ScoredTask",
    "build_metric",
    "check_metric_options",
    "make_metric",
    "make_metrics",
    "task_drops",
    "average_drop",
    "delta_m",
]


def _segmentation(channels: int, ignore_index: int, class_names: Sequence[str], **options: Any) -> TaskMetric:
    names = tuple(class_names) if len(class_names) == channels else ()
    return SegmentationMetric(channels, ignore_index=ignore_index, class_names=names, **options)


def _saliency(channels: int, ignore_index: int, class_names: Sequence[str], **options: Any) -> TaskMetric:
    return SaliencyMetric(ignore_index=ignore_index, **options)


def _normals(channels: int, ignore_index: int, class_names: Sequence[str], **options: Any) -> TaskMetric:
    return NormalsMetric(ignore_index=ignore_index, **options)


def _depth(channels: int, ignore_index: int, class_names: Sequence[str], **options: Any) -> TaskMetric:
    return depth_metric(ignore_index=ignore_index, **options)


def _edges(
    channels: int, ignore_index: int, class_names: Sequence[str], overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> TaskMetric:
    # Imported on demand: the edge benchmark is the heaviest metric and most runs never score edges.
    from tsn.metrics.edges import EdgeMetric

    return EdgeMetric(**options, **dict(overrides or {}))


@dataclass(frozen=True)
class MetricFamily:
    """How to build one family of metrics, and which :func:`build_metric` options (-> its keywords) it reads."""

    build: Callable[..., TaskMetric]
    """``build(channels, ignore_index, class_names, **keywords)``."""
    options: Mapping[str, str]


METRIC_FAMILIES: dict[str, MetricFamily] = {
    "segmentation": MetricFamily(_segmentation, {"skip_uniform_labels": "skip_uniform_labels"}),
    "saliency": MetricFamily(_saliency, {"saliency_thresholds": "thresholds"}),
    "edges": MetricFamily(_edges, {"edge_protocol": "protocol", "edge_options": "overrides"}),
    "normals": MetricFamily(
        _normals, {"normals_bins_per_degree": "bins_per_degree", "normals_kept_errors_limit": "kept_errors_limit"}
    ),
    "depth": MetricFamily(_depth, {"depth_protocol": "protocol"}),
}
"""Metric builders by family name; an output kind (:mod:`tsn.kinds`) maps each headline metric to one."""

METRIC_OPTIONS: frozenset[str] = frozenset(name for family in METRIC_FAMILIES.values() for name in family.options)
"""Every option :func:`build_metric` (and :func:`make_metric`) accepts; each reaches only the metrics that read it."""


def check_metric_options(options: Mapping[str, Any]) -> None:
    """Refuse an option no metric reads (a misspelling would otherwise be silently ignored)."""
    unknown = sorted(set(options) - METRIC_OPTIONS)
    if unknown:
        raise TsnError(f"unknown metric option {unknown[0]!r}; known options: {', '.join(sorted(METRIC_OPTIONS))}")


def build_metric(
    family: str,
    *,
    channels: int = 1,
    ignore_index: int,
    class_names: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    **options: Any,
) -> TaskMetric:
    """A fresh metric of ``family`` (a key of :data:`METRIC_FAMILIES`).

    ``defaults`` are the task's own protocol choices (keywords of the family's builder, e.g. human parts'
    ``skip_uniform_labels``); ``options`` (``None`` = the default), each applied only to the families it concerns:
    ``skip_uniform_labels`` (segmentation), ``saliency_thresholds``, ``edge_protocol``, ``edge_options`` (a
    mapping of :class:`EdgeMetric` overrides), ``normals_bins_per_degree``, ``normals_kept_errors_limit`` (memory
    of the exact normals median), ``depth_protocol`` (``astmt`` or ``pooled``).
    """
    check_metric_options(options)
    try:
        chosen_family = METRIC_FAMILIES[family]
    except KeyError:
        raise TsnError(f"unknown metric family {family!r}; known families: {', '.join(METRIC_FAMILIES)}") from None
    kwargs = dict(defaults or {})
    chosen = {name: value for name, value in options.items() if value is not None}
    kwargs.update({keyword: chosen[name] for name, keyword in chosen_family.options.items() if name in chosen})
    return chosen_family.build(channels, ignore_index, tuple(class_names), **kwargs)


class ScoredTask(Protocol):
    """What :func:`make_metric` needs of a task: a :class:`~tsn.tasks.TaskSpec` satisfies it."""

    # Read-only members (properties), so that frozen dataclasses such as TaskSpec satisfy the protocol.
    @property
    def name(self) -> str: ...

    def make_metric(self, **options: Any) -> TaskMetric: ...


def make_metric(spec: ScoredTask, **options: Any) -> TaskMetric:
    """A fresh metric for the task ``spec`` (a :class:`~tsn.tasks.TaskSpec`), chosen by its output kind and
    headline metric; the options are those of :func:`build_metric`."""
    return spec.make_metric(**options)


def make_metrics(specs: Iterable[ScoredTask], **options: Any) -> dict[str, TaskMetric]:
    """One fresh metric per task, keyed by task name, with the same options as :func:`make_metric`."""
    return {spec.name: make_metric(spec, **options) for spec in specs}


def __getattr__(name: str) -> Any:
    # ``EdgeMetric`` is resolved on first use so that importing the metrics does not load the edge benchmark.
    if name == "EdgeMetric":
        from tsn.metrics.edges import EdgeMetric

        return EdgeMetric
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
