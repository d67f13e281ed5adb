"""Boundary (edge) detection benchmark, compatible with MATLAB seism / BSDS500, with no MATLAB.

The multi-task codebases score edges with seism (Pont-Tuset's wrapper around the BSDS500 boundary benchmark).
This module re-implements that pipeline from its description:

* **Ground truth.** seism turns a label map into boundaries with David Martin's ``seg2bmap`` and thins them
  (:func:`seism_ground_truth`); BSDS500 uses the annotators' ``Boundaries`` maps as they are.
* **Prediction.** A soft map in [0, 1] (a uint8 PNG is read as ``value / 255``), optionally non-maximum suppressed
  (:mod:`tsn.metrics.edge_nms`), is binarised at every threshold (``>=``, or ``>`` after NMS) and thinned.
* **Matching.** Every binary map is matched to every ground truth: a predicted and a true pixel may pair when their
  integer offset satisfies ``dy^2 + dx^2 <= r^2`` with ``r = max_dist * hypot(H, W)``. BSDS's ``correspondPixels``
  solves a maximum-cardinality, then minimum-distance assignment with a randomly seeded solver; here the same
  objective is solved exactly and deterministically by ``scipy.sparse.csgraph.min_weight_full_bipartite_matching``
  on an augmented graph (see :func:`correspond_pixels`).
* **Counts.** Per image and threshold: ``cntR`` (matched true pixels, summed over ground truths), ``sumR`` (true
  pixels, summed), ``cntP`` (predicted pixels matched to *any* ground truth), ``sumP`` (predicted pixels).
* **Aggregation.** seism: ODS F = plain max over thresholds of the dataset F, OIS F from the per-image best
  thresholds, AP by linear interpolation on a 0.01 recall grid. BSDS: ODS interpolated between thresholds.

Protocols (:data:`PROTOCOLS`) pin every choice of a published codebase; the result of an evaluation records the
protocol it used. :class:`EdgeMetric` accumulates images in a validation loop; :func:`evaluate_edge_folder`
scores a folder of PNG predictions on all cores, caching per-image counts so that an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.io
from PIL import Image
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import (
    connected_components,
    maximum_bipartite_matching,
    min_weight_full_bipartite_matching,
)
from tqdm import tqdm

from tsn.errors import TsnError
from tsn.metrics.base import ArrayLike, check_same_shape, single_map
from tsn.metrics.edge_nms import edge_nms
from tsn.utils.io import atomic_write

__all__ = [
    "COUNT_FIELDS",
    "EdgeProtocol",
    "PROTOCOLS",
    "get_protocol",
    "bsds_thresholds",
    "thin_edges",
    "seg2bmap",
    "seism_ground_truth",
    "load_bsds_ground_truth",
    "correspond_pixels",
    "edge_counts",
    "summarize_edge_counts",
    "EdgeMetric",
    "evaluate_edge_folder",
]

COUNT_FIELDS: tuple[str, ...] = ("cntR", "sumR", "cntP", "sumP")
"""Column order of a per-image count array (``K x 4``, one row per threshold)."""

Comparison = Literal[">=", ">"]
Aggregation = Literal["seism", "bsds"]

_OUTLIER_COST = 100.0
"""BSDS ``correspondPixels``: an unmatched pixel costs as much as a match ``100 * r`` pixels long."""


# --------------------------------------------------------------------------------------------------- protocols


def bsds_thresholds(n: int) -> tuple[float, ...]:
    """BSDS500's ``n`` thresholds ``linspace(1/(n+1), n/(n+1), n)``."""
    if n < 1:
        raise TsnError(f"the number of edge thresholds must be at least 1, got {n}")
    return tuple(np.linspace(1 / (n + 1), n / (n + 1), n).tolist())


def _percent_thresholds() -> tuple[float, ...]:
    """MTL-PyTorch's 99 thresholds, written with ``'%.2f'`` and parsed back by MATLAB: 0.01 .. 0.99."""
    return tuple(float(f"{k / 100:.2f}") for k in range(1, 100))


def _hed_thresholds() -> tuple[float, ...]:
    """seism's ``parameters/HED.txt``: 0.001, 0.01, 0.02, ..., 0.99, 0.999 (101 values)."""
    return (0.001, *_percent_thresholds(), 0.999)


@dataclass(frozen=True)
class EdgeProtocol:
    """Every choice that changes an edge score; recorded in the result of an evaluation."""

    name: str
    nms: bool
    """Apply seism's ``read_one_cont_png`` non-maximum suppression before thresholding."""
    thresholds: tuple[float, ...]
    comparison: Comparison
    """How the soft map is binarised: ``pred >= t`` (no-NMS readers, BSDS) or ``pred > t`` (after NMS)."""
    max_dist: float
    """Match tolerance as a fraction of the image diagonal."""
    thin_ground_truth: bool = True
    """seism thins the ground truth (``bwmorph thin Inf``); BSDS uses the annotated boundaries as they are."""
    thin_prediction: bool = True
    aggregation: Aggregation = "seism"
    image_set: str | None = None
    """The list of image ids the published numbers use (informative: the caller chooses the ids)."""
    source: str = ""

    def __post_init__(self) -> None:
        thresholds = tuple(float(t) for t in self.thresholds)
        object.__setattr__(self, "thresholds", thresholds)
        if not thresholds or any(b <= a for a, b in itertools.pairwise(thresholds)):
            raise TsnError(f"edge protocol {self.name!r}: thresholds must be a non-empty increasing sequence")
        if self.comparison not in (">=", ">"):
            raise TsnError(f"edge protocol {self.name!r}: comparison must be '>=' or '>', got {self.comparison!r}")
        if self.aggregation not in ("seism", "bsds"):
            raise TsnError(
                f"edge protocol {self.name!r}: aggregation must be 'seism' or 'bsds', got {self.aggregation!r}"
            )
        if not self.max_dist > 0:
            raise TsnError(f"edge protocol {self.name!r}: max_dist must be positive, got {self.max_dist}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, plus ``modified`` = the fields that differ from the preset of the same name."""
        fields = dataclasses.asdict(self)
        fields["thresholds"] = list(self.thresholds)
        preset = PROTOCOLS.get(self.name)
        fields["modified"] = (
            []
            if preset is None
            else [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(preset, f.name)]
        )
        return fields

    def fingerprint(self) -> str:
        """A short hash of every field, naming the cached counts this protocol produced."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


PROTOCOLS: dict[str, EdgeProtocol] = {
    protocol.name: protocol
    for protocol in (
        EdgeProtocol(
            name="mtl-survey",
            nms=False,
            thresholds=_percent_thresholds(),
            comparison=">=",
            max_dist=0.0075,
            image_set="test_new",
            source="MTL-PyTorch (MTI-Net, MTL survey): evaluation/eval_edge.py, seism read_one_png.m",
        ),
        EdgeProtocol(
            name="astmt",
            nms=True,
            thresholds=_hed_thresholds(),
            comparison=">",
            max_dist=0.0075,
            image_set="val",
            source="ASTMT: fblib/evaluation/eval_edges.py, seism read_one_cont_png.m, parameters/HED.txt",
        ),
        EdgeProtocol(
            name="atrc",
            nms=True,
            thresholds=_hed_thresholds(),
            comparison=">",
            max_dist=0.0075,
            image_set="test_new",
            source="ATRC / InvPT on PASCAL-Context: prismformore evaluation tools, seism read_one_cont_png.m",
        ),
        EdgeProtocol(
            name="atrc-nyud",
            nms=True,
            thresholds=_hed_thresholds(),
            comparison=">",
            max_dist=0.011,
            image_set="test_new",
            source="ATRC / InvPT on NYUD-v2: eval_method.m maxDist 0.011, GT = thin(seg2bmap(edge png))",
        ),
        EdgeProtocol(
            name="bsds",
            nms=False,
            thresholds=bsds_thresholds(99),
            comparison=">=",
            max_dist=0.0075,
            thin_ground_truth=False,
            aggregation="bsds",
            source="BSDS500 bench: evaluation_bdry_image.m, collect_eval_bdry.m",
        ),
    )
}
"""Protocol presets named after the codebases whose published edge numbers they reproduce."""


def get_protocol(protocol: str | EdgeProtocol | None = "mtl-survey", **overrides: Any) -> EdgeProtocol:
    """A preset by name (None: ``mtl-survey``) or a given protocol, with some fields replaced (``max_dist=0.011``)."""
    if protocol is None:
        protocol = "mtl-survey"
    if isinstance(protocol, str):
        try:
            protocol = PROTOCOLS[protocol.strip().lower()]
        except KeyError:
            raise TsnError(f"unknown edge protocol {protocol!r}; known protocols: {', '.join(PROTOCOLS)}") from None
    if not overrides:
        return protocol
    known = {f.name for f in dataclasses.fields(EdgeProtocol)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TsnError(
            f"unknown edge protocol option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
        )
    return dataclasses.replace(protocol, **overrides)


# ---------------------------------------------------------------------------------------------------- thinning


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two sub-iterations of Guo & Hall's parallel thinning, indexed by neighbourhood code.

    Bit ``i - 1`` of a code is neighbour ``x_i``, counter-clockwise from east (E, NE, N, NW, W, SW, S, SE). A pixel
    is deleted when it has one 8-connected crossing (G1), ``2 <= min(n1, n2) <= 3`` (G2), and G3 (first
    sub-iteration) or G3' (second): the conditions MATLAB's ``bwmorph(..., 'thin', Inf)`` and
    ``skimage.morphology.thin`` implement (Lam, Lee & Suen 1992).
    """
    codes = np.arange(256)
    bits = [((codes >> bit) & 1).astype(bool) for bit in range(8)]
    x = [bits[7], *bits, bits[0]]  # x0 = x8 and x9 = x1: the neighbourhood is circular (x0 is never read)
    crossings = sum((~x[2 * i - 1] & (x[2 * i] | x[2 * i + 1])).astype(int) for i in range(1, 5))
    n1 = sum((x[2 * k - 1] | x[2 * k]).astype(int) for k in range(1, 5))
    n2 = sum((x[2 * k] | x[2 * k + 1]).astype(int) for k in range(1, 5))
    g12 = (crossings == 1) & (np.minimum(n1, n2) >= 2) & (np.minimum(n1, n2) <= 3)
    g3 = ~((x[2] | x[3] | ~x[8]) & x[1])
    g3_prime = ~((x[6] | x[7] | ~x[4]) & x[5])
    return g12 & g3, g12 & g3_prime


_THINNING_TABLES = _thinning_tables()


def thin_edges(mask: np.ndarray) -> np.ndarray:
    """Thin a binary map to 1-pixel-wide curves: the same result as ``skimage.morphology.thin(mask)``.

    scikit-image re-examines every pixel of the image in each sub-iteration; here a pixel is only re-examined when
    a neighbour was deleted since the last sub-iteration that used the same table (any other pixel would get the
    same answer as then). That visits a few pixels per curve instead of the whole image, which matters at 99
    thresholds per image. The pixels to re-examine are de-duplicated with a stamp map (each flat index remembers
    the last position that wrote it), linear time where ``np.unique`` would sort.
    """
    padded = np.pad(np.asarray(mask, dtype=bool), 1).astype(np.uint8)  # zero frame, as skimage's 'constant' mode
    flat = padded.ravel()
    width = padded.shape[1]
    neighbours = np.array([1, 1 - width, -width, -width - 1, -1, width - 1, width, width + 1])
    candidates = np.flatnonzero(flat)
    stamp = np.empty(flat.size, dtype=np.int64)
    recent: list[np.ndarray] = []  # deletions of the last two sub-iterations
    for step in itertools.count():
        if step >= 2:
            changed = np.concatenate(recent)
            if changed.size == 0:  # a fixed point of both tables: skimage's loop would stop here too
                break
            around = (changed[:, None] + neighbours).ravel()
            around = around[flat[around] == 1]
            stamp[around] = np.arange(around.size)
            candidates = around[stamp[around] == np.arange(around.size)]  # each pixel once: its last write
        codes = np.packbits(flat[candidates[:, None] + neighbours], axis=1, bitorder="little")[:, 0]
        deleted = candidates[_THINNING_TABLES[step % 2][codes]]
        flat[deleted] = 0
        recent = [*recent[-1:], deleted]
    return padded[1:-1, 1:-1].astype(bool)


def _thin_edges_reference(mask: np.ndarray) -> np.ndarray:
    """:func:`thin_edges` as first written (``np.unique`` de-duplication): the reference of the speed benchmark."""
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


# ------------------------------------------------------------------------------------------------ ground truth


def seg2bmap(labels: np.ndarray) -> np.ndarray:
    """Boundary map of a label map, as David Martin's ``seg2bmap`` (same size, no resizing).

    A pixel is a boundary when its label differs from its right, lower or lower-right neighbour, so a boundary
    sits on the pixel just before a label change (half a pixel toward the origin). On the last row only the right
    neighbour counts, on the last column only the lower one, and the last pixel is never a boundary: the image
    frame itself is no boundary.
    """
    seg = np.asarray(labels)
    if seg.ndim != 2:
        raise TsnError(f"seg2bmap needs an H x W label map, got shape {seg.shape}")
    right = seg[:, :-1] != seg[:, 1:]
    down = seg[:-1, :] != seg[1:, :]
    boundary = np.zeros(seg.shape, dtype=bool)
    boundary[:-1, :-1] = right[:-1] | down[:, :-1] | (seg[:-1, :-1] != seg[1:, 1:])
    boundary[-1, :-1] = right[-1]
    boundary[:-1, -1] = down[:, -1]
    return boundary


def seism_ground_truth(label_map: np.ndarray) -> np.ndarray:
    """seism's boundary ground truth of a label map: ``thin(seg2bmap(label_map))`` (bool ``H x W``).

    Use the PASCAL-Context ``LabelMap`` (459 classes), or for NYUD under the ATRC protocol the edge PNG itself;
    never the training edge labels (thinned Laplacian), which differ from what seism scores against.
    """
    return thin_edges(seg2bmap(label_map))


def load_bsds_ground_truth(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The annotators' boundary maps (``groundTruth{i}.Boundaries``) of a BSDS500 ``.mat`` file, as bool arrays."""
    try:
        cells = scipy.io.loadmat(path)["groundTruth"]
        return [np.asarray(cell["Boundaries"][0, 0], dtype=bool) for cell in cells.ravel()]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise TsnError(
            f"cannot read BSDS ground truth {path}: {error}; expected a .mat file with a 'groundTruth' cell of "
            "structs with 'Boundaries'"
        ) from None


# ---------------------------------------------------------------------------------------------------- matching


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
        rows, cols = np.nonzero(mask)
        return (rows + self.pad) * self.padded_shape[1] + cols + self.pad

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


_BATCH_NODES = 512
"""Small components are solved together up to this many nodes: one solver call, scans still short."""


class _TruthMatcher:
    """One ground truth of an image, matched against the prediction at every threshold with :func:`_match`'s result.

    Built once per image: the rank map of the true pixels, the map of pixels within ``r`` of one (a predicted
    pixel elsewhere has no partner and never enters the graph), and a cache of solved components.

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
        self.index = disc.index_map(truth)
        self.n_truth = int(np.count_nonzero(truth))
        self.near = np.zeros(self.index.size, dtype=bool)
        self.near[(disc.flat_pixels(truth)[:, None] + disc.steps).ravel()] = True
        self.solved: dict[tuple[bytes, bytes], np.ndarray] = {}

    def match(self, pixels: np.ndarray, which: bool) -> tuple[np.ndarray | None, int]:
        """(positions in ``pixels`` of the matched predicted pixels, or None unless ``which``; number of pairs)."""
        disc = self.disc
        close = np.flatnonzero(self.near[pixels])
        if close.size == 0:
            return (np.empty(0, np.intp) if which else None), 0
        candidates = self.index[pixels[close][:, None] + disc.steps]
        pred_node, step = np.nonzero(candidates >= 0)  # every close pixel has a partner: nodes = 0 .. close.size-1
        # np.unique(ranks, return_inverse=True) by a presence map over the true pixels' ranks: no sort.
        ranks = candidates[pred_node, step]
        present = np.zeros(self.n_truth, dtype=bool)
        present[ranks] = True
        gt_ids = np.flatnonzero(present)
        gt_node = (np.cumsum(present) - 1)[ranks]
        pair_costs = disc.costs[step]
        n_pred, n_gt = close.size, gt_ids.size
        n_components, component = connected_components(
            csr_matrix((np.ones(pred_node.size, bool), (pred_node, n_pred + gt_node)), shape=(n_pred + n_gt,) * 2),
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


# ------------------------------------------------------------------------------------------------ per image


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
    pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike], protocol: str | EdgeProtocol, certify: bool
) -> np.ndarray:
    """:func:`edge_counts`; ``certify=False`` sends every hard component to the solver (the path before the
    maximum-matching certificate of :meth:`_TruthMatcher._certified_sizes`, timed by ``benchmarks/bench_edges.py``)."""
    protocol = get_protocol(protocol)
    soft = _soft_map(pred, protocol)
    truths = _ground_truths(gt, soft, protocol)
    disc = _Disc(soft.shape, protocol.max_dist)
    matchers = [_TruthMatcher(truth, disc, certify) for truth in truths]
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
            binary = thin_edges(binary)
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



def _edge_counts_reference(
    pred: ArrayLike, gt: ArrayLike | Sequence[ArrayLike], protocol: str | EdgeProtocol = "mtl-survey"
) -> np.ndarray:
    """:func:`edge_counts` as first written: one solver call on the whole pair graph per threshold and ground truth.

    Kept as the reference the fast path is tested against (``tests/metrics/test_edges_fast.py``) and timed
    against (``benchmarks/bench_edges.py``); same counts, 3-4 times slower on dense maps.
    """
    protocol = get_protocol(protocol)
    soft = _soft_map(pred, protocol)
    truths = _ground_truths(gt, soft, protocol)
    disc = _Disc(soft.shape, protocol.max_dist)
    indices = [disc.index_map(truth) for truth in truths]
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
            binary = _thin_edges_reference(binary)
        pixels = disc.flat_pixels(binary)
        matched_pred = np.zeros(pixels.size, dtype=bool)
        cnt_r = 0
        for index in indices:
            pred_ids, gt_ids = _match(pixels, index, disc)
            matched_pred[pred_ids] = True
            cnt_r += gt_ids.size
        counts[k] = (cnt_r, sum_r, np.count_nonzero(matched_pred), pixels.size)
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


# ------------------------------------------------------------------------------------------------ folder runs


GroundTruthLoader = Callable[[str], "np.ndarray | list[np.ndarray]"]
"""Returns the boundary map(s) of an image id; see :func:`evaluate_edge_folder`."""


def _read_prediction(path: Path) -> np.ndarray:
    """A saved edge prediction: a single-channel 8-bit PNG."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as error:
        raise TsnError(f"cannot read edge prediction {path}: {error}; re-save it as an 8-bit grayscale PNG") from None
    if array.ndim != 2 or array.dtype != np.uint8:
        raise TsnError(
            f"edge prediction {path} has shape {array.shape} and dtype {array.dtype}; expected an 8-bit grayscale PNG"
        )
    return array


def _source_stamp(path: Path) -> str:
    """Size and modification time of a prediction: cached counts of an overwritten PNG are recomputed."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _load_cached(path: Path, fingerprint: str, stamp: str, n_thresholds: int) -> np.ndarray | None:
    """Counts cached for this protocol and this very prediction file, or None (missing, stale or corrupt)."""
    try:
        with np.load(path) as cached:
            if str(cached["protocol"]) != fingerprint or str(cached["source"]) != stamp:
                return None
            counts = cached["counts"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return counts if counts.shape == (n_thresholds, 4) else None


def _image_job(job: tuple[str, Path, GroundTruthLoader, EdgeProtocol, Path | None]) -> tuple[str, np.ndarray]:
    """Counts of one image of a folder run, from the cache when possible (runs in a worker process)."""
    image_id, pred_path, gt_loader, protocol, cache_path = job
    stamp = _source_stamp(pred_path)
    if cache_path is not None:
        cached = _load_cached(cache_path, protocol.fingerprint(), stamp, len(protocol.thresholds))
        if cached is not None:
            return image_id, cached
    try:
        counts = edge_counts(_read_prediction(pred_path), gt_loader(image_id), protocol)
    except TsnError as error:
        raise TsnError(f"image {image_id}: {error}") from None
    if cache_path is not None:
        with atomic_write(cache_path) as handle:
            np.savez(handle, counts=counts, protocol=protocol.fingerprint(), source=stamp)
    return image_id, counts


def evaluate_edge_folder(
    pred_dir: str | os.PathLike[str],
    gt_loader: GroundTruthLoader,
    ids: Sequence[str],
    protocol: str | EdgeProtocol = "mtl-survey",
    workers: int | None = os.cpu_count(),
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the PNG predictions ``<pred_dir>/<id>.png`` of ``ids`` against ``gt_loader(id)``, on all cores.

    ``gt_loader`` returns the image's boundary map (or a list of them); with ``workers > 1`` it must be picklable
    (a module-level function or a ``functools.partial`` of one). Per-image counts are cached as
    ``<cache_dir>/<id>.npz`` (written atomically, keyed by the protocol and the PNG's size and time), so a
    rerun after an interruption only evaluates the missing images. Returns :func:`summarize_edge_counts`'s dict.
    """
    protocol = get_protocol(protocol)
    ids = list(ids)
    if not ids:
        raise TsnError("no image id to evaluate; pass the ids of the edge predictions to score")
    pred_root = Path(pred_dir)
    missing = [pred_root / f"{image_id}.png" for image_id in ids if not (pred_root / f"{image_id}.png").is_file()]
    if missing:
        raise TsnError(
            f"missing edge prediction {missing[0]} ({len(missing)} of {len(ids)} missing); "
            "save a PNG for every image id before evaluating"
        )
    cache_root = Path(cache_dir) if cache_dir is not None else None
    jobs = [
        (image_id, pred_root / f"{image_id}.png", gt_loader, protocol, cache_root and cache_root / f"{image_id}.npz")
        for image_id in ids
    ]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    with contextlib.ExitStack() as stack:
        if n_workers > 1:
            pool = stack.enter_context(multiprocessing.get_context().Pool(n_workers))
            outputs: Iterable[tuple[str, np.ndarray]] = pool.imap_unordered(_image_job, jobs)
        else:
            outputs = map(_image_job, jobs)
        bar = stack.enter_context(
            tqdm(outputs, total=len(jobs), desc=f"edges ({protocol.name})", unit="img", disable=not progress)
        )
        results = dict(bar)
    return summarize_edge_counts(np.stack([results[image_id] for image_id in ids]), protocol)
