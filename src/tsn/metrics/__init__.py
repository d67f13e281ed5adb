"""Dense-prediction metrics: one dataset-level accumulator per task, and the multi-task score.

:func:`make_metric` builds a task's metric from its :class:`~tsn.tasks.TaskSpec` (output kind and headline
metric), so a new task with a known kind needs no change here. Every metric follows :class:`TaskMetric`
(``update(pred, label)`` per image, ``compute()``, ``reset()``) and reports fractions for IoU-type scores
(tables print them x100), degrees for normals and label units for depth. See ``docs/metrics.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from tsn.errors import TsnError
from tsn.metrics.base import MetricResult, TaskMetric
from tsn.metrics.depth import DEPTH_PROTOCOLS, AstmtDepthMetric, PooledDepthMetric, depth_metric
from tsn.metrics.multitask import average_drop, delta_m, task_drops
from tsn.metrics.normals import NormalsMetric
from tsn.metrics.saliency import SaliencyMetric
from tsn.metrics.segmentation import SegmentationMetric
from tsn.tasks import TaskSpec

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
    "METRIC_OPTIONS",
    "make_metric",
    "make_metrics",
    "task_drops",
    "average_drop",
    "delta_m",
]


def _segmentation(spec: TaskSpec, **options: Any) -> TaskMetric:
    names = spec.class_names if len(spec.class_names) == spec.channels else ()
    return SegmentationMetric(spec.channels, ignore_index=spec.ignore_index, class_names=names, **options)


def _saliency(spec: TaskSpec, **options: Any) -> TaskMetric:
    return SaliencyMetric(ignore_index=spec.ignore_index, **options)


def _normals(spec: TaskSpec, **options: Any) -> TaskMetric:
    return NormalsMetric(ignore_index=spec.ignore_index, **options)


def _depth(spec: TaskSpec, **options: Any) -> TaskMetric:
    return depth_metric(ignore_index=spec.ignore_index, **options)


def _edges(spec: TaskSpec, overrides: Mapping[str, Any] | None = None, **options: Any) -> TaskMetric:
    # Imported on demand: the edge benchmark is the heaviest metric and most runs never score edges.
    from tsn.metrics.edges import EdgeMetric

    return EdgeMetric(**options, **dict(overrides or {}))


@dataclass(frozen=True)
class _Builder:
    """How to build one kind of metric, and which :func:`make_metric` options (-> its keywords) it reads."""

    build: Callable[..., TaskMetric]
    options: Mapping[str, str]


_BUILDERS: dict[tuple[str, str], _Builder] = {
    ("classes", "mIoU"): _Builder(_segmentation, {"skip_uniform_labels": "skip_uniform_labels"}),
    ("binary", "mIoU"): _Builder(_saliency, {"saliency_thresholds": "thresholds"}),
    ("binary", "odsF"): _Builder(_edges, {"edge_protocol": "protocol", "edge_options": "overrides"}),
    ("unit_vector", "mErr"): _Builder(
        _normals, {"normals_bins_per_degree": "bins_per_degree", "normals_kept_errors_limit": "kept_errors_limit"}
    ),
    ("scalar", "rmse"): _Builder(_depth, {"depth_protocol": "protocol"}),
}
"""Metric builders keyed by ``(TaskSpec.output, TaskSpec.metric)``."""

_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # The reference parts evaluator skips images whose label is all background or all ignored.
    "human_parts": {"skip_uniform_labels": True},
}
"""Reference protocol choices that belong to one task rather than to its output kind."""

METRIC_OPTIONS: frozenset[str] = frozenset(name for builder in _BUILDERS.values() for name in builder.options)
"""Every option :func:`make_metric` accepts; each reaches only the metrics that read it."""


def make_metric(spec: TaskSpec, **options: Any) -> TaskMetric:
    """A fresh metric for ``spec``, chosen by its output kind and headline metric.

    Options (``None`` = the default), each applied only to the metrics it concerns: ``skip_uniform_labels``
    (segmentation; on by default for human parts), ``saliency_thresholds``, ``edge_protocol``, ``edge_options``
    (a mapping of :class:`EdgeMetric` overrides), ``normals_bins_per_degree``, ``normals_kept_errors_limit``
    (memory of the exact normals median), ``depth_protocol``
    (``astmt`` or ``pooled``).
    """
    unknown = sorted(set(options) - METRIC_OPTIONS)
    if unknown:
        raise TsnError(f"unknown metric option {unknown[0]!r}; known options: {', '.join(sorted(METRIC_OPTIONS))}")
    builder = _BUILDERS.get((spec.output, spec.metric))
    if builder is None:
        known = ", ".join(f"{output}/{metric}" for output, metric in _BUILDERS)
        raise TsnError(
            f"task {spec.name!r} has output {spec.output!r} with metric {spec.metric!r}, which no metric implements; "
            f"known output/metric pairs: {known}"
        )
    kwargs = dict(_TASK_DEFAULTS.get(spec.name, {}))
    chosen = {name: value for name, value in options.items() if value is not None}
    kwargs.update({keyword: chosen[name] for name, keyword in builder.options.items() if name in chosen})
    return builder.build(spec, **kwargs)


def make_metrics(specs: Iterable[TaskSpec], **options: Any) -> dict[str, TaskMetric]:
    """One fresh metric per task, keyed by task name, with the same options as :func:`make_metric`."""
    return {spec.name: make_metric(spec, **options) for spec in specs}


def __getattr__(name: str) -> Any:
    # ``EdgeMetric`` is resolved on first use so that importing the metrics does not load the edge benchmark.
    if name == "EdgeMetric":
        from tsn.metrics.edges import EdgeMetric

        return EdgeMetric
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
