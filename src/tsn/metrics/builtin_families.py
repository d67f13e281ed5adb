"""The built-in metric families (registered on ``import tsn.metrics``), each with the options it reads.

Where the field's codebases score a family differently, the family takes a ``*_protocol`` option naming the
variant; :mod:`tsn.evaluation.protocols` sets those options together for each evaluation protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tsn.errors import TsnError
from tsn.metrics.base import TaskMetric
from tsn.metrics.families import register_metric_family

__all__ = ["SALIENCY_PROTOCOLS", "NORMALS_PROTOCOLS"]

SALIENCY_PROTOCOLS = ("astmt", "invpt", "invpt-corrected")
"""``saliency_protocol`` values: ASTMT's per-image mIoU / maxF at 15 thresholds, the InvPT family's set-level maxF
(beta^2 0.3, double sigmoid), and the same with the sigmoid applied once."""
NORMALS_PROTOCOLS = ("astmt", "invpt", "libmtl", "libmtl-nan-free")
"""``normals_protocol`` values (see :mod:`tsn.metrics.normals` and :mod:`tsn.metrics.libmtl`)."""


def _choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise TsnError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
    return value


def _segmentation(channels: int, ignore_index: int, class_names: Sequence[str], **options: Any) -> TaskMetric:
    from tsn.metrics.segmentation import SegmentationMetric

    names = tuple(class_names) if len(class_names) == channels else ()
    return SegmentationMetric(channels, ignore_index=ignore_index, class_names=names, **options)


def _saliency(
    channels: int, ignore_index: int, class_names: Sequence[str], *, protocol: str = "astmt", **options: Any
) -> TaskMetric:
    from tsn.metrics.saliency import InvptSaliencyMetric, SaliencyMetric

    if _choice(protocol, SALIENCY_PROTOCOLS, "saliency protocol") == "astmt":
        return SaliencyMetric(ignore_index=ignore_index, **options)
    return InvptSaliencyMetric(ignore_index=ignore_index, double_sigmoid=protocol == "invpt")


def _normals(
    channels: int, ignore_index: int, class_names: Sequence[str], *, protocol: str = "astmt", **options: Any
) -> TaskMetric:
    from tsn.metrics.libmtl import LibmtlNormalsMetric
    from tsn.metrics.normals import InvptNormalsMetric, NormalsMetric

    protocol = _choice(protocol, NORMALS_PROTOCOLS, "normals protocol")
    if protocol == "astmt":
        return NormalsMetric(ignore_index=ignore_index, **options)
    if protocol == "invpt":
        return InvptNormalsMetric(ignore_index=ignore_index, **options)
    return LibmtlNormalsMetric(ignore_index=ignore_index, exact=protocol == "libmtl", **options)


def _depth(channels: int, ignore_index: int, class_names: Sequence[str], **options: Any) -> TaskMetric:
    from tsn.metrics.depth import depth_metric

    return depth_metric(ignore_index=ignore_index, **options)


def _edges(
    channels: int, ignore_index: int, class_names: Sequence[str], overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> TaskMetric:
    # Imported on demand: the edge benchmark is the heaviest metric and most runs never score edges.
    from tsn.metrics.edges import EdgeMetric

    return EdgeMetric(**options, **dict(overrides or {}))


register_metric_family(
    "segmentation", _segmentation,
    options={"skip_uniform_labels": "skip_uniform_labels", "segmentation_absent_classes": "absent_classes",
             "segmentation_uniform_rule": "uniform_rule"},
    description="mIoU and pixel accuracy from one confusion matrix over the split",
)
register_metric_family(
    "saliency", _saliency, options={"saliency_thresholds": "thresholds", "saliency_protocol": "protocol"},
    description="max-over-thresholds mIoU / maxF of saliency probabilities",
)
register_metric_family(
    "edges", _edges, options={"edge_protocol": "protocol", "edge_options": "overrides"},
    description="the seism-compatible boundary benchmark (odsF, oisF, AP)",
)
register_metric_family(
    "normals", _normals,
    options={"normals_protocol": "protocol", "normals_bins_per_degree": "bins_per_degree",
             "normals_kept_errors_limit": "kept_errors_limit"},
    description="angular error in degrees, pooled over every valid pixel",
)
register_metric_family(
    "depth", _depth, options={"depth_protocol": "protocol", "depth_batch_images": "batch_images"},
    description="depth errors (RMSE, log RMSE, relative and absolute errors)",
)
