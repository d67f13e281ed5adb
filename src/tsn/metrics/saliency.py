"""Saliency: per-image Jaccard, precision and recall at fixed thresholds, averaged over images (ASTMT / TSNs).

The reported ``mIoU`` is the best threshold's image-averaged Jaccard, and ``maxF`` the best threshold's F-measure
of the image-averaged precision and recall.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tsn.errors import TsnError
from tsn.metrics.base import ArrayLike, MetricResult, check_same_shape, single_map
from tsn.utils.constants import IGNORE_INDEX

__all__ = ["DEFAULT_THRESHOLDS", "SaliencyMetric"]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.2, 0.9, 15).tolist())
"""The reference's 15 thresholds on the predicted probability."""

_EPS = 1e-12


class SaliencyMetric:
    """Max-over-thresholds mIoU and maxF of saliency probabilities.

    Per image and threshold ``t``: the prediction is binarised ``p > t`` and the label ``> 0.5`` (labels are
    already {0, 1}; the reference re-thresholds them too); Jaccard is 1 when both masks are empty, precision is
    ``TP / (TP + FP + 1e-12)`` and recall ``TP / (TP + FN + 1e-12)``. Label pixels equal to ``ignore_index`` are
    left out (real saliency labels have none). Results: ``mIoU`` (headline, fraction), ``maxF``, ``threshold`` (of
    the best mIoU), ``mIoU_per_threshold``, ``thresholds``, ``n_images``.
    """

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, *, ignore_index: int = IGNORE_INDEX) -> None:
        if len(thresholds) == 0:
            raise TsnError("saliency needs at least one threshold; pass e.g. thresholds=(0.5,)")
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._jaccard = np.zeros(self.thresholds.size, dtype=np.float64)
        self._precision = np.zeros(self.thresholds.size, dtype=np.float64)
        self._recall = np.zeros(self.thresholds.size, dtype=np.float64)
        self._n_images = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` probabilities ``H x W`` (or ``1 x H x W``), ``label`` {0, 1} ``H x W``."""
        label = single_map(label, "saliency label")
        pred = single_map(pred, "saliency prediction")
        check_same_shape(pred, label, "saliency")
        valid = label != self.ignore_index
        scores = pred[valid].astype(np.float64)
        positive = label[valid] > 0.5
        # Sorting once gives the counts above every threshold by binary search, without a T x H x W mask.
        tp = _count_above(scores[positive], self.thresholds)
        fp = _count_above(scores[~positive], self.thresholds)
        fn = np.count_nonzero(positive) - tp
        union = tp + fp + fn
        self._jaccard += np.where(union == 0, 1.0, tp / np.maximum(union, 1))
        self._precision += tp / (tp + fp + _EPS)
        self._recall += tp / (tp + fn + _EPS)
        self._n_images += 1

    def compute(self) -> MetricResult:
        # With no image every score is 0 / 0 = NaN: "undefined", not a misleading 0.
        with np.errstate(invalid="ignore"):
            miou = self._jaccard / self._n_images
            precision = self._precision / self._n_images
            recall = self._recall / self._n_images
        f_measure = 2 * precision * recall / (precision + recall + _EPS)
        best = int(np.argmax(miou))
        return {
            "mIoU": float(miou[best]),
            "maxF": float(np.max(f_measure)),
            "threshold": float(self.thresholds[best]),
            "mIoU_per_threshold": miou.tolist(),
            "thresholds": self.thresholds.tolist(),
            "n_images": self._n_images,
        }


def _count_above(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many ``scores`` are strictly greater than each threshold."""
    return scores.size - np.searchsorted(np.sort(scores), thresholds, side="right")
