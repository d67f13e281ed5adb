"""Tests of the MATLAB-free, seism-compatible edge benchmark (tsn.metrics.edges and tsn.metrics.edge_nms)."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from scipy import ndimage
from skimage.morphology import thin

from tsn.errors import TsnError
from tsn.metrics.edge_nms import edge_nms
from tsn.metrics.edges import (
    PROTOCOLS,
    EdgeMetric,
    bsds_thresholds,
    correspond_pixels,
    edge_counts,
    evaluate_edge_folder,
    get_protocol,
    load_bsds_ground_truth,
    seg2bmap,
    seism_ground_truth,
    summarize_edge_counts,
    thin_edges,
)
from tsn.metrics.edges import folder as edge_folder


def _shared_dir() -> Path:
    env = os.environ.get("TSN_SHARED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared"


BSDS_SAMPLE = _shared_dir() / "benchmarks" / "bsds500_sample"


def _line(shape: tuple[int, int], row: int, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[row, cols] = True
    return mask


def _circle_case(size: int = 121, radius: int = 30, shift: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A disc label map's seism ground truth, and a uint8 soft ring (sigma 1.5 px) shifted down by ``shift``
    over uniform noise below 0.25."""
    rows, cols = np.mgrid[:size, :size]
    centre = size // 2
    gt = seism_ground_truth(np.hypot(rows - centre, cols - centre) <= radius)
    ring = np.exp(-((np.hypot(rows - centre - shift, cols - centre) - radius) ** 2) / (2 * 1.5**2))
    noise = 0.25 * np.random.default_rng(seed).random(ring.shape)
    return (255 * np.maximum(ring, noise)).astype(np.uint8), gt


# ----------------------------------------------------------------------------------------------- seg2bmap / GT


def test_seg2bmap_hand_made_maps() -> None:
    labels = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    # (0,1),(1,1) differ from their right neighbour, (1,0) from its lower one; last row compares only along the
    # row, last column only down it ((1,2) != (2,2)); the last pixel is never a boundary.
    expected = np.array([[0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(seg2bmap(labels), expected)
    # A lower-right neighbour alone makes a boundary.
    np.testing.assert_array_equal(seg2bmap(np.array([[1, 1], [1, 2]])), [[True, True], [True, False]])
    # A vertical split: the boundary is the column just before the change, last row included.
    split = np.repeat([[0, 0, 1, 1]], 4, axis=0)
    np.testing.assert_array_equal(seg2bmap(split), np.repeat([[False, True, False, False]], 4, axis=0))
    assert not seg2bmap(np.full((5, 7), 3)).any()


@settings(max_examples=40, deadline=None)
@given(arrays(np.int8, st.tuples(st.integers(1, 8), st.integers(1, 8)), elements=st.integers(0, 3)))
def test_seg2bmap_properties(labels: np.ndarray) -> None:
    boundary = seg2bmap(labels)
    assert boundary.shape == labels.shape and boundary.dtype == bool
    # Only label changes matter, not the label values.
    np.testing.assert_array_equal(seg2bmap(np.array([7, 2, 9, 4])[labels]), boundary)
    assert boundary.any() == (np.unique(labels).size > 1)
    assert not boundary[-1, -1]


def test_seism_ground_truth_is_thinned_seg2bmap() -> None:
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[5:20, 8:30] = 1
    labels[12:25, 20:35] = 2
    gt = seism_ground_truth(labels)
    np.testing.assert_array_equal(gt, thin(seg2bmap(labels)))
    np.testing.assert_array_equal(thin(gt), gt)  # thinning is a fixed point


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24))), st.integers(0, 2))
def test_thin_edges_equals_skimage(mask: np.ndarray, thickening: int) -> None:
    if thickening:  # thick blobs need many sub-iterations
        mask = ndimage.binary_dilation(mask, iterations=thickening)
    thinned = thin_edges(mask)
    np.testing.assert_array_equal(thinned, thin(mask))
    np.testing.assert_array_equal(thin_edges(thinned), thinned)


def test_thin_edges_equals_skimage_on_thresholded_soft_maps() -> None:
    soft = ndimage.gaussian_filter(np.random.default_rng(1).random((64, 80)), 2.0)
    for threshold in np.quantile(soft, [0.2, 0.5, 0.8, 0.95]):
        np.testing.assert_array_equal(thin_edges(soft >= threshold), thin(soft >= threshold))


def test_prediction_is_thinned_before_matching() -> None:
    band = np.zeros((40, 30), dtype=np.float64)
    band[10:13, 5:25] = 1.0  # a 3-pixel-thick line
    gt = _line(band.shape, 11, slice(5, 25))
    counts = edge_counts(band, gt, get_protocol("mtl-survey", thresholds=(0.5,)))
    assert counts[0, 3] == np.count_nonzero(thin(band > 0.5))
    assert counts[0, 3] < np.count_nonzero(band)
    unthinned = edge_counts(band, gt, get_protocol("mtl-survey", thresholds=(0.5,), thin_prediction=False))
    assert unthinned[0, 3] == np.count_nonzero(band)


# ----------------------------------------------------------------------------------------------------- matching


def test_parallel_lines_within_and_beyond_radius() -> None:
    shape = (30, 40)  # hypot = 50, so max_dist 0.1 gives r = 5 px
    gt = _line(shape, 10, slice(5, 25))
    near_pred, near_gt = correspond_pixels(_line(shape, 13, slice(5, 25)), gt, 0.1)
    assert near_pred.sum() == near_gt.sum() == 20
    far_pred, far_gt = correspond_pixels(_line(shape, 16, slice(5, 25)), gt, 0.1)
    assert far_pred.sum() == far_gt.sum() == 0


@pytest.mark.parametrize(("offset", "matched"), [((3, 4), True), ((0, 5), True), ((4, 4), False), ((0, 6), False)])
def test_match_radius_is_inclusive(offset: tuple[int, int], matched: bool) -> None:
    shape = (30, 40)  # r = 5 exactly: dy^2 + dx^2 <= 25 matches
    pred, gt = np.zeros(shape, bool), np.zeros(shape, bool)
    gt[10, 10] = True
    pred[10 + offset[0], 10 + offset[1]] = True
    matched_pred, matched_gt = correspond_pixels(pred, gt, 0.1)
    assert matched_pred.any() == matched_gt.any() == matched


def test_matching_maximises_cardinality_before_distance() -> None:
    shape = (30, 40)
    pred, gt = np.zeros(shape, bool), np.zeros(shape, bool)
    gt[10, 10] = gt[10, 15] = True
    pred[10, 11] = True  # 1 px from the first true pixel, 4 px from the second
    pred[10, 6] = True  # 4 px from the first only
    matched_pred, matched_gt = correspond_pixels(pred, gt, 0.1)
    # The nearest pairing (10,11)-(10,10) would leave a pixel unmatched; both pairs are kept instead.
    np.testing.assert_array_equal(matched_pred, pred)
    np.testing.assert_array_equal(matched_gt, gt)


def test_matching_prefers_the_shorter_pairs() -> None:
    shape = (30, 40)
    gt = _line(shape, 11, slice(5, 25))
    pred = _line(shape, 10, slice(5, 25)) | _line(shape, 13, slice(5, 25))
    matched_pred, matched_gt = correspond_pixels(pred, gt, 0.1)
    np.testing.assert_array_equal(matched_pred, _line(shape, 10, slice(5, 25)))
    assert matched_gt.sum() == 20


def test_several_ground_truths_sum_recall_and_share_precision() -> None:
    shape = (30, 40)
    pred = _line(shape, 10, slice(5, 25)).astype(np.float64)
    annotators = [_line(shape, 10, slice(5, 25)), _line(shape, 12, slice(5, 25))]
    counts = edge_counts(pred, annotators, get_protocol("bsds", thresholds=(0.5,), max_dist=0.1))
    # Every predicted pixel matches both annotators: recall counts both, precision each pixel once.
    np.testing.assert_array_equal(counts, [[40, 40, 20, 20]])


def test_counts_are_deterministic() -> None:
    pred, gt = _circle_case(seed=3)
    first = edge_counts(pred, gt, "mtl-survey")
    np.testing.assert_array_equal(edge_counts(pred, gt, "mtl-survey"), first)
    assert (first[:, 0] == first[:, 2]).all()  # one ground truth: cntR == cntP == matching size


# -------------------------------------------------------------------------------------------------- aggregation


def _one_image(*rows: tuple[int, int, int, int]) -> np.ndarray:
    return np.array([rows], dtype=np.int64)


def test_seism_aggregation_hand_computed() -> None:
    protocol = get_protocol("mtl-survey", thresholds=(0.2, 0.5, 0.8))
    image_a = [(8, 10, 8, 16), (5, 10, 4, 5), (0, 10, 0, 0)]  # F 8/13, 8/13 (tie: first wins), 0
    image_b = [(9, 10, 3, 10), (6, 10, 6, 6), (0, 10, 0, 0)]  # F 0.45, 0.75, 0
    result = summarize_edge_counts(np.array([image_a, image_b]), protocol)
    # Totals: t=0.2 (17,20,11,26) F=374/662; t=0.5 (11,20,10,11) F=220/321; t=0.8 nothing predicted: R=0, P=1.
    assert result["odsF"] == pytest.approx(220 / 321)
    assert (result["odsP"], result["odsR"], result["odsT"]) == pytest.approx((10 / 11, 0.55, 0.5))
    assert result["curve"]["f"] == pytest.approx([374 / 662, 220 / 321, 0.0])
    assert result["curve"]["precision"][2] == 1.0 and result["curve"]["recall"][2] == 0.0
    # OIS: image A at t=0.2 (first of a tie), image B at t=0.5: (14, 20, 14, 22) -> F = 28/42.
    assert result["oisF"] == pytest.approx(2 / 3)
    assert (result["oisP"], result["oisR"]) == pytest.approx((14 / 22, 0.7))
    assert result["n_images"] == 2 and result["protocol"]["name"] == "mtl-survey"


def test_average_precision_seism_keeps_the_empty_prediction_point() -> None:
    counts = _one_image((8, 10, 8, 16), (5, 10, 8, 10), (0, 10, 0, 0))  # (R, P) = (.8,.5), (.5,.8), empty
    seism = summarize_edge_counts(counts, get_protocol("mtl-survey", thresholds=(0.2, 0.5, 0.8)))
    # Sum of P on the recall grid 0..0.8: 1 - 0.4R up to 0.5 (45.9), then 1.3 - R (19.35); grid > 0.8 dropped.
    assert seism["AP"] == pytest.approx((45.9 + 19.35) / 100)
    bsds = summarize_edge_counts(counts, get_protocol("bsds", thresholds=(0.2, 0.5, 0.8)))
    # BSDS: the empty prediction has P = 0, so the first piece is 1.6R (20.4).
    assert bsds["AP"] == pytest.approx((20.4 + 19.35) / 100)


def test_average_precision_needs_two_recall_values() -> None:
    counts = _one_image((10, 10, 10, 10), (10, 10, 10, 12))
    result = summarize_edge_counts(counts, get_protocol("mtl-survey", thresholds=(0.3, 0.6)))
    assert result["AP"] == 0.0 and result["odsF"] == 1.0


def test_degenerate_conventions_without_ground_truth_or_prediction() -> None:
    protocol = get_protocol("mtl-survey", thresholds=(0.5,))
    # No true pixel but some predicted: R = 1, P = 0 (F = 0) for the image and the dataset.
    no_truth = summarize_edge_counts(_one_image((0, 0, 0, 5)), protocol)
    assert (no_truth["curve"]["recall"], no_truth["curve"]["precision"]) == ([1.0], [0.0])
    assert (no_truth["oisR"], no_truth["oisP"], no_truth["oisF"]) == (1.0, 0.0, 0.0)
    # Nothing at all: gather_measure lets the empty prediction win (R = 0, P = 1), eval_cont the empty truth.
    nothing = summarize_edge_counts(_one_image((0, 0, 0, 0)), protocol)
    assert (nothing["curve"]["recall"], nothing["curve"]["precision"]) == ([0.0], [1.0])
    assert (nothing["oisR"], nothing["oisP"]) == (1.0, 0.0)


def test_bsds_ods_is_interpolated_between_thresholds() -> None:
    counts = _one_image((8, 10, 8, 16), (5, 10, 8, 10))  # (R, P) = (.8, .5) and (.5, .8): F = 8/13 at both
    bsds = summarize_edge_counts(counts, get_protocol("bsds", thresholds=(0.2, 0.5)))
    # On the segment P + R = 1.3 and PR = 0.4225 - 0.09 (d - 1/2)^2; the closest steps are d = 1/2 -+ 1/198.
    assert bsds["odsF"] == pytest.approx(2 * (0.4225 - 0.09 / 198**2) / 1.3, abs=1e-12)
    seism = summarize_edge_counts(counts, get_protocol("mtl-survey", thresholds=(0.2, 0.5)))
    assert seism["odsF"] == pytest.approx(8 / 13) and seism["odsT"] == 0.2


def test_bad_counts_shape_is_refused() -> None:
    with pytest.raises(TsnError, match="expected"):
        summarize_edge_counts(np.zeros((1, 3, 4)), "mtl-survey")


# --------------------------------------------------------------------------------------------------- protocols


def test_protocol_presets() -> None:
    survey, astmt, atrc, nyud, bsds = (PROTOCOLS[name] for name in ("mtl-survey", "astmt", "atrc", "atrc-nyud", "bsds"))
    assert len(survey.thresholds) == 99 and survey.thresholds[0] == 0.01 and survey.thresholds[-1] == 0.99
    assert (survey.nms, survey.comparison, survey.max_dist, survey.image_set) == (False, ">=", 0.0075, "test_new")
    assert len(astmt.thresholds) == 101 and astmt.thresholds[:2] == (0.001, 0.01) and astmt.thresholds[-1] == 0.999
    assert (astmt.nms, astmt.comparison, astmt.image_set) == (True, ">", "val")
    assert (atrc.max_dist, nyud.max_dist, atrc.image_set) == (0.0075, 0.011, "test_new")
    assert (bsds.thin_ground_truth, bsds.aggregation) == (False, "bsds")
    assert bsds_thresholds(5) == pytest.approx((1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6))


def test_protocol_overrides_are_recorded_and_checked() -> None:
    protocol = get_protocol("atrc", max_dist=0.011)
    assert protocol.to_dict()["modified"] == ["max_dist"]
    assert get_protocol("ASTMT") is PROTOCOLS["astmt"]
    with pytest.raises(TsnError, match="unknown edge protocol"):
        get_protocol("hed")
    with pytest.raises(TsnError, match="unknown edge protocol option"):
        get_protocol("astmt", max_distance=0.01)
    with pytest.raises(TsnError, match="increasing"):
        get_protocol("astmt", thresholds=(0.5, 0.2))


# ---------------------------------------------------------------------------------------------------------- NMS


def test_nms_keeps_the_ridge_across_a_vertical_line() -> None:
    soft = np.zeros((20, 20), dtype=np.float32)
    soft[:, 8:13] = [0.25, 0.5, 1.0, 0.5, 0.25]
    out = edge_nms(soft)
    # Inside the border ramp only the ridge column survives, at its full strength.
    np.testing.assert_array_equal(out[5:15, 8:13], np.tile([0, 0, 1, 0, 0], (10, 1)))


def test_nms_uses_the_given_orientation_and_ramps_the_border() -> None:
    soft = np.zeros((20, 30), dtype=np.float32)
    soft[8:11, :] = [[0.5], [1.0], [0.5]]
    across = edge_nms(soft, np.full(soft.shape, np.pi / 2, dtype=np.float32))
    np.testing.assert_array_equal(across[[8, 10], 10], [0, 0])
    # Along the line nothing beats its neighbours; the 5 outer columns are scaled by d / 5.
    np.testing.assert_allclose(across[9, :6], [0, 0.2, 0.4, 0.6, 0.8, 1.0], rtol=1e-6)
    plateau = edge_nms(np.ones((12, 12), dtype=np.float32), np.zeros((12, 12), dtype=np.float32))
    assert plateau[1, 1] == pytest.approx(0.04) and plateau[0].max() == 0 and plateau[6, 6] == 1


# ------------------------------------------------------------------------------------------- synthetic circles


def test_synthetic_circles() -> None:
    """A noisy soft ring around a disc's boundary (r = 0.0075 * hypot(121, 121) = 1.28 px)."""
    scores = {}
    for shift in (0, 1, 3):
        pred, gt = _circle_case(shift=shift)
        metric = EdgeMetric("mtl-survey")
        metric.update(pred, gt)
        scores[shift] = metric.compute()
    # Above the noise (0.25) only the ring is left: its thinned ridge lies on the boundary (within r).
    assert scores[0]["odsF"] > 0.97 and scores[0]["odsT"] > 0.25
    assert scores[0]["oisF"] == scores[0]["odsF"]  # one image: per-image best = dataset best
    # Shifting the ring by more than r loses most matches.
    assert scores[0]["odsF"] >= scores[1]["odsF"] > scores[3]["odsF"]
    assert scores[3]["odsF"] < 0.6
    nms = EdgeMetric("astmt")
    nms.update(*_circle_case())
    assert nms.compute()["odsF"] > 0.97


# ------------------------------------------------------------------------------------------ metric / folder API


def test_edge_metric_accepts_floats_and_uint8() -> None:
    pred, gt = _circle_case()
    as_uint8, as_float = EdgeMetric("mtl-survey"), EdgeMetric("mtl-survey")
    as_uint8.update(pred, gt)
    as_float.update(pred / 255.0, gt.astype(np.float32)[None])
    assert as_uint8.compute()["odsF"] == as_float.compute()["odsF"]
    as_float.reset()
    assert as_float.n_images == 0
    empty = as_float.compute()
    assert math.isnan(empty["odsF"]) and empty["n_images"] == 0
    with pytest.raises(TsnError, match=r"outside \[0, 1\]"):
        as_float.update(pred * 2.0, gt)
    with pytest.raises(TsnError, match="seism_ground_truth"):
        as_float.update(pred, gt.astype(np.int32) * 3)
    with pytest.raises(TsnError, match="shape"):
        as_float.update(pred[:-1], gt)


def _load_npy_gt(root: Path, image_id: str) -> np.ndarray:
    return np.load(root / f"{image_id}.npy")


@pytest.fixture()
def folder_case(tmp_path: Path) -> tuple[Path, functools.partial, list[str], list[tuple[np.ndarray, np.ndarray]]]:
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    ids, cases = [], []
    for index, shift in enumerate((0, 1, 2)):
        pred, gt = _circle_case(size=61, radius=15, shift=shift, seed=index)
        image_id = f"img_{index}"
        Image.fromarray(pred).save(pred_dir / f"{image_id}.png")
        np.save(gt_dir / f"{image_id}.npy", gt)
        ids.append(image_id)
        cases.append((pred, gt))
    return pred_dir, functools.partial(_load_npy_gt, gt_dir), ids, cases


def test_folder_evaluator_matches_edge_metric(folder_case, tmp_path: Path) -> None:
    pred_dir, loader, ids, cases = folder_case
    metric = EdgeMetric("astmt")
    for pred, gt in cases:
        metric.update(pred, gt)
    expected = metric.compute()
    parallel = evaluate_edge_folder(pred_dir, loader, ids, "astmt", workers=2, cache_dir=tmp_path / "c", progress=False)
    assert parallel == expected
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [f"{i}.npz" for i in ids]


def test_folder_evaluator_resumes_from_cached_counts(folder_case, tmp_path: Path, monkeypatch) -> None:
    pred_dir, loader, ids, _ = folder_case
    cache = tmp_path / "cache"
    first = evaluate_edge_folder(pred_dir, loader, ids[:2], workers=1, cache_dir=cache, progress=False)

    calls: list[int] = []
    real_counts = edge_folder.edge_counts

    def counting(*args, **kwargs):
        calls.append(1)
        return real_counts(*args, **kwargs)

    monkeypatch.setattr(edge_folder, "edge_counts", counting)
    again = evaluate_edge_folder(pred_dir, loader, ids[:2], workers=1, cache_dir=cache, progress=False)
    assert again == first and not calls
    evaluate_edge_folder(pred_dir, loader, ids, workers=1, cache_dir=cache, progress=False)
    assert len(calls) == 1  # only the image not cached yet
    (cache / f"{ids[0]}.npz").write_bytes(b"truncated")  # a corrupt cache entry is recomputed
    evaluate_edge_folder(pred_dir, loader, ids, "mtl-survey", workers=1, cache_dir=cache, progress=False)
    assert len(calls) == 2
    evaluate_edge_folder(pred_dir, loader, ids, "astmt", workers=1, cache_dir=cache, progress=False)
    assert len(calls) == 5  # another protocol never reuses counts


def test_folder_evaluator_names_a_missing_prediction(folder_case) -> None:
    pred_dir, loader, ids, _ = folder_case
    with pytest.raises(TsnError, match=r"missing edge prediction .*img_9\.png"):
        evaluate_edge_folder(pred_dir, loader, [*ids, "img_9"], workers=1, progress=False)
    (pred_dir / "img_0.png").write_bytes(b"not a png")
    with pytest.raises(TsnError, match=r"img_0\.png"):
        evaluate_edge_folder(pred_dir, loader, ids, workers=1, progress=False)


# ------------------------------------------------------------------------------------------------ BSDS parity


@pytest.mark.skipif(not BSDS_SAMPLE.is_dir(), reason="BSDS500 sample not found (../shared/benchmarks/bsds500_sample)")
def test_bsds_parity_with_matlab() -> None:
    """BSDS protocol, 5 thresholds, 5 annotators per image, against MATLAB's stored eval_bdry.txt."""
    reference = np.loadtxt(BSDS_SAMPLE / "test_2" / "eval_bdry.txt")
    metric = EdgeMetric("bsds", thresholds=bsds_thresholds(5))
    for png in sorted((BSDS_SAMPLE / "png").glob("*.png")):
        pred = np.asarray(Image.open(png))
        metric.update(pred, load_bsds_ground_truth(BSDS_SAMPLE / "groundTruth" / f"{png.stem}.mat"))
    result = metric.compute()
    assert result["n_images"] == 5
    assert result["odsT"] == pytest.approx(reference[0], abs=1e-5)
    assert abs(result["odsF"] - reference[3]) <= 5e-4
    assert abs(result["oisF"] - reference[6]) <= 5e-4
    assert abs(result["AP"] - reference[7]) <= 5e-4
    assert math.isclose(result["odsR"], reference[1], abs_tol=2e-3)
    assert math.isclose(result["odsP"], reference[2], abs_tol=2e-3)
