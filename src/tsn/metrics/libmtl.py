"""The metrics of the loss-weighting literature (MTAN / LibMTL) on NYUv2-13 and Cityscapes-7.

As LibMTL's ``examples/nyu/utils.py`` computes them (checked against that code's outputs on the fixture of
``tests/protocol_reference``):

* segmentation: mIoU and pixel accuracy over one confusion matrix of the whole split, which is
  :class:`~tsn.metrics.segmentation.SegmentationMetric` with ``absent_classes="nan"`` (a class absent from every
  label and prediction has IoU 0 / 0 = NaN there, and so has mIoU).
* depth (:class:`LibmtlDepthMetric`): absolute and relative error pooled over every valid pixel (label non-zero)
  of the split. LibMTL averages per batch, weighted by the batch's valid pixels (the pooled mean), so a *batch*
  without a valid pixel adds NaN and turns both scores NaN (``exact``); ``exact=False`` skips such images.
* normals (:class:`LibmtlNormalsMetric`): ``pred / |pred|`` (a zero-length prediction gives NaN, which turns mean
  and median NaN and counts as "not within" in the fractions), the label used as stored (MTAN's are unit vectors),
  ``degrees(acos(clamp(dot, -1, 1)))`` over pixels whose label components do not *sum* to zero (``exact``);
  ``exact=False`` is the NaN-free variant: prediction normalised with eps 1e-12, pixels with an all-zero label left
  out. Mean, median and the share under 11.25, 22.5 and 30 degrees (LibMTL prints fractions; the results here
  are percentages, as papers print them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tsn.metrics.base import ArrayLike, MetricResult, check_same_shape, single_map
from tsn.metrics.normals import WITHIN_DEGREES, NormalsMetric, _norm, _pixel_vectors

__all__ = ["LibmtlDepthMetric", "LibmtlNormalsMetric", "libmtl_depth_metric", "libmtl_normals_metric"]


class LibmtlDepthMetric:
    """Depth errors pooled over the valid pixels (label non-zero, not ``ignore_index``) of every image.

    ``batch_images``: how many consecutive images LibMTL's test loader puts in one batch (8 for its NYUv2 example,
    64 for Cityscapes); with ``exact``, a batch without a valid pixel makes every score NaN, as there.

    Results: ``abs_err`` (mean ``|pred - label|``), ``rel_err`` (mean ``|pred - label| / label``), ``rmse`` (the
    pooled root mean square error, the project's headline depth key), ``protocol``, ``n_pixels``, ``n_images``,
    ``n_skipped`` (images without a valid pixel), ``empty_batches``.
    """

    def __init__(self, *, ignore_index: int, exact: bool = True, batch_images: int = 1) -> None:
        self.ignore_index = ignore_index
        self.exact = exact
        self.batch_images = max(int(batch_images), 1)
        self.protocol = "libmtl" if exact else "libmtl-nan-free"
        self.reset()

    def reset(self) -> None:
        self._sums = np.zeros(3, dtype=np.float64)  # |error|, |error| / label, error^2
        self._n_pixels = 0
        self._n_images = 0
        self._n_skipped = 0
        self._batch_seen = 0
        self._batch_pixels = 0
        self._empty_batches = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` and ``label`` depth maps ``H x W`` (or ``1 x H x W``), label 0 = no depth."""
        label = single_map(label, "depth label").astype(np.float64)
        pred = single_map(pred, "depth prediction").astype(np.float64)
        check_same_shape(pred, label, "depth")
        valid = (label != 0) & (label != self.ignore_index)
        self._close_batch_after(int(valid.sum()))
        if not valid.any():
            self._n_skipped += 1
            return
        truth, guess = label[valid], pred[valid]
        error = np.abs(guess - truth)
        self._sums += (error.sum(), (error / truth).sum(), np.square(error).sum())
        self._n_pixels += truth.size
        self._n_images += 1

    def _close_batch_after(self, pixels: int) -> None:
        self._batch_seen += 1
        self._batch_pixels += pixels
        if self._batch_seen == self.batch_images:
            self._empty_batches += self._batch_pixels == 0
            self._batch_seen = self._batch_pixels = 0

    def compute(self) -> MetricResult:
        n = self._n_pixels
        empty = self._empty_batches + (self._batch_seen > 0 and self._batch_pixels == 0)  # the last, partial batch
        with np.errstate(invalid="ignore", divide="ignore"):  # no pixel: every score is 0 / 0 = NaN
            abs_err, rel_err, squared = self._sums / n
        if self.exact and empty:
            abs_err = rel_err = float("nan")
        return {
            "abs_err": float(abs_err),
            "rel_err": float(rel_err),
            "rmse": float(np.sqrt(squared)),
            "protocol": self.protocol,
            "n_pixels": n,
            "n_images": self._n_images,
            "n_skipped": self._n_skipped,
            "empty_batches": int(empty),
        }


class LibmtlNormalsMetric(NormalsMetric):
    """LibMTL's angular error (see the module docstring for ``exact``).

    Results: those of :class:`~tsn.metrics.normals.NormalsMetric` (``mErr``, exact ``median``, ``within_*`` in
    percent...) plus ``mean`` (= ``mErr``, LibMTL's name), ``n_nan`` (pixels whose angle is NaN) and ``protocol``.
    """

    def __init__(self, *, exact: bool = True, **options: int) -> None:
        self.exact = exact
        self.protocol = "libmtl" if exact else "libmtl-nan-free"
        super().__init__(**options)

    def reset(self) -> None:
        super().reset()
        self._n_nan = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        if not self.exact:
            super().update(pred, label)
            return
        pred_vectors, label_vectors = _pixel_vectors(pred, label)
        valid = (label_vectors.sum(axis=0) != 0) & np.any(label_vectors != self.ignore_index, axis=0)
        if not valid.any():
            self._n_skipped += 1
            return
        with np.errstate(invalid="ignore", divide="ignore"):  # a zero-length prediction: 0 / 0 = NaN, as there
            guess = pred_vectors[:, valid]
            unit = guess / np.sqrt(np.einsum("cn,cn->n", guess, guess))
            errors = np.degrees(np.arccos(np.clip(np.einsum("cn,cn->n", unit, label_vectors[:, valid]), -1.0, 1.0)))
        nan = np.isnan(errors)
        self._n_nan += int(nan.sum())
        if nan.all():
            self._n_images += 1
            return
        self.add_errors(errors[~nan])

    def pixel_angles(self, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
        """The NaN-free variant: the prediction L2-normalised (eps 1e-12), the label used as stored."""
        cosine = np.einsum("cn,cn->n", pred / _norm(pred), label)
        return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))

    def compute(self) -> MetricResult:
        result = super().compute()
        if self._n_nan:
            total = self._n_pixels + self._n_nan
            for key in ("mErr", "median", "rmse"):
                result[key] = float("nan")
            for threshold, count in zip(WITHIN_DEGREES, self._within, strict=True):
                result[f"within_{threshold:g}"] = float(count) / total * 100.0
        return {"mErr": result["mErr"], "mean": result["mErr"], **result, "n_nan": self._n_nan,
                "protocol": self.protocol}


def libmtl_depth_metric(spec: Any) -> LibmtlDepthMetric:
    """The NaN-free LibMTL depth metric for the task ``spec`` (what ``DatasetSpec.evaluation.metrics`` names; the
    evaluation protocols of :mod:`tsn.evaluation.protocols` choose the variant)."""
    return LibmtlDepthMetric(ignore_index=spec.ignore_index, exact=False)


def libmtl_normals_metric(spec: Any) -> LibmtlNormalsMetric:
    """The NaN-free LibMTL normals metric for the task ``spec`` (see :func:`libmtl_depth_metric`)."""
    return LibmtlNormalsMetric(ignore_index=spec.ignore_index, exact=False)
