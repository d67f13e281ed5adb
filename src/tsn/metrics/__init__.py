"""Dense-prediction metrics: one dataset-level accumulator per task, and the multi-task score.

This is pure array code: it knows metric *families* (segmentation, saliency, edges, normals, depth), never tasks.
A task's output kind (:mod:`tsn.kinds`) names the family of its headline metric (a registry,
:func:`register_metric_family`) and builds it with :func:`build_metric` from plain arguments (channels, ignore
value, class names), so a new task with a known kind needs no change here. Every metric follows
:class:`TaskMetric` (``update(pred, label)`` per image, ``compute()``, ``reset()``) and reports fractions for
IoU-type scores (tables print them x100), degrees for normals and label units for depth. Where the field's
codebases differ, a family takes a ``*_protocol`` option; :mod:`tsn.evaluation.protocols` sets them together.
See ``docs/metrics.md`` and ``docs/protocols.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import tsn.metrics.builtin_families  # noqa: F401  (registers the built-in families)
from tsn.metrics.base import MetricResult, TaskMetric
from tsn.metrics.depth import DEPTH_PROTOCOLS, AstmtDepthMetric, PooledDepthMetric, depth_metric
from tsn.metrics.families import (
    METRIC_FAMILIES,
    MetricFamily,
    build_metric,
    check_metric_options,
    get_metric_family,
    list_metric_families,
    metric_options,
    register_metric_family,
)
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
    "register_metric_family",
    "get_metric_family",
    "list_metric_families",
    "metric_options",
    "ScoredTask",
    "build_metric",
    "check_metric_options",
    "make_metric",
    "make_metrics",
    "task_drops",
    "average_drop",
    "delta_m",
]


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
    if name == "METRIC_OPTIONS":  # read now, not frozen at import: plugins' families add options
        return metric_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
