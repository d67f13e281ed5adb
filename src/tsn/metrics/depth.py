"""Depth: the two protocols in use, each named and recorded in the result under ``protocol``.

* ``astmt`` (ASTMT / TSNs, the default): per image, label zeros become 1e-9 *before* the valid mask is taken, so
  every pixel counts (the reference's behaviour, kept for comparable numbers); ``rmse`` is the mean over images of
  the per-image RMSE and ``log_rmse`` the **median** over images of the per-image log-RMSE.
* ``pooled`` (the MTL survey's later version): only pixels with a positive label count, and every score is pooled
  over all valid pixels of all images; adds ``abs_rel``, ``sq_rel`` and the ``delta_1/2/3`` accuracies.

In both, predictions ``<= 0`` become 1e-9 so logarithms and ratios stay finite, and label pixels equal to
``ignore_index`` (transformed labels; raw labels mark invalid depth with 0) are left out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tsn.errors import TsnError
from tsn.metrics.base import ArrayLike, MetricResult, TaskMetric, check_same_shape, single_map
from tsn.utils.constants import IGNORE_INDEX

__all__ = ["DELTA_BASE", "DEPTH_PROTOCOLS", "AstmtDepthMetric", "PooledDepthMetric", "depth_metric"]

_TINY = 1e-9
DELTA_BASE = 1.25
"""``delta_k`` is the percentage of valid pixels with ``max(label / pred, pred / label) < 1.25 ** k``."""


def _depth_pair(pred: ArrayLike, label: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as float64 ``H x W``, predictions ``<= 0`` replaced by 1e-9."""
    label = single_map(label, "depth label").astype(np.float64)
    pred = single_map(pred, "depth prediction").astype(np.float64)
    check_same_shape(pred, label, "depth")
    return np.where(pred > 0, pred, _TINY), label


class AstmtDepthMetric:
    """The ASTMT / TSNs depth evaluator: per-image RMSE and log-RMSE, then mean / median over images.

    Results: ``rmse`` (headline, label units), ``log_rmse``, ``protocol`` = ``"astmt"``, ``n_images``, ``n_skipped``
    (images without a scorable pixel).
    """

    protocol = "astmt"

    def __init__(self, *, ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._rmse: list[float] = []
        self._log_rmse: list[float] = []
        self._n_skipped = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` and ``label`` depth maps ``H x W`` (or ``1 x H x W``)."""
        pred, label = _depth_pair(pred, label)
        valid = label != self.ignore_index
        if not valid.any():
            self._n_skipped += 1
            return
        # The reference's order: zeros -> 1e-9 first, so invalid (0) pixels are scored with a 1e-9 label.
        truth = np.where(label == 0, _TINY, label)[valid]
        pred = pred[valid]
        self._rmse.append(float(np.sqrt(np.mean(np.square(truth - pred)))))
        self._log_rmse.append(float(np.sqrt(np.mean(np.square(np.log(truth) - np.log(pred))))))

    def compute(self) -> MetricResult:
        scored = bool(self._rmse)
        return {
            "rmse": float(np.mean(self._rmse)) if scored else float("nan"),
            "log_rmse": float(np.median(self._log_rmse)) if scored else float("nan"),
            "protocol": self.protocol,
            "n_images": len(self._rmse),
            "n_skipped": self._n_skipped,
        }


class PooledDepthMetric:
    """Pixel-pooled depth errors over the valid pixels (label > 0, not ignored) of all images.

    Results: ``rmse`` (headline), ``log_rmse``, ``abs_rel``, ``sq_rel``, ``delta_1``, ``delta_2``, ``delta_3``
    (percent), ``protocol`` = ``"pooled"``, ``n_pixels``, ``n_images``, ``n_skipped``.
    """

    protocol = "pooled"

    def __init__(self, *, ignore_index: int = IGNORE_INDEX) -> None:
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        # Running sums of squared error, squared log error, |error| / label, error^2 / label.
        self._sums = np.zeros(4, dtype=np.float64)
        self._deltas = np.zeros(3, dtype=np.int64)
        self._n_pixels = 0
        self._n_images = 0
        self._n_skipped = 0

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: ``pred`` and ``label`` depth maps ``H x W`` (or ``1 x H x W``), label 0 = invalid."""
        pred, label = _depth_pair(pred, label)
        valid = (label > 0) & (label != self.ignore_index)
        if not valid.any():
            self._n_skipped += 1
            return
        truth, pred = label[valid], pred[valid]
        squared = np.square(truth - pred)
        self._sums += (
            squared.sum(),
            np.square(np.log(truth) - np.log(pred)).sum(),
            (np.abs(truth - pred) / truth).sum(),
            (squared / truth).sum(),
        )
        ratio = np.maximum(truth / pred, pred / truth)
        self._deltas += (ratio[None, :] < DELTA_BASE ** np.arange(1, 4)[:, None]).sum(axis=1)
        self._n_pixels += truth.size
        self._n_images += 1

    def compute(self) -> MetricResult:
        n = self._n_pixels
        # With no pixel every score is 0 / 0 = NaN: "undefined", not a misleading 0.
        with np.errstate(invalid="ignore"):
            squared, log_squared, abs_rel, sq_rel = self._sums / n
            deltas = 100.0 * self._deltas / n
        return {
            "rmse": float(np.sqrt(squared)),
            "log_rmse": float(np.sqrt(log_squared)),
            "abs_rel": float(abs_rel),
            "sq_rel": float(sq_rel),
            **{f"delta_{k}": float(value) for k, value in enumerate(deltas, start=1)},
            "protocol": self.protocol,
            "n_pixels": n,
            "n_images": self._n_images,
            "n_skipped": self._n_skipped,
        }


def _libmtl(exact: bool) -> Callable[..., TaskMetric]:
    def build(*, ignore_index: int, batch_images: int = 1) -> TaskMetric:
        from tsn.metrics.libmtl import LibmtlDepthMetric

        return LibmtlDepthMetric(ignore_index=ignore_index, exact=exact, batch_images=batch_images)

    return build


def _without_batches(factory: Callable[..., TaskMetric]) -> Callable[..., TaskMetric]:
    def build(*, ignore_index: int, batch_images: int = 1) -> TaskMetric:
        return factory(ignore_index=ignore_index)

    return build


DEPTH_PROTOCOLS: dict[str, Callable[..., TaskMetric]] = {
    AstmtDepthMetric.protocol: _without_batches(AstmtDepthMetric),
    PooledDepthMetric.protocol: _without_batches(PooledDepthMetric),
    "libmtl": _libmtl(exact=True),
    "libmtl-nan-free": _libmtl(exact=False),
}
"""Depth evaluators by protocol name: ``factory(ignore_index=..., batch_images=...)``."""


def depth_metric(protocol: str = "astmt", *, ignore_index: int = IGNORE_INDEX, batch_images: int = 1) -> TaskMetric:
    """The depth evaluator of ``protocol``: ``astmt`` (the TSNs reference), ``pooled`` (the MTL survey's and the
    InvPT family's), ``libmtl`` (exact, NaN when a batch of ``batch_images`` has no valid pixel) or
    ``libmtl-nan-free``."""
    try:
        factory = DEPTH_PROTOCOLS[protocol.strip().lower()]
    except KeyError:
        raise TsnError(f"unknown depth protocol {protocol!r}; choose one of: {', '.join(DEPTH_PROTOCOLS)}") from None
    return factory(ignore_index=ignore_index, batch_images=batch_images)
