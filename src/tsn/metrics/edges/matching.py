"""Matching predicted to true boundary pixels within a distance: the objective of BSDS ``correspondPixels``,
solved exactly per connected component of the pair graph."""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import (
    connected_components,
    maximum_bipartite_matching,
    min_weight_full_bipartite_matching,
)

from tsn.metrics.base import check_same_shape

_OUTLIER_COST = 100.0
"""BSDS ``correspondPixels``: an unmatched pixel costs as much as a match ``100 * r`` pixels long."""



class _Disc:
    """Integer offsets within ``r`` of a pixel, as flat steps in a frame padded by ``ceil(r)`` pixels."""

    def __init__(self, shape: tuple[int, int], max_dist: float) -> None:
        height, width = shape
        self.radius = max_dist * math.hypot(height, width)
        self.pad = math.ceil(self.radius)
        self.padded_shape = (height + 2 * self.pad, width + 2 * self.pad)
        dy, dx = np.mgrid[-self.pad : self.pad + 1, -self.pad : self.pad + 1]
        inside = dy**2 + dx**2 <= self.radius**2
        self.steps = (dy[inside] * self.padded_shape[1] + dx[inside]).astype(np.intp)
        # BSDS weights a match by rint(100 * distance); +1 keeps same-pixel matches away from a zero weight,
        # which sparse matrices would treat as a missing edge.
        self.costs = 1 + np.rint(100 * np.hypot(dy[inside], dx[inside]))
        # Leaving a predicted and a true pixel both unmatched costs 2 * outlier = ceil(10000 r) + 2, BSDS's outlier
        # cost, far above any match (<= 1 + rint(100 r)): cardinality is maximised first, then distance minimised.
        self.outlier_cost = math.ceil(100 * _OUTLIER_COST * self.radius) / 2 + 1

    def flat_pixels(self, mask: np.ndarray) -> np.ndarray:
        """Flat indices, in the padded frame, of the true pixels of ``mask`` (row-major order)."""
        # np.flatnonzero of a contiguous 1-D bool array is about 10x faster than np.nonzero of the 2-D map.
        flat = np.flatnonzero(np.ascontiguousarray(mask, dtype=bool).ravel())
        width = mask.shape[1]
        return flat + (flat // width) * (2 * self.pad) + self.pad * (self.padded_shape[1] + 1)

    def index_map(self, mask: np.ndarray) -> np.ndarray:
        """Flat padded map holding, at each true pixel of ``mask``, its rank among them (-1 elsewhere)."""
        index = np.full(self.padded_shape, -1, dtype=np.int64)
        inner = index[self.pad : self.pad + mask.shape[0], self.pad : self.pad + mask.shape[1]]
        inner[mask] = np.arange(np.count_nonzero(mask))
        return index.ravel()


def _match(pred_pixels: np.ndarray, gt_index: np.ndarray, disc: _Disc) -> tuple[np.ndarray, np.ndarray]:
    """Max-cardinality, then min-distance matching: (matched prediction ranks, matched ground-truth ranks).

    The augmented square graph has rows = [predicted pixels, one dummy per true pixel] and columns = [true
    pixels, one dummy per predicted pixel]: a real pair costs its distance weight, a pixel left unmatched pairs
    with its own dummy at the outlier cost, and the dummies of a real pair may pair at cost 1. A perfect matching
    always exists, and its minimum cost leaves as few pixels unmatched as possible, then has the shortest pairs.
    """
    candidates = gt_index[pred_pixels[:, None] + disc.steps[None, :]]
    pred_rank, step = np.nonzero(candidates >= 0)
    if pred_rank.size == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    # Only pixels with a candidate partner enter the graph; the others can never match.
    pred_ids, pred_node = np.unique(pred_rank, return_inverse=True)
    gt_ids, gt_node = np.unique(candidates[pred_rank, step], return_inverse=True)
    pred_match, gt_match = _solve_augmented(pred_node, gt_node, disc.costs[step], pred_ids.size, gt_ids.size, disc)
    return pred_ids[pred_match], gt_ids[gt_match]


def _solve_augmented(
    pred_node: np.ndarray, gt_node: np.ndarray, pair_costs: np.ndarray, n_pred: int, n_gt: int, disc: _Disc
) -> tuple[np.ndarray, np.ndarray]:
    """The min-cost perfect matching of :func:`_match`'s augmented graph: matched (prediction, truth) nodes."""
    n_pairs = pred_node.size
    rows = np.concatenate([pred_node, np.arange(n_pred), n_pred + np.arange(n_gt), n_pred + gt_node])
    cols = np.concatenate([gt_node, n_gt + np.arange(n_pred), np.arange(n_gt), n_gt + pred_node])
    costs = np.concatenate([pair_costs, np.full(n_pred + n_gt, disc.outlier_cost), np.ones(n_pairs)])
    size = n_pred + n_gt
    graph = csr_matrix((costs, (rows, cols)), shape=(size, size))
    row_node, col_node = min_weight_full_bipartite_matching(graph)
    real = (row_node < n_pred) & (col_node < n_gt)
    return row_node[real], col_node[real]


def _partner_lists(truth: np.ndarray, disc: _Disc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel of the padded frame, its candidate true pixels: (CSR row pointer over the flat padded frame,
    true pixel ranks, disc step indices), each pixel's list in increasing step order.

    That is the order in which scanning the pixel's disc (``disc.steps``) meets its true pixels, so the pair lists
    built from it are exactly those of the per-threshold scan they replace. Built once per ground truth from the
    true pixels' side (``truths x steps`` entries, one SIMD sort of distinct integer keys), it makes each threshold
    cost linear in its pairs.
    """
    truth_pixels = disc.flat_pixels(truth)
    n_steps = disc.steps.size
    bits = max(1, (n_steps - 1).bit_length())
    # True pixel g is candidate (step s) of the pixel q = g - steps[s]: sort the distinct keys (q << bits) | s.
    owners = (truth_pixels[None, :] - disc.steps[:, None]).ravel()
    keys = (owners << bits) | np.repeat(np.arange(n_steps), truth_pixels.size)
    keys.sort()
    steps = (keys & ((1 << bits) - 1)).astype(np.intp)
    ranks = disc.index_map(truth)[(keys >> bits) + disc.steps[steps]]
    first = np.zeros(disc.padded_shape[0] * disc.padded_shape[1] + 1, dtype=np.int64)
    np.cumsum(np.bincount(owners, minlength=first.size - 1), out=first[1:])
    return first, ranks, steps


_BATCH_NODES = 512
"""Small components are solved together up to this many nodes: one solver call, scans still short."""


class _TruthMatcher:
    """One ground truth of an image, matched against the prediction at every threshold with :func:`_match`'s result.

    Built once per image: every pixel's list of candidate true pixels (:func:`_partner_lists`; a predicted pixel
    with an empty list has no partner and never enters the graph), and a cache of solved components.

    Per threshold the pair graph is split into connected components, which are independent assignment problems.
    scipy's LAPJVsp touches only the rows and columns of one component when it augments from a row of it, scans
    them in index order, and keeps no state between components (checked in ``tests/metrics/test_edges_fast.py``
    against the whole-graph solve), so solving a union of whole components with their nodes in the same relative
    order returns exactly the pairs the whole graph gives. Its Dijkstra step scans every column of the graph it
    is given, so smaller solves scan less. Two kinds of components need no solver:
    one predicted pixel (it is matched: a pair costs less than two outliers) and, when only counts matter, one
    true pixel (exactly one of its predicted pixels is matched; which one matters only with several ground truths,
    and then it is the unique cheapest, or the component goes to the solver). A component whose pixels are the
    same as at an earlier threshold has the same graph, hence the same solution: it is looked up, not solved.
    When only counts matter, a component small enough for :meth:`_certified_sizes`'s bound takes the size of a
    maximum matching (Hopcroft-Karp), proven equal to the solver's; larger ones still go to the solver.
    """

    def __init__(self, truth: np.ndarray, disc: _Disc, certify: bool = True) -> None:
        self.disc = disc
        self.certify = certify
        self.n_truth = int(np.count_nonzero(truth))
        self.first, self.partner_rank, self.partner_step = _partner_lists(truth, disc)
        self.solved: dict[tuple[bytes, bytes], np.ndarray] = {}

    def match(self, pixels: np.ndarray, which: bool) -> tuple[np.ndarray | None, int]:
        """(positions in ``pixels`` of the matched predicted pixels, or None unless ``which``; number of pairs)."""
        starts, stops = self.first[pixels], self.first[pixels + 1]
        close = np.flatnonzero(stops > starts)
        if close.size == 0:
            return (np.empty(0, np.intp) if which else None), 0
        # Every pair of a close pixel, in (pixel, disc step) order: the rows np.nonzero of the pixels' candidate
        # table (close pixels x disc steps) would give, gathered from the precomputed lists without that table.
        starts, lengths = starts[close], stops[close] - starts[close]
        ends = np.cumsum(lengths)
        n_pred, n_pairs_total = close.size, int(ends[-1])
        pred_node = np.repeat(np.arange(n_pred), lengths)
        slots = np.arange(n_pairs_total) + np.repeat(starts - (ends - lengths), lengths)
        ranks = self.partner_rank[slots]
        # np.unique(ranks, return_inverse=True) by a presence map over the true pixels' ranks: no sort.
        present = np.zeros(self.n_truth, dtype=bool)
        present[ranks] = True
        gt_ids = np.flatnonzero(present)
        gt_node = (np.cumsum(present) - 1)[ranks]
        pair_costs = self.disc.costs[self.partner_step[slots]]
        n_gt = gt_ids.size
        # The pair graph as a square CSR adjacency (prediction rows, then empty truth rows), built directly: the
        # pairs are already sorted by row.
        indptr = np.concatenate([[0], ends, np.full(n_gt, n_pairs_total)])
        n_components, component = connected_components(
            csr_matrix((np.ones(n_pairs_total, bool), n_pred + gt_node, indptr), shape=(n_pred + n_gt,) * 2),
            directed=False,
        )
        pred_component, gt_component = component[:n_pred], component[n_pred:]
        preds_in = np.bincount(pred_component, minlength=n_components)
        gts_in = np.bincount(gt_component, minlength=n_components)
        matched = np.zeros(n_pred, dtype=bool)
        one_pred = preds_in == 1
        matched[one_pred[pred_component]] = True
        n_pairs = int(np.count_nonzero(one_pred))
        star = (gts_in == 1) & ~one_pred  # one true pixel, several predicted ones: exactly one pair
        if which and np.any(star):
            # Each predicted pixel of a star has one pair; the cheapest is matched when it is the only cheapest.
            in_star = np.flatnonzero(star[pred_component[pred_node]])
            star_of = pred_component[pred_node[in_star]]
            cheapest = np.full(n_components, np.inf)
            np.minimum.at(cheapest, star_of, pair_costs[in_star])
            at_min = pair_costs[in_star] == cheapest[star_of]
            unique = np.bincount(star_of[at_min], minlength=n_components) == 1
            matched[pred_node[in_star[at_min & unique[star_of]]]] = True
            star &= unique
        n_pairs += int(np.count_nonzero(star))
        hard = ~one_pred & ~star
        if self.certify and not which and np.any(hard):
            certified, sizes = self._certified_sizes(
                hard, n_components, pred_component, pred_node, gt_node, pair_costs, n_pred, n_gt, preds_in, gts_in
            )
            n_pairs += int(sizes[certified].sum())
            hard &= ~certified
        hard = np.flatnonzero(hard)
        if hard.size:
            n_pairs += self._solve(
                hard, n_components, pred_component, gt_component, pred_node, gt_node, pair_costs,
                pixels[close], gt_ids, matched,
            )
        return (close[matched] if which else None), n_pairs

    def _certified_sizes(
        self,
        hard: np.ndarray,
        n_components: int,
        pred_component: np.ndarray,
        pred_node: np.ndarray,
        gt_node: np.ndarray,
        pair_costs: np.ndarray,
        n_pred: int,
        n_gt: int,
        preds_in: np.ndarray,
        gts_in: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(components whose optimal number of pairs is proven to be their maximum matching size, those sizes).

        Why the size of a maximum matching (Hopcroft-Karp) is not always the count: the augmented graph of
        :func:`_solve_augmented` charges a matching ``R`` of the pair graph (``k`` pairs) ``O * (n_pred + n_gt) +
        C(R) - k * B`` with ``B = 2 * O - 1``: each unmatched pixel pairs with its own dummy at the outlier cost ``O``,
        and the two dummies of each real pair pair at cost 1 (any matching ``R`` extends to a perfect matching
        of that cost, and every perfect matching restricts to one). So the solver minimises ``C(R) - k * B``, a
        finite trade: a matching one pair short is preferred when every larger one is more than ``B`` costlier
        (a straight true line of about ``100 r`` pixels with the prediction shifted one pixel along it, see
        ``tests/metrics/test_edges_fast.py``), and at exactly ``B`` the two sizes tie and the solver decides.

        When it is the size: let ``R*`` be any optimum, ``m`` the maximum matching size of a component and
        ``c_max``, ``c_min`` its largest and smallest pair costs. If ``R*`` had fewer than ``m`` pairs there, the
        symmetric difference with a maximum matching would hold an augmenting path with ``j + 1 <= m`` new pairs
        and ``j`` pairs of ``R*``; swapping them changes the objective by at most
        ``c_max + j * (c_max - c_min) - B <= m * c_max - (m - 1) * c_min - B``. When that bound is negative the swap
        strictly improves ``R*``, a contradiction: every optimum (ties included) has ``m`` pairs in the component,
        whatever solver picks it. Components are independent terms of the objective, so the bound is per component.
        """
        # A component's maximum matching has at most min(preds, truths) pairs: the bound (which grows with m) is
        # checked at that size first, and Hopcroft-Karp runs only on the components it certifies.
        c_max, c_min = float(pair_costs.max()), float(pair_costs.min())
        gain = 2 * self.disc.outlier_cost - 1
        side = np.minimum(preds_in, gts_in)
        certified = hard & (side * c_max - (side - 1) * c_min < gain)
        sizes = np.zeros(n_components, dtype=np.int64)
        if not np.any(certified):
            return certified, sizes
        keep = certified[pred_component[pred_node]]
        graph = csr_matrix((np.ones(int(keep.sum()), bool), (pred_node[keep], gt_node[keep])), shape=(n_pred, n_gt))
        partner = maximum_bipartite_matching(graph, perm_type="column")
        sizes = np.bincount(pred_component[partner >= 0], minlength=n_components)
        return certified, sizes

    def _solve(
        self,
        hard: np.ndarray,
        n_components: int,
        pred_component: np.ndarray,
        gt_component: np.ndarray,
        pred_node: np.ndarray,
        gt_node: np.ndarray,
        pair_costs: np.ndarray,
        close_pixels: np.ndarray,
        gt_ids: np.ndarray,
        matched: np.ndarray,
    ) -> int:
        """Solve (or look up) the components ``hard``; mark their matched predicted nodes; return their pairs."""
        pred_order = np.argsort(pred_component, kind="stable")  # nodes of a component stay in increasing order
        gt_order = np.argsort(gt_component, kind="stable")
        pred_start = np.searchsorted(pred_component[pred_order], np.arange(n_components + 1))
        gt_start = np.searchsorted(gt_component[gt_order], np.arange(n_components + 1))
        n_pairs = 0
        pending: list[tuple[int, tuple[bytes, bytes]]] = []
        for c in hard.tolist():
            preds = pred_order[pred_start[c] : pred_start[c + 1]]
            key = (close_pixels[preds].tobytes(), gt_ids[gt_order[gt_start[c] : gt_start[c + 1]]].tobytes())
            offsets = self.solved.get(key)
            if offsets is None:
                pending.append((c, key))
            else:
                matched[preds[offsets]] = True
                n_pairs += offsets.size
        batch: list[tuple[int, tuple[bytes, bytes]]] = []
        size = 0
        for item in pending:
            c = item[0]
            batch.append(item)
            size += pred_start[c + 1] - pred_start[c] + gt_start[c + 1] - gt_start[c]
            if size >= _BATCH_NODES or item is pending[-1]:
                n_pairs += self._solve_batch(
                    batch, n_components, pred_component, gt_component, pred_node, gt_node, pair_costs,
                    pred_order, pred_start, matched,
                )
                batch, size = [], 0
        return n_pairs

    def _solve_batch(
        self,
        batch: list[tuple[int, tuple[bytes, bytes]]],
        n_components: int,
        pred_component: np.ndarray,
        gt_component: np.ndarray,
        pred_node: np.ndarray,
        gt_node: np.ndarray,
        pair_costs: np.ndarray,
        pred_order: np.ndarray,
        pred_start: np.ndarray,
        matched: np.ndarray,
    ) -> int:
        """One solver call on a union of whole components, nodes renumbered in their original order."""
        chosen = np.zeros(n_components, dtype=bool)
        chosen[[c for c, _ in batch]] = True
        pred_keep, gt_keep = chosen[pred_component], chosen[gt_component]
        pred_new = np.cumsum(pred_keep) - 1
        gt_new = np.cumsum(gt_keep) - 1
        pairs = pred_keep[pred_node]
        pred_local = np.flatnonzero(pred_keep)
        pred_match, _ = _solve_augmented(
            pred_new[pred_node[pairs]], gt_new[gt_node[pairs]], pair_costs[pairs],
            pred_local.size, int(np.count_nonzero(gt_keep)), self.disc,
        )
        won = np.zeros(matched.size, dtype=bool)
        won[pred_local[pred_match]] = True
        matched |= won
        for c, key in batch:
            preds = pred_order[pred_start[c] : pred_start[c + 1]]
            self.solved[key] = np.flatnonzero(won[preds])
        return int(pred_match.size)


def correspond_pixels(
    pred: np.ndarray, gt: np.ndarray, max_dist: float = 0.0075
) -> tuple[np.ndarray, np.ndarray]:
    """Match two binary boundary maps like BSDS ``correspondPixels``, deterministically.

    Returns two bool maps: the predicted pixels and the true pixels that are matched. Pixels pair when their
    integer offset satisfies ``dy^2 + dx^2 <= r^2``, ``r = max_dist * hypot(H, W)`` (inclusive disc).
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    check_same_shape(pred, gt, "edges")
    disc = _Disc(pred.shape, max_dist)
    pred_ids, gt_ids = _match(disc.flat_pixels(pred), disc.index_map(gt), disc)
    matched_pred, matched_gt = np.zeros(pred.shape, bool), np.zeros(gt.shape, bool)
    matched_pred[tuple(idx[pred_ids] for idx in np.nonzero(pred))] = True
    matched_gt[tuple(idx[gt_ids] for idx in np.nonzero(gt))] = True
    return matched_pred, matched_gt
