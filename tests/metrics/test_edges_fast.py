"""The fast edge-count path (per-component matching, stamp-deduplicated thinning) against the path it replaced.

``edge_oracles.edge_counts_reference`` is the first implementation (one LAPJVsp call on the whole pair graph per
threshold and ground truth, ``np.unique`` thinning); every count of the fast path must equal it exactly, including
ties (quantised maps, equidistant pixels, duplicated annotators), empty maps and several ground truths.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.morphology import thin

import edge_oracles
from tsn.metrics.edges import (
    bsds_thresholds,
    edge_counts,
    get_protocol,
    load_bsds_ground_truth,
    matching,
    seism_ground_truth,
    thinning,
)


def _shared_dir() -> Path:
    env = os.environ.get("TSN_SHARED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared"


BSDS_SAMPLE = _shared_dir() / "benchmarks" / "bsds500_sample"
FEW_THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99)


def _assert_same_counts(pred, gt, protocol) -> None:
    expected = edge_oracles.edge_counts_reference(pred, gt, protocol)
    np.testing.assert_array_equal(edge_counts(pred, gt, protocol), expected)


def _label_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Random blobs: a label map with curved, touching regions."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 3)
    return np.digitize(noise, np.quantile(noise, [0.25, 0.5, 0.75]))


def _network_like(gt: np.ndarray, seed: int) -> np.ndarray:
    """A sigmoid-like soft map: a blurred, shifted copy of the truth over smooth noise that is above 0.01 almost
    everywhere (low thresholds give large blobs), quantised to uint8 like a saved PNG."""
    rng = np.random.default_rng(seed)
    ridge = ndimage.gaussian_filter(np.roll(gt.astype(float), 1, axis=0), 1.2)
    logits = -4 + 30 * ridge + 2 * ndimage.gaussian_filter(rng.standard_normal(gt.shape), 2) * 3
    return (255 / (1 + np.exp(-logits))).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_network_like_maps_one_and_several_truths(seed: int) -> None:
    labels = _label_map((72, 96), seed)
    gt = seism_ground_truth(labels)
    pred = _network_like(gt, seed)
    # All 99 thresholds once; a spread of 10 (low ones included: the large blobs) for the other seeds.
    _assert_same_counts(pred, gt, "mtl-survey" if seed == 0 else get_protocol("mtl-survey", thresholds=FEW_THRESHOLDS))
    # Several annotators, one a duplicate (every match ties between them) and one shifted by a pixel.
    annotators = [gt, gt.copy(), np.roll(gt, 1, axis=1)]
    _assert_same_counts(pred, annotators, get_protocol("bsds", thresholds=FEW_THRESHOLDS))
    _assert_same_counts(pred, gt, get_protocol("astmt", thresholds=FEW_THRESHOLDS))


def test_random_quantised_maps_full_of_ties() -> None:
    rng = np.random.default_rng(7)
    for levels in (3, 17):
        pred = (rng.integers(0, levels, (40, 56)) * (255 // (levels - 1))).astype(np.uint8)
        gts = [rng.random((40, 56)) < 0.08, rng.random((40, 56)) < 0.2]
        _assert_same_counts(pred, gts[0], get_protocol("mtl-survey", thresholds=FEW_THRESHOLDS))
        _assert_same_counts(pred, gts, get_protocol("bsds", thresholds=FEW_THRESHOLDS, max_dist=0.03))


def test_structured_maps_with_equidistant_pixels() -> None:
    shape = (30, 40)
    gt = np.zeros(shape, bool)
    gt[10, 5:30] = gt[20, 5:30] = True  # two parallel truths, a predicted line halfway between them
    pred = np.zeros(shape)
    pred[15, 3:35] = 0.8
    pred[12:19, 20] = 0.6  # a crossing stroke: stars and shared true pixels
    pred[5, 5] = 1.0  # a lone pixel near one end
    for max_dist in (0.05, 0.1, 0.2):
        _assert_same_counts(pred, gt, get_protocol("mtl-survey", thresholds=FEW_THRESHOLDS, max_dist=max_dist))
        _assert_same_counts(pred, [gt, gt[::-1]], get_protocol("bsds", thresholds=FEW_THRESHOLDS, max_dist=max_dist))


def test_empty_maps() -> None:
    gt = seism_ground_truth(_label_map((32, 32), 3))
    protocol = get_protocol("mtl-survey", thresholds=FEW_THRESHOLDS)
    _assert_same_counts(np.zeros((32, 32)), gt, protocol)  # nothing predicted
    _assert_same_counts(np.ones((32, 32)), np.zeros((32, 32), bool), protocol)  # nothing to find
    _assert_same_counts(np.zeros((32, 32)), [np.zeros((32, 32), bool)] * 2, protocol)
    far = np.zeros((32, 32))
    far[0, 0] = 1.0  # predicted pixels, none within reach of a true one
    _assert_same_counts(far, np.pad(np.ones((4, 4), bool), ((20, 8), (20, 8))), protocol)


def test_component_solver_returns_the_whole_graph_pairs() -> None:
    """Solving whole components separately (and reusing solved ones) picks exactly the predicted pixels that one
    LAPJVsp call on the whole graph picks, ties included: the basis of identical multi-annotator counts."""
    gt = seism_ground_truth(_label_map((64, 80), 5))
    pred = _network_like(gt, 5) / 255.0
    disc = matching._Disc(gt.shape, 0.02)
    matcher = matching._TruthMatcher(gt, disc)
    for threshold in (0.02, 0.1, 0.1, 0.4, 0.8):  # 0.1 twice: the second time every component is looked up
        pixels = disc.flat_pixels(thin(pred >= threshold))
        positions, n_pairs = matcher.match(pixels, which=True)
        whole_pred, whole_gt = matching._match(pixels, disc.index_map(gt), disc)
        np.testing.assert_array_equal(np.sort(positions), np.sort(whole_pred))
        assert n_pairs == whole_gt.size
        assert matcher.match(pixels, which=False) == (None, n_pairs)


def test_thin_edges_equals_reference_and_skimage_on_dense_thresholds() -> None:
    soft = ndimage.gaussian_filter(np.random.default_rng(4).random((60, 70)), 1.5)
    for threshold in np.quantile(soft, [0.05, 0.3, 0.6, 0.9]):
        mask = soft >= threshold
        np.testing.assert_array_equal(thinning.thin_edges(mask), thin(mask))
        np.testing.assert_array_equal(edge_oracles.thin_edges_reference(mask), thin(mask))


@pytest.mark.skipif(not BSDS_SAMPLE.is_dir(), reason="BSDS500 sample not found (../shared/benchmarks/bsds500_sample)")
def test_bsds_sample_counts_equal_the_reference() -> None:
    """Full-size BSDS images (5 annotators; a dense 1-annotator variant) at 11 of the 99 BSDS thresholds."""
    thresholds = bsds_thresholds(99)[::9]
    pred = np.asarray(Image.open(BSDS_SAMPLE / "png" / "2018.png"))
    gts = load_bsds_ground_truth(BSDS_SAMPLE / "groundTruth" / "2018.mat")
    _assert_same_counts(pred, gts, get_protocol("bsds", thresholds=thresholds))
    pred = np.asarray(Image.open(BSDS_SAMPLE / "png" / "8068.png"))
    gts = load_bsds_ground_truth(BSDS_SAMPLE / "groundTruth" / "8068.mat")
    dense = ndimage.gaussian_filter(pred / 255.0, 1.0)
    dense = (255 * dense / dense.max()).astype(np.uint8)
    _assert_same_counts(dense, gts[:1], get_protocol("mtl-survey", thresholds=thresholds))


def _shifted_line(length: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A true line and the same line shifted one pixel along itself, with r = 1 (4-neighbour pairs only)."""
    shape = (3, length + 2)
    pred, gt = np.zeros(shape, bool), np.zeros(shape, bool)
    pred[1, : length + 1] = gt[1, 1 : length + 2] = True
    return pred, gt, 1.0 / float(np.hypot(*shape))


@pytest.mark.parametrize(("length", "expected"), [(60, 61), (98, 99), (99, 99), (140, 140)])
def test_one_annotator_count_is_not_always_the_maximum_matching(length: int, expected: int) -> None:
    """The outlier cost is finite: matching all ``length + 1`` predicted pixels (each one pixel off, cost 101) beats
    leaving the two ends unmatched (B = 10001 with r = 1) only while ``100 * length + 101 < B``; at equality the two
    sizes tie and the solver keeps the smaller one. A maximum matching (Hopcroft-Karp) always has ``length + 1``
    pairs, so the fast path may use it only where its bound proves the sizes equal, and must agree here."""
    pred, gt, max_dist = _shifted_line(length)
    protocol = get_protocol("mtl-survey", thresholds=(0.5,), max_dist=max_dist, thin_prediction=False)
    reference = edge_oracles.edge_counts_reference(pred.astype(float), gt, protocol)
    assert reference[0, 0] == expected
    np.testing.assert_array_equal(edge_counts(pred.astype(float), gt, protocol), reference)


def test_one_annotator_counts_on_mixed_component_sizes() -> None:
    """Random, tie-heavy and structured maps with one annotator and a radius giving both kinds of components:
    small ones whose count is certified from a maximum matching and large ones left to the exact solver."""
    rng = np.random.default_rng(11)
    shape = (48, 150)
    gt = seism_ground_truth(_label_map(shape, 11))
    gt[40, 5:140] = True  # a long straight truth, as in the counterexample above
    soft = ndimage.gaussian_filter(rng.random(shape), 1.0)
    soft = (soft - soft.min()) / (soft.max() - soft.min())
    soft[40, 6:141] = 1.0  # its copy shifted one pixel along it
    quantised = (np.round(soft * 4) * 63).astype(np.uint8)  # 5 levels: many equidistant ties
    for max_dist in (0.0065, 0.02):
        protocol = get_protocol("mtl-survey", thresholds=FEW_THRESHOLDS, max_dist=max_dist)
        _assert_same_counts(soft, gt, protocol)
        _assert_same_counts(quantised, gt, protocol)
        _assert_same_counts(_network_like(gt, 11), gt, protocol)


@pytest.mark.parametrize("share", [0.0, 0.25, float("inf")])
def test_thin_edges_whole_image_and_candidate_sub_iterations_agree_with_skimage(share: float, monkeypatch) -> None:
    """Every sub-iteration examining the whole image (share 0), only the re-examined pixels (inf), or the default
    mix (blobs whole, curves by candidates) gives scikit-image's result: blobs, thin curves and odd shapes."""
    monkeypatch.setattr(thinning, "_WHOLE_IMAGE_SHARE", share)
    rng = np.random.default_rng(21)
    masks = [np.ones((1, 1), bool), np.ones((1, 9), bool), np.ones((9, 1), bool), np.ones((6, 7), bool)]
    for shape in [(40, 56), (17, 3), (3, 29), (64, 48)]:
        soft = ndimage.gaussian_filter(rng.random(shape), 2.0)
        masks += [soft >= q for q in np.quantile(soft, [0.02, 0.3, 0.7, 0.95])]  # a blob over most of the image too
        masks.append(rng.random(shape) < 0.5)
    gt = seism_ground_truth(_label_map((60, 70), 21))
    masks.append(ndimage.binary_dilation(gt, iterations=3))  # a thick network: many sub-iterations
    for mask in masks:
        np.testing.assert_array_equal(thinning.thin_edges(mask), thin(mask))


def test_partner_lists_are_the_disc_scan_in_pixel_then_step_order() -> None:
    """The precomputed candidate lists give, for any set of predicted pixels, exactly the pairs (and their order)
    of scanning each pixel's disc in step order: the pair graph handed to the solver is unchanged."""
    rng = np.random.default_rng(3)
    gt = seism_ground_truth(_label_map((50, 66), 3))
    for max_dist in (0.0075, 0.03):
        disc = matching._Disc(gt.shape, max_dist)
        first, ranks, steps = matching._partner_lists(gt, disc)
        index = disc.index_map(gt)
        pixels = disc.flat_pixels(rng.random(gt.shape) < 0.3)
        candidates = index[pixels[:, None] + disc.steps]
        pred_rank, step = np.nonzero(candidates >= 0)
        slots = np.concatenate([np.arange(first[p], first[p + 1]) for p in pixels])
        np.testing.assert_array_equal(ranks[slots], candidates[pred_rank, step])
        np.testing.assert_array_equal(steps[slots], step)
        lengths = first[pixels + 1] - first[pixels]
        np.testing.assert_array_equal(np.repeat(np.arange(pixels.size), lengths), pred_rank)


def test_flat_pixels_equals_the_row_column_formula() -> None:
    rng = np.random.default_rng(5)
    for shape in [(1, 1), (7, 3), (3, 40), (48, 33)]:
        mask = rng.random(shape) < 0.4
        for max_dist in (0.0075, 0.2):
            disc = matching._Disc(shape, max_dist)
            rows, cols = np.nonzero(mask)
            expected = (rows + disc.pad) * disc.padded_shape[1] + cols + disc.pad
            for variant in (mask, np.asfortranarray(mask), mask.astype(np.uint8)):
                np.testing.assert_array_equal(disc.flat_pixels(variant), expected)
