"""Per-image edge counts at every threshold, their aggregation into ODS / OIS / AP, and the streaming
:class:`EdgeMetric` of validation loops."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tsn.errors import TsnError
from tsn.metrics.base import ArrayLike, check_same_shape, single_map
from tsn.metrics.edge_nms import edge_nms
from tsn.metrics.edges.matching import _Disc, _TruthMatcher
from tsn.metrics.edges.protocols import EdgeProtocol, get_protocol
from tsn.metrics.edges.thinning import thin_edges

COUNT_FIELDS: tuple[str, ...] = ("cntR", "sumR", "cntP", "sumP")
"""Column order of a per-image count array (``K x 4``, one row per threshold)."""


def _soft_map(pred: ArrayLike, protocol: EdgeProtocol) -> np.ndarray:
    """The prediction as seism reads it: uint8 as ``value / 255``, floats in [0, 1] as given; NMS if asked."""
    array = single_map(pred, "edge prediction")
    if array.dtype == np.uint8:
        soft = array / 255.0
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        soft = array.astype(np.float64)
        if not np.all((soft >= 0) & (soft <= 1)):
            raise TsnError(
                "edge prediction has values outside [0, 1] (or NaN); pass sigmoid probabilities or a uint8 PNG array"
            )
    else:
        raise TsnError(
            f"edge prediction has dtype {array.dtype}; pass float probabilities in [0, 1] or a uint8 (0..255) array"
        )
    if protocol.nms:
        # seism reads the PNG with im2single and suppresses in single precision.
        return edge_nms(soft.astype(np.float32))
    return soft


def _ground_truths(
    gt: ArrayLike | Sequence[ArrayLike], soft: np.ndarray, protocol: EdgeProtocol
) -> list[np.ndarray]:
    """The ground-truth boundary maps of prediction ``soft`` as bool arrays, thinned if the protocol says so."""
    maps = list(gt) if isinstance(gt, Sequence) else [gt]  # lists and tuples; arrays and tensors are no Sequence
    if not maps:
        raise TsnError("no edge ground truth given; pass a binary boundary map or a list of them")
    boundaries = []
    for value in maps:
        array = single_map(value, "edge ground truth")
        if not np.isin(array, (0, 1)).all():
            raise TsnError(
                "edge ground truth is not a binary boundary map; convert a label map with seism_ground_truth()"
            )
        check_same_shape(soft, array, "edges")
        array = array.astype(bool)
        boundaries.append(thin_edges(array) if protocol.thin_ground_truth else array)
    return boundaries


def edge_counts(
    pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike], protocol: str | EdgeProtocol = "mtl-survey"
) -> np.ndarray:
    """Per-threshold counts ``cntR, sumR, cntP, sumP`` (int64 ``K x 4``, :data:`COUNT_FIELDS`) of one image.

    ``pred`` is a float ``H x W`` probability map in [0, 1] or a uint8 PNG array; ``gt`` one binary boundary map or
    a list of them (several annotators: recall sums over them, precision counts predicted pixels matched to any).
    """
    return _edge_counts(pred, gt, protocol, certify=True)


def _edge_counts(
    pred: ArrayLike,
    gt: ArrayLike | Sequence[ArrayLike],
    protocol: str | EdgeProtocol,
    certify: bool = True,
    *,
    matcher_type: Callable[[np.ndarray, Any, bool], Any] = _TruthMatcher,
    disc_type: Callable[[tuple[int, int], float], Any] = _Disc,
    thin: Callable[[np.ndarray], np.ndarray] = thin_edges,
) -> np.ndarray:
    """:func:`edge_counts`; ``certify=False`` sends every hard component to the solver (the path before the
    maximum-matching certificate of :meth:`_TruthMatcher._certified_sizes`, timed by ``benchmarks/bench_edges.py``).

    The matcher (one per ground truth: ``match(pixels, which) -> (matched positions or None, pairs)``), the pixel
    disc and the thinning are parameters so that the test oracle (``tests/edge_oracles.py``) and the benchmark's other
    revisions run this same threshold loop with their own pieces.
    """
    protocol = get_protocol(protocol)
    soft = _soft_map(pred, protocol)
    truths = _ground_truths(gt, soft, protocol)
    disc = disc_type(soft.shape, protocol.max_dist)
    matchers = [matcher_type(truth, disc, certify) for truth in truths]
    # With one ground truth cntP == cntR: which predicted pixels are matched does not matter, only how many.
    which = len(matchers) > 1
    sum_r = sum(int(np.count_nonzero(truth)) for truth in truths)
    counts = np.zeros((len(protocol.thresholds), 4), dtype=np.int64)
    previous: np.ndarray | None = None
    for k, threshold in enumerate(protocol.thresholds):
        binary = soft >= threshold if protocol.comparison == ">=" else soft > threshold
        # Thresholds often fall between two levels of a quantised map: same mask, same counts.
        if previous is not None and np.array_equal(binary, previous):
            counts[k] = counts[k - 1]
            continue
        previous = binary
        if protocol.thin_prediction:
            binary = thin(binary)
        pixels = disc.flat_pixels(binary)
        matched_pred = np.zeros(pixels.size, dtype=bool)
        cnt_r = 0
        for matcher in matchers:
            positions, n_pairs = matcher.match(pixels, which)
            if positions is not None:
                matched_pred[positions] = True
            cnt_r += n_pairs
        counts[k] = (cnt_r, sum_r, np.count_nonzero(matched_pred) if which else cnt_r, pixels.size)
    return counts



# ------------------------------------------------------------------------------------------------ aggregation


def _fmeasure(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """``2PR / (P + R)``, 0 where ``P + R == 0``."""
    total = precision + recall
    return np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)


def _seism_image_pr(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """seism ``eval_cont``: no true pixel -> R=1, P=0; else no predicted pixel -> R=0, P=1; else ratios."""
    cnt_r, sum_r, cnt_p, sum_p = np.moveaxis(counts.astype(np.float64), -1, 0)
    recall = np.where(sum_r == 0, 1.0, np.where(sum_p == 0, 0.0, cnt_r / np.maximum(sum_r, 1)))
    precision = np.where(sum_r == 0, 0.0, np.where(sum_p == 0, 1.0, cnt_p / np.maximum(sum_p, 1)))
    return precision, recall


def _seism_dataset_pr(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """seism ``gather_measure``: the same conventions, applied in turn, so an empty prediction wins a tie."""
    cnt_r, sum_r, cnt_p, sum_p = np.moveaxis(totals.astype(np.float64), -1, 0)
    recall, precision = np.zeros_like(cnt_r), np.zeros_like(cnt_r)
    no_truth = (sum_r == 0) & (cnt_p == 0)
    recall[no_truth], precision[no_truth] = 1.0, 0.0
    no_pred = (sum_p == 0) & (cnt_r == 0)
    recall[no_pred], precision[no_pred] = 0.0, 1.0
    regular = (sum_p != 0) & (cnt_r != 0)
    recall[regular], precision[regular] = cnt_r[regular] / sum_r[regular], cnt_p[regular] / sum_p[regular]
    return precision, recall


def _bsds_pr(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BSDS ``collect_eval_bdry``: ``cnt / (sum + (sum == 0))``, i.e. 0 for an empty denominator."""
    cnt_r, sum_r, cnt_p, sum_p = np.moveaxis(counts.astype(np.float64), -1, 0)
    return cnt_p / (sum_p + (sum_p == 0)), cnt_r / (sum_r + (sum_r == 0))


def _interpolated_max_f(
    thresholds: np.ndarray, precision: np.ndarray, recall: np.ndarray
) -> tuple[float, float, float, float]:
    """BSDS ``maxF``: best (F, P, R, threshold) on 100 linear steps between consecutive thresholds."""
    steps = np.linspace(0.0, 1.0, 100)

    def between(values: np.ndarray) -> np.ndarray:
        segments = values[1:, None] * steps + values[:-1, None] * (1 - steps)
        # The first threshold comes first: MATLAB keeps the earliest strictly better point.
        return np.concatenate([values[:1], segments.ravel()])

    p, r, t = between(precision), between(recall), between(thresholds)
    f = _fmeasure(p, r)
    best = int(np.argmax(f))
    return float(f[best]), float(p[best]), float(r[best]), float(t[best])


def _average_precision(precision: np.ndarray, recall: np.ndarray, out_of_range: float) -> float:
    """Area under the PR curve sampled at recall 0, 0.01, ..., 1 (first occurrence of each recall value).

    seism drops grid points outside the recall range (``out_of_range=nan``), BSDS counts them as 0.
    """
    unique_recall, first = np.unique(recall, return_index=True)
    if unique_recall.size < 2:
        return 0.0
    grid = np.arange(101) / 100
    sampled = np.interp(grid, unique_recall, precision[first], left=np.nan, right=np.nan)
    if math.isnan(out_of_range):
        return float(np.nansum(sampled) / 100)
    return float(np.nan_to_num(sampled, nan=out_of_range).sum() * 0.01)


def summarize_edge_counts(counts: np.ndarray, protocol: str | EdgeProtocol = "mtl-survey") -> dict[str, Any]:
    """ODS / OIS F, AP and the PR curve from per-image counts (``N x K x 4``), with the protocol's conventions.

    Keys: ``odsF, odsP, odsR, odsT, oisF, oisP, oisR, AP`` (fractions in [0, 1]), ``n_images``, ``protocol``
    (dict) and ``curve`` (``thresholds, precision, recall, f`` lists).
    """
    protocol = get_protocol(protocol)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 3 or counts.shape[1:] != (len(protocol.thresholds), 4) or counts.shape[0] == 0:
        raise TsnError(
            f"edge counts have shape {counts.shape}; expected (images >= 1, {len(protocol.thresholds)} thresholds, 4)"
        )
    thresholds = np.asarray(protocol.thresholds)
    totals = counts.sum(axis=0)
    image_pr = _bsds_pr if protocol.aggregation == "bsds" else _seism_image_pr
    dataset_pr = _bsds_pr if protocol.aggregation == "bsds" else _seism_dataset_pr
    # ois_pr: seism's general_ois uses eval_cont's conventions on the summed best-threshold counts.
    ois_pr = _bsds_pr if protocol.aggregation == "bsds" else _seism_image_pr

    precision, recall = dataset_pr(totals)
    f = _fmeasure(precision, recall)
    if protocol.aggregation == "bsds":
        ods_f, ods_p, ods_r, ods_t = _interpolated_max_f(thresholds, precision, recall)
        ap = _average_precision(precision, recall, out_of_range=0.0)
    else:
        best = int(np.argmax(f))
        ods_f, ods_p, ods_r, ods_t = (float(v[best]) for v in (f, precision, recall, thresholds))
        ap = _average_precision(precision, recall, out_of_range=math.nan)

    per_image_f = _fmeasure(*image_pr(counts))
    best_counts = counts[np.arange(counts.shape[0]), np.argmax(per_image_f, axis=1)].sum(axis=0)
    ois_p, ois_r = (float(v) for v in ois_pr(best_counts))
    return {
        "odsF": ods_f,
        "odsP": ods_p,
        "odsR": ods_r,
        "odsT": ods_t,
        "oisF": float(_fmeasure(np.float64(ois_p), np.float64(ois_r))),
        "oisP": ois_p,
        "oisR": ois_r,
        "AP": ap,
        "n_images": int(counts.shape[0]),
        "protocol": protocol.to_dict(),
        "curve": {
            "thresholds": thresholds.tolist(),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f": f.tolist(),
        },
    }


# ------------------------------------------------------------------------------------------------ accumulators


class EdgeMetric:
    """Streaming edge benchmark for validation loops: ``update(pred, gt)`` per image, then ``compute()``.

    ``pred``: float ``H x W`` probabilities in [0, 1] or a uint8 PNG array (read as ``value / 255``, exactly
    what seism sees from a saved prediction). ``gt``: a binary boundary map, or a list of them; for PASCAL-Context
    use :func:`seism_ground_truth` of the ``LabelMap``. Each update matches the image at every threshold
    (up to a second for a 500 x 375 image on one core), so large runs should use :func:`evaluate_edge_folder`.
    """

    def __init__(self, protocol: str | EdgeProtocol = "mtl-survey", **overrides: Any) -> None:
        self.protocol = get_protocol(protocol, **overrides)
        self.reset()

    def reset(self) -> None:
        """Forget every image added so far."""
        self._counts: list[np.ndarray] = []

    def update(self, pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike]) -> None:
        """Add one image (see the class docstring for the accepted inputs)."""
        self._counts.append(edge_counts(pred, gt, self.protocol))

    @property
    def n_images(self) -> int:
        return len(self._counts)

    def compute(self) -> dict[str, Any]:
        """The scores over every image added since the last :meth:`reset` (see :func:`summarize_edge_counts`).

        With no image the scores are NaN ("undefined", as every task metric), not 0.
        """
        if not self._counts:
            undefined = dict.fromkeys(("odsF", "odsP", "odsR", "odsT", "oisF", "oisP", "oisR", "AP"), math.nan)
            return {**undefined, "n_images": 0, "protocol": self.protocol.to_dict()}
        return summarize_edge_counts(np.stack(self._counts), self.protocol)
