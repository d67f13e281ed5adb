"""Surface normals: angular error pooled over every valid pixel of every image (the ASTMT / TSNs evaluator).

The median of errors pooled over a whole data set would need every error kept (about a billion on PASCAL-Context
val), so the errors are counted in a histogram of fine bins instead: the median is the centre of the bin holding
the middle rank, within half a bin (0.0005 degree with the default 1000 bins per degree) of the exact value. The
mean, the RMSE and the within-threshold percentages are exact, from running float64 / int64 sums.
"""

from __future__ import annotations

import numpy as np

from tsn.errors import TsnError
from tsn.metrics.base import ArrayLike, MetricResult, check_same_shape, to_numpy
from tsn.tasks import IGNORE_INDEX

__all__ = ["WITHIN_DEGREES", "NormalsMetric", "angular_error"]

WITHIN_DEGREES: tuple[float, ...] = (11.25, 22.5, 30.0)
"""Thresholds (degrees) of the ``within_*`` scores: percentage of pixels whose error is strictly below each."""

_EPS = 1e-12


class NormalsMetric:
    """Mean / median / RMSE angular error in degrees and the percentage of pixels within 11.25, 22.5, 30 degrees.

    A label pixel is valid when its vector is non-zero and not the ``ignore_index`` triplet; images without a valid
    pixel (all-zero labels) are skipped, as the reference does. Both vectors are L2-normalised (eps 1e-12) before
    ``degrees(arccos(clip(dot, -1, 1)))``. Results: ``mErr`` (headline), ``median``, ``rmse``, ``within_11.25``,
    ``within_22.5``, ``within_30`` (percent), ``n_pixels``, ``n_images``, ``n_skipped``, ``median_resolution``.
    """

    def __init__(self, *, ignore_index: int = IGNORE_INDEX, bins_per_degree: int = 1000) -> None:
        if bins_per_degree < 1:
            raise TsnError(f"bins_per_degree must be a positive integer, got {bins_per_degree}")
        self.ignore_index = ignore_index
        self.bins_per_degree = int(bins_per_degree)
        self.reset()

    def reset(self) -> None:
        self._histogram = np.zeros(180 * self.bins_per_degree, dtype=np.int64)
        self._within = np.zeros(len(WITHIN_DEGREES), dtype=np.int64)
        self._sum = 0.0
        self._sum_sq = 0.0
        self._n_pixels = 0
        self._n_images = 0
        self._n_skipped = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` ``3 x H x W`` vectors, ``label`` ``3 x H x W`` or ``H x W x 3`` vectors."""
        pred, label = _pixel_vectors(pred, label)
        valid = np.any(label != 0, axis=0) & np.any(label != self.ignore_index, axis=0)
        if not valid.any():
            self._n_skipped += 1
            return
        # Scoring every pixel and then dropping the invalid ones is cheaper than gathering 3 x N valid vectors.
        errors = angular_error(pred, label)[valid]
        bins = np.minimum((errors * self.bins_per_degree).astype(np.int64), self._histogram.size - 1)
        self._histogram += np.bincount(bins, minlength=self._histogram.size)
        self._within += (errors[None, :] < np.asarray(WITHIN_DEGREES)[:, None]).sum(axis=1)
        self._sum += float(errors.sum())
        self._sum_sq += float(np.square(errors).sum())
        self._n_pixels += errors.size
        self._n_images += 1

    def compute(self) -> MetricResult:
        n = self._n_pixels
        nan = float("nan")
        result: MetricResult = {
            "mErr": self._sum / n if n else nan,
            "median": self._histogram_median() if n else nan,
            "rmse": float(np.sqrt(self._sum_sq / n)) if n else nan,
        }
        for threshold, count in zip(WITHIN_DEGREES, self._within):
            result[f"within_{threshold:g}"] = 100.0 * float(count) / n if n else nan
        result.update(
            n_pixels=n,
            n_images=self._n_images,
            n_skipped=self._n_skipped,
            median_resolution=1.0 / self.bins_per_degree,
        )
        return result

    def _histogram_median(self) -> float:
        """numpy's median (mean of the two middle ranks), each rank read as the centre of its bin."""
        cumulative = np.cumsum(self._histogram)
        middle = np.array([(self._n_pixels - 1) // 2, self._n_pixels // 2])
        bins = np.searchsorted(cumulative, middle, side="right")
        return float((bins + 0.5).mean() / self.bins_per_degree)


def angular_error(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Angle in degrees between matching columns of two ``3 x N`` arrays, each L2-normalised (eps 1e-12) first."""
    cosine = np.einsum("cn,cn->n", pred, label) / (_norm(pred) * _norm(label))
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _norm(vectors: np.ndarray) -> np.ndarray:
    """Column lengths of a ``3 x N`` array, at least 1e-12 (so a zero vector normalises to zero)."""
    return np.maximum(np.sqrt(np.einsum("cn,cn->n", vectors, vectors)), _EPS)


def _pixel_vectors(pred: ArrayLike, label: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 ``3 x (H * W)``; ``pred`` must be channels-first ``3 x H x W``, ``label`` either layout."""
    pred = to_numpy(pred).astype(np.float64)
    while pred.ndim > 3 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.ndim != 3 or pred.shape[0] != 3:
        raise TsnError(f"normals prediction has shape {tuple(pred.shape)}; pass one image as a 3 x H x W array")
    label = to_numpy(label).astype(np.float64)
    # A 3 x H x W label matches the prediction as is; an H x W x 3 one (the loaders' raw layout) is transposed.
    if label.shape != pred.shape and label.shape == pred.shape[1:] + (3,):
        label = label.transpose(2, 0, 1)
    check_same_shape(pred, label, "normals")
    return pred.reshape(3, -1), label.reshape(3, -1)
