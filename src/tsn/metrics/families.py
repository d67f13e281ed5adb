"""The metric-family registry: how each family of metrics is built and which options it reads.

An output kind (:mod:`tsn.kinds`) maps its headline metric to a *family* (``segmentation``, ``saliency``,
``edges``, ``normals``, ``depth``); :func:`build_metric` builds a fresh metric of a family from plain arguments and
options. Options are global names (``depth_protocol``, ``saliency_protocol``...) so that one set of options, e.g.
an evaluation protocol's (:mod:`tsn.evaluation.protocols`), can be passed to every task: each family reads the
options it declares and ignores the others. The set of known options is read from the registry when it is used,
so a family registered by a plugin (``tsn --plugin``) brings its options with it::

    from tsn.metrics import register_metric_family

    register_metric_family("counting", build_counting_metric, options={"counting_tolerance": "tolerance"})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tsn.errors import TsnError
from tsn.metrics.base import TaskMetric
from tsn.utils.registry import Registry

__all__ = [
    "MetricFamily",
    "METRIC_FAMILIES",
    "register_metric_family",
    "get_metric_family",
    "list_metric_families",
    "metric_options",
    "check_metric_options",
    "build_metric",
]


@dataclass(frozen=True)
class MetricFamily:
    """How to build one family of metrics, and which :func:`build_metric` options (-> its keywords) it reads."""

    name: str
    build: Callable[..., TaskMetric]
    """``build(channels, ignore_index, class_names, **keywords)`` -> a fresh metric."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Option name (global, as passed to :func:`build_metric`) -> the builder's keyword."""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise TsnError(f"metric family name {self.name!r} must be a non-empty word (letters, digits, _ or -)")
        if not callable(self.build):
            raise TsnError(f"metric family {self.name!r}: build must be callable, got {self.build!r}")
        object.__setattr__(self, "options", dict(self.options))


METRIC_FAMILIES: Registry[MetricFamily] = Registry(
    "metric family", "register one with tsn.metrics.register_metric_family in a plugin: tsn --plugin MODULE",
    name_pattern=r"[A-Za-z0-9_-]+",
)
"""Every registered family by name (read it through :func:`get_metric_family` / :func:`list_metric_families`)."""


def register_metric_family(
    name: str,
    build: Callable[..., TaskMetric],
    *,
    options: Mapping[str, str] | None = None,
    description: str = "",
) -> MetricFamily:
    """Register a family; a name already taken is refused (one line), so a plugin cannot silently replace one."""
    return METRIC_FAMILIES.register(name, MetricFamily(name, build, options or {}, description))


def get_metric_family(name: str) -> MetricFamily:
    return METRIC_FAMILIES.lookup(name)


def list_metric_families() -> list[str]:
    return list(METRIC_FAMILIES)


def metric_options() -> frozenset[str]:
    """Every option some registered family reads (computed now, so plugins' families count)."""
    return frozenset(option for family in METRIC_FAMILIES.values() for option in family.options)


def check_metric_options(options: Mapping[str, Any]) -> None:
    """Refuse an option no registered family reads (a misspelling would otherwise be silently ignored)."""
    known = metric_options()
    unknown = sorted(set(options) - known)
    if unknown:
        raise TsnError(f"unknown metric option {unknown[0]!r}; known options: {', '.join(sorted(known))}")


def build_metric(
    family: str,
    *,
    channels: int = 1,
    ignore_index: int,
    class_names: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
    **options: Any,
) -> TaskMetric:
    """A fresh metric of ``family``.

    ``defaults`` are the task's own choices (keywords of the family's builder, e.g. human parts'
    ``skip_uniform_labels``); ``options`` (``None`` = the default) reach only the families that read them. The
    built-in families read: ``skip_uniform_labels``, ``segmentation_absent_classes``, ``segmentation_uniform_rule``
    (segmentation); ``saliency_thresholds``, ``saliency_protocol`` (saliency); ``edge_protocol``, ``edge_options``
    (edges); ``normals_protocol``, ``normals_bins_per_degree``, ``normals_kept_errors_limit`` (normals);
    ``depth_protocol``, ``depth_batch_images`` (depth).
    """
    check_metric_options(options)
    chosen_family = get_metric_family(family)
    kwargs = dict(defaults or {})
    chosen = {name: value for name, value in options.items() if value is not None}
    kwargs.update({keyword: chosen[name] for name, keyword in chosen_family.options.items() if name in chosen})
    return chosen_family.build(channels, ignore_index, tuple(class_names), **kwargs)
