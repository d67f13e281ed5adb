"""The metrics of the loss-weighting literature (MTAN / LibMTL) on NYUv2-13 and Cityscapes-7.

As LibMTL's ``examples/nyu/utils.py`` computes them (written from its description, see
``shared/specs/mtan-benchmarks.md``):

* segmentation: mIoU and pixel accuracy over one confusion matrix of the whole split, which is what
  :class:`~tsn.metrics.segmentation.SegmentationMetric` already computes (the loaders map MTAN's ``-1`` to the
  ignore index). One difference: a class absent from every label and prediction of the split counts as IoU 0
  there, where LibMTL's mean turns NaN.
* depth (:class:`LibmtlDepthMetric`): absolute and relative error pooled over every valid pixel (label non-zero)
  of the split; predictions are used as they are (no clamping).
* normals (:class:`LibmtlNormalsMetric`): the prediction is L2-normalised, the label used as stored (MTAN's are
  unit vectors), ``degrees(acos(clamp(dot, -1, 1)))`` over pixels whose label is not all zero; mean, median and
  the share of pixels under 11.25, 22.5 and 30 degrees (LibMTL prints fractions; here percentages, as papers do).

The factories take the task's spec and return a fresh metric; :class:`tsn.datasets.EvaluationProtocol` names
them for the datasets whose literature reports these numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tsn.metrics.base import ArrayLike, MetricResult, check_same_shape, single_map
from tsn.metrics.normals import NormalsMetric, _norm

__all__ = ["LibmtlDepthMetric", "LibmtlNormalsMetric", "libmtl_depth_metric", "libmtl_normals_metric"]


class LibmtlDepthMetric:
    """Depth errors pooled over the valid pixels (label non-zero, not ``ignore_index``) of every image.

    Results: ``abs_err`` (mean ``|pred - label|``), ``rel_err`` (mean ``|pred - label| / label``), ``rmse`` (the
    pooled root mean square error, the project's headline depth key), ``protocol`` = ``"libmtl"``, ``n_pixels``,
    ``n_images``, ``n_skipped`` (images without a valid pixel).
    """

    protocol = "libmtl"

    def __init__(self, *, ignore_index: int) -> None:
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._sums = np.zeros(3, dtype=np.float64)  # |error|, |error| / label, error^2
        self._n_pixels = 0
        self._n_images = 0
        self._n_skipped = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` and ``label`` depth maps ``H x W`` (or ``1 x H x W``), label 0 = no depth."""
        label = single_map(label, "depth label").astype(np.float64)
        pred = single_map(pred, "depth prediction").astype(np.float64)
        check_same_shape(pred, label, "depth")
        valid = (label != 0) & (label != self.ignore_index)
        if not valid.any():
            self._n_skipped += 1
            return
        truth, guess = label[valid], pred[valid]
        error = np.abs(guess - truth)
        self._sums += (error.sum(), (error / truth).sum(), np.square(error).sum())
        self._n_pixels += truth.size
        self._n_images += 1

    def compute(self) -> MetricResult:
        n = self._n_pixels
        with np.errstate(invalid="ignore", divide="ignore"):  # no pixel: every score is 0 / 0 = NaN
            abs_err, rel_err, squared = self._sums / n
        return {
            "abs_err": float(abs_err),
            "rel_err": float(rel_err),
            "rmse": float(np.sqrt(squared)),
            "protocol": self.protocol,
            "n_pixels": n,
            "n_images": self._n_images,
            "n_skipped": self._n_skipped,
        }


class LibmtlNormalsMetric(NormalsMetric):
    """LibMTL's angular error: prediction normalised, label as stored, pixels with an all-zero label left out.

    Results: those of :class:`~tsn.metrics.normals.NormalsMetric` (``mErr``, exact ``median``, ``within_*`` in
    percent...) plus ``mean`` (= ``mErr``, LibMTL's name) and ``protocol`` = ``"libmtl"``.
    """

    protocol = "libmtl"

    def pixel_angles(self, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
        """The prediction L2-normalised, the label used as stored (LibMTL does not renormalise it)."""
        cosine = np.einsum("cn,cn->n", pred / _norm(pred), label)
        return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))

    def compute(self) -> MetricResult:
        result = super().compute()
        return {"mErr": result["mErr"], "mean": result["mErr"], **result, "protocol": self.protocol}


def libmtl_depth_metric(spec: Any) -> LibmtlDepthMetric:
    """LibMTL's depth metric for the task ``spec`` (its ``ignore_index`` marks transformed labels' invalid pixels)."""
    return LibmtlDepthMetric(ignore_index=spec.ignore_index)


def libmtl_normals_metric(spec: Any) -> LibmtlNormalsMetric:
    """LibMTL's normals metric for the task ``spec``."""
    return LibmtlNormalsMetric(ignore_index=spec.ignore_index)
