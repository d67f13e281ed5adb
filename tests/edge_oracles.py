"""Test oracles of the edge benchmark: the first, slow implementations the fast paths are checked against.

They live with the tests, not in the package: :func:`edge_counts_reference` (one solver call on the whole pair
graph per threshold) and :func:`thin_edges_reference` (``np.unique`` de-duplication) give the same results as
``tsn.metrics.edges`` 3-4 times more slowly. ``tests/metrics/test_edges_fast.py`` compares against them and
``benchmarks/bench_edges.py`` times against them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from tsn.metrics.base import ArrayLike
from tsn.metrics.edges.counts import _edge_counts
from tsn.metrics.edges.matching import _Disc, _match
from tsn.metrics.edges.protocols import EdgeProtocol
from tsn.metrics.edges.thinning import _THINNING_TABLES


def thin_edges_reference(mask: np.ndarray) -> np.ndarray:
    """``thin_edges`` as first written (``np.unique`` de-duplication): the reference of the speed benchmark."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1).astype(np.uint8)
    flat = padded.ravel()
    width = padded.shape[1]
    neighbours = np.array([1, 1 - width, -width, -width - 1, -1, width - 1, width, width + 1])
    candidates = np.flatnonzero(flat)
    recent: list[np.ndarray] = []
    for step in itertools.count():
        if step >= 2:
            changed = np.concatenate(recent)
            if changed.size == 0:
                break
            around = np.unique((changed[:, None] + neighbours).ravel())
            candidates = around[flat[around] == 1]
        codes = np.packbits(flat[candidates[:, None] + neighbours], axis=1, bitorder="little")[:, 0]
        deleted = candidates[_THINNING_TABLES[step % 2][codes]]
        flat[deleted] = 0
        recent = [*recent[-1:], deleted]
    return padded[1:-1, 1:-1].astype(bool)


class WholeGraphMatcher:
    """The first implementation's matching: one solver call on the whole pair graph of a threshold
    (:func:`~tsn.metrics.edges.matching._match`), no components, no cache, no certificate."""

    def __init__(self, truth: np.ndarray, disc: _Disc, certify: bool = False) -> None:
        del certify  # every pair graph goes to the solver whole
        self.disc, self.index = disc, disc.index_map(truth)

    def match(self, pixels: np.ndarray, which: bool) -> tuple[np.ndarray, int]:
        del which  # the matched predicted pixels are always returned
        pred_ids, gt_ids = _match(pixels, self.index, self.disc)
        return pred_ids, int(gt_ids.size)


def edge_counts_reference(
    pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike], protocol: str | EdgeProtocol = "mtl-survey"
) -> np.ndarray:
    """``edge_counts`` as first written: one solver call on the whole pair graph per threshold and ground truth,
    ``np.unique`` thinning.

    Kept as the reference the fast path is tested against (``tests/metrics/test_edges_fast.py``) and timed
    against (``benchmarks/bench_edges.py``); same counts, 3-4 times slower on dense maps.
    """
    return _edge_counts(pred, gt, protocol, matcher_type=WholeGraphMatcher, thin=thin_edges_reference)
