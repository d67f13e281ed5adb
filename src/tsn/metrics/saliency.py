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

__all__ = ["DEFAULT_THRESHOLDS", "INVPT_BETA_SQUARED", "SaliencyMetric", "InvptSaliencyMetric"]

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


INVPT_BETA_SQUARED = 0.3
"""The F-measure's beta^2 of the InvPT family (salient-object detection's convention)."""


class InvptSaliencyMetric:
    """maxF over the whole set as the InvPT family's ``SaliencyMeter`` computes it.

    Predictions are probabilities; the InvPT code stores them as ``255 * p`` and its meter divides by 255 and
    applies a sigmoid *again* (``double_sigmoid``, the default and the published numbers: every value lands in
    [0.5, 0.731], so only the thresholds from 0.5 up matter). Thresholds are ``torch.arange(0.05, 1, 0.05)``
    (float32) with ``p >= t``; true, predicted and actual positives are summed over every valid pixel of the set
    (label not ``ignore_index``); F = (1 + beta^2) P R / (beta^2 P + R) with beta^2 = 0.3, NaN F set to 0, maxF the
    largest. ``double_sigmoid=False`` is the corrected variant: the probability is thresholded as it is.

    Results: ``maxF`` (fraction; TaskPrompter prints it x100), ``threshold`` (of maxF, on the meter's scale),
    ``F_per_threshold``, ``thresholds``, ``protocol``, ``n_images``. The counts are int64 where the meter keeps
    float32 sums (exact there up to 2^24 pixels per threshold; beyond, the meter's own sums round).
    """

    def __init__(self, *, ignore_index: int = IGNORE_INDEX, double_sigmoid: bool = True) -> None:
        import torch

        self.ignore_index = ignore_index
        self.double_sigmoid = double_sigmoid
        self.protocol = "invpt" if double_sigmoid else "invpt-corrected"
        self.thresholds = torch.arange(0.05, 1, 0.05)  # float32, exactly the meter's values
        self.reset()

    def reset(self) -> None:
        size = len(self.thresholds)
        self._tp = np.zeros(size, dtype=np.int64)
        self._predicted = np.zeros(size, dtype=np.int64)
        self._actual = 0
        self._n_images = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` probabilities ``H x W`` (or ``1 x H x W``), ``label`` {0, 1} ``H x W``."""
        import torch

        label = single_map(label, "saliency label")
        pred = single_map(pred, "saliency prediction")
        check_same_shape(pred, label, "saliency")
        valid = label != self.ignore_index
        scores = torch.from_numpy(np.ascontiguousarray(pred[valid], dtype=np.float32))
        if self.double_sigmoid:  # stored as 255 * p (float32), then p / 255 through a sigmoid by the meter
            scores = torch.sigmoid(scores * 255 / 255.0)
        positive = torch.from_numpy(np.ascontiguousarray(label[valid]).astype(np.int64))
        above = scores[None, :] >= self.thresholds[:, None]
        self._tp += (above & (positive[None, :] != 0)).sum(dim=1).numpy()
        self._predicted += above.sum(dim=1).numpy()
        self._actual += int(positive.sum())
        self._n_images += 1

    def compute(self) -> MetricResult:
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = self._tp / self._predicted
            recall = self._tp / np.float64(self._actual)
            f_measure = (1 + INVPT_BETA_SQUARED) * precision * recall / (INVPT_BETA_SQUARED * precision + recall)
        f_measure = np.where(np.isnan(f_measure), 0.0, f_measure)
        best = int(np.argmax(f_measure))
        return {
            "maxF": float(f_measure[best]),
            "threshold": float(self.thresholds[best]),
            "F_per_threshold": f_measure.tolist(),
            "thresholds": self.thresholds.tolist(),
            "protocol": self.protocol,
            "n_images": self._n_images,
        }
