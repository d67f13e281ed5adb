"""Surface normals: angular error pooled over every valid pixel of every image (the ASTMT / TSNs evaluator).

The reference keeps every error and takes ``np.median`` of them all; on PASCAL-Context val that is about half a
billion float64 values (4 GB). This metric returns the same **exact** median in bounded memory:

* every error is counted in a histogram of fine bins (0.001 degree by default, 1.4 MB), which locates the bin
  holding each middle rank exactly;
* the errors themselves are kept only inside a *window* of bins around the running median. While the kept errors
  fit in ``kept_errors_limit`` the window is every bin; when they outgrow it, the window shrinks to the bins around
  the current middle rank. A window only ever shrinks, so each bin inside it has kept every error that fell in it.
* ``compute()`` takes the middle ranks' bins from the histogram and, when they lie inside the window, selects the
  exact order statistics among the kept errors of that window (``np.partition``), then averages the two middle ones
  as ``np.median`` does. ``median_exact`` says so.

Only if the data drift so far that the final middle rank falls outside the window (the window holds the central
``kept_errors_limit`` errors, so this needs the median to move by that many ranks after the window last shrank)
does the median fall back to the bin centre, within half a bin (``median_resolution / 2``) of the exact value, with
``median_exact`` false. Mean, RMSE and within-threshold percentages pool all pixels as the reference does, from
float64 / int64 running sums.
"""

from __future__ import annotations

import numpy as np

from tsn.errors import TsnError
from tsn.metrics.base import ArrayLike, MetricResult, check_same_shape, to_numpy
from tsn.utils.constants import IGNORE_INDEX

__all__ = ["WITHIN_DEGREES", "NormalsMetric", "InvptNormalsMetric", "angular_error"]

WITHIN_DEGREES: tuple[float, ...] = (11.25, 22.5, 30.0)
"""Thresholds (degrees) of the ``within_*`` scores: percentage of pixels whose error is strictly below each."""

KEPT_ERRORS_LIMIT = 2**24
"""Default number of float64 errors kept for the exact median (128 MB; the whole synthetic val set fits)."""

_EPS = 1e-12


class NormalsMetric:
    """Mean / median / RMSE angular error in degrees and the percentage of pixels within 11.25, 22.5, 30 degrees.

    A label pixel is valid when its vector is non-zero and not the ``ignore_index`` triplet; images without a valid
    pixel (all-zero labels) are skipped, as the reference does. Both vectors are L2-normalised (eps 1e-12) before
    ``degrees(arccos(clip(dot, -1, 1)))``. Results: ``mErr`` (headline), ``median`` (exact, see the module
    docstring), ``rmse``, ``within_11.25``, ``within_22.5``, ``within_30`` (percent), ``n_pixels``, ``n_images``,
    ``n_skipped``, ``median_exact`` and ``median_resolution`` (0 when exact, else the histogram's bin width).

    Args:
        ignore_index: label value of ignored pixels (all three channels).
        bins_per_degree: histogram resolution; it sets the fallback median's precision and the window's grain.
        kept_errors_limit: how many errors may be kept for the exact median before the window shrinks.
    """

    def __init__(
        self,
        *,
        ignore_index: int = IGNORE_INDEX,
        bins_per_degree: int = 1000,
        kept_errors_limit: int = KEPT_ERRORS_LIMIT,
    ) -> None:
        if bins_per_degree < 1:
            raise TsnError(f"bins_per_degree must be a positive integer, got {bins_per_degree}")
        if kept_errors_limit < 2:
            raise TsnError(f"kept_errors_limit must be at least 2, got {kept_errors_limit}")
        self.ignore_index = ignore_index
        self.bins_per_degree = int(bins_per_degree)
        self.kept_errors_limit = int(kept_errors_limit)
        self.reset()

    def reset(self) -> None:
        self._histogram = np.zeros(180 * self.bins_per_degree, dtype=np.int64)
        self._within = np.zeros(len(WITHIN_DEGREES), dtype=np.int64)
        self._sum = 0.0
        self._sum_sq = 0.0
        self._n_pixels = 0
        self._n_images = 0
        self._n_skipped = 0
        # Every error whose bin lies in [_window_low, _window_high] is kept (complete bins); none outside it.
        self._window_low, self._window_high = 0, self._histogram.size - 1
        self._kept: list[np.ndarray] = []
        self._n_kept = 0
        self._shrink_above = self.kept_errors_limit

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` ``3 x H x W`` vectors, ``label`` ``3 x H x W`` or ``H x W x 3`` vectors."""
        pred, label = _pixel_vectors(pred, label)
        valid = np.any(label != 0, axis=0) & np.any(label != self.ignore_index, axis=0)
        if not valid.any():
            self._n_skipped += 1
            return
        # Scoring every pixel and then dropping the invalid ones is cheaper than gathering 3 x N valid vectors.
        self.add_errors(self.pixel_angles(pred, label)[valid])

    def pixel_angles(self, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Angle in degrees between ``3 x N`` predicted and label vectors, per pixel (a protocol may override it)."""
        return angular_error(pred, label)

    def add_errors(self, errors: np.ndarray) -> None:
        """Add one image's angular errors (degrees, valid pixels only); protocols that measure the angle
        differently (:mod:`tsn.metrics.libmtl`) feed this."""
        bins = np.minimum((errors * self.bins_per_degree).astype(np.int64), self._histogram.size - 1)
        self._histogram += np.bincount(bins, minlength=self._histogram.size)
        self._keep(errors, bins)
        self._within += (errors[None, :] < np.asarray(WITHIN_DEGREES)[:, None]).sum(axis=1)
        self._sum += float(errors.sum())
        self._sum_sq += float(np.square(errors).sum())
        self._n_pixels += errors.size
        self._n_images += 1

    def compute(self) -> MetricResult:
        n = self._n_pixels
        nan = float("nan")
        median, exact = self._median() if n else (nan, True)
        result: MetricResult = {
            "mErr": self._sum / n if n else nan,
            "median": median,
            "rmse": float(np.sqrt(self._sum_sq / n)) if n else nan,
        }
        for threshold, count in zip(WITHIN_DEGREES, self._within, strict=True):
            # The reference's np.mean(err < t) * 100: the fraction first, then x100 (same rounding).
            result[f"within_{threshold:g}"] = float(count) / n * 100.0 if n else nan
        result.update(
            n_pixels=n,
            n_images=self._n_images,
            n_skipped=self._n_skipped,
            median_exact=exact,
            median_resolution=0.0 if exact else 1.0 / self.bins_per_degree,
        )
        return result

    # ------------------------------------------------------------------------------------------- exact median
    def _keep(self, errors: np.ndarray, bins: np.ndarray) -> None:
        """Keep the errors that fall in the window; shrink the window when they outgrow the limit."""
        if self._window_low > self._window_high:  # the window is empty: exactness was given up
            return
        inside = (bins >= self._window_low) & (bins <= self._window_high)
        kept = errors[inside]
        if kept.size:
            self._kept.append(kept)
            self._n_kept += kept.size
        if self._n_kept > self._shrink_above:
            self._shrink()

    def _shrink(self) -> None:
        """Narrow the window to the bins around the current middle rank, keeping about half the limit."""
        kept = np.concatenate(self._kept)
        cumulative = np.cumsum(self._histogram)
        n_seen = int(cumulative[-1])  # the histogram already counts the current image
        middle = (n_seen - 1) // 2
        half = self.kept_errors_limit // 4
        low_rank, high_rank = max(0, middle - half), min(n_seen - 1, middle + half)
        low, high = np.searchsorted(cumulative, [low_rank, high_rank], side="right")
        # Stay inside the old window: a bin outside it has lost errors and can never be made complete again.
        low, high = max(int(low), self._window_low), min(int(high), self._window_high)
        self._window_low, self._window_high = low, high
        if low > high:
            self._kept, self._n_kept = [], 0
            return
        kept_bins = np.minimum((kept * self.bins_per_degree).astype(np.int64), self._histogram.size - 1)
        kept = kept[(kept_bins >= low) & (kept_bins <= high)]
        self._kept, self._n_kept = [kept], kept.size
        # A window of a few crowded bins may still hold more than the limit; do not re-shrink on every image.
        self._shrink_above = max(self.kept_errors_limit, 2 * kept.size)

    def _median(self) -> tuple[float, bool]:
        """numpy's median (mean of the two middle ranks) and whether it is exact (else bin centres)."""
        cumulative = np.cumsum(self._histogram)
        ranks = np.array([(self._n_pixels - 1) // 2, self._n_pixels // 2])
        bins = np.searchsorted(cumulative, ranks, side="right")
        if self._window_low <= bins.min() and bins.max() <= self._window_high:
            below = int(cumulative[self._window_low - 1]) if self._window_low else 0
            kept = np.concatenate(self._kept)
            kept_ranks = ranks - below
            values = np.partition(kept, kept_ranks)[kept_ranks]
            return float(values.mean()), True
        return float((bins + 0.5).mean() / self.bins_per_degree), False


def angular_error(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Angle in degrees between matching columns of two ``3 x N`` arrays, each L2-normalised (eps 1e-12) first."""
    cosine = np.einsum("cn,cn->n", pred, label) / (_norm(pred) * _norm(label))
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _norm(vectors: np.ndarray) -> np.ndarray:
    """Column lengths of a ``3 x N`` array, at least 1e-12 (so a zero vector normalises to zero)."""
    return np.maximum(np.sqrt(np.einsum("cn,cn->n", vectors, vectors)), _EPS)


def _pixel_vectors(pred: ArrayLike, label: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 ``3 x (H * W)``; ``pred`` must be channels-first ``3 x H x W``, ``label`` either layout."""
    pred_array = to_numpy(pred).astype(np.float64)
    while pred_array.ndim > 3 and pred_array.shape[0] == 1:
        pred_array = pred_array[0]
    if pred_array.ndim != 3 or pred_array.shape[0] != 3:
        raise TsnError(
            f"normals prediction has shape {tuple(pred_array.shape)}; pass one image as a 3 x H x W array"
        )
    label_array = to_numpy(label).astype(np.float64)
    # A 3 x H x W label matches the prediction as is; an H x W x 3 one (the loaders' raw layout) is transposed.
    if label_array.shape != pred_array.shape and label_array.shape == pred_array.shape[1:] + (3,):
        label_array = label_array.transpose(2, 0, 1)
    check_same_shape(pred_array, label_array, "normals")
    return pred_array.reshape(3, -1), label_array.reshape(3, -1)


class InvptNormalsMetric(NormalsMetric):
    """The InvPT family's ``NormalsMeter``: angle ``2 * atan2(|p - g|, |p + g|)`` between unit vectors.

    The prediction goes through the family's storage convention in float32 (``(n + 1) * 255 / 2``, read back as
    ``2 * x / 255 - 1``) and both vectors are normalised with zero vectors kept zero (so a zero-length prediction
    is 90 degrees off); pixels whose label is zero or ignored are left out (its ``AddIgnoreRegions`` marks zero
    labels 255). The meter reports the mean only; the other scores are those of :class:`NormalsMetric` on the
    same angles, and ``protocol`` = ``"invpt"``.
    """

    protocol = "invpt"

    def pixel_angles(self, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
        stored = (_unit_or_zero(pred.astype(np.float32)) + np.float32(1.0)) * np.float32(255) / np.float32(2.0)
        read = (np.float32(2) * stored / np.float32(255) - np.float32(1)).astype(np.float64)
        p, g = _unit_or_zero(read), _unit_or_zero(label)
        difference = np.sqrt(np.einsum("cn,cn->n", p - g, p - g))
        total = np.sqrt(np.einsum("cn,cn->n", p + g, p + g))
        return np.degrees(2 * np.arctan2(difference, total))

    def compute(self) -> MetricResult:
        result = super().compute()
        return {"mErr": result["mErr"], "mean": result["mErr"], **result, "protocol": self.protocol}


def _unit_or_zero(vectors: np.ndarray) -> np.ndarray:
    """Columns of a ``3 x N`` array divided by their length; zero columns stay zero."""
    norm = np.sqrt(np.einsum("cn,cn->n", vectors, vectors))
    return np.divide(vectors, norm, out=np.zeros_like(vectors), where=norm != 0)
