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

from tsn.metrics.edges.counts import COUNT_FIELDS, EdgeMetric, edge_counts, summarize_edge_counts
from tsn.metrics.edges.folder import evaluate_edge_folder
from tsn.metrics.edges.ground_truth import load_bsds_ground_truth, seg2bmap, seism_ground_truth
from tsn.metrics.edges.matching import correspond_pixels
from tsn.metrics.edges.protocols import PROTOCOLS, EdgeProtocol, bsds_thresholds, get_protocol
from tsn.metrics.edges.thinning import thin_edges

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
