"""Saliency: per-image Jaccard / precision / recall at 15 thresholds, max over thresholds of the image means."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tsn.errors import TsnError
from tsn.metrics import SaliencyMetric, make_metric
from tsn.metrics.saliency import DEFAULT_THRESHOLDS
from tsn.tasks import get_task

# Positives score 0.52 and 0.95, negatives 0.1 and 0.33 (no score near a threshold).
PRED = np.array([[0.1, 0.52], [0.95, 0.33]], dtype=np.float32)
LABEL = np.array([[0, 1], [1, 0]], dtype=np.float32)
LOW, MID, HIGH = slice(0, 3), slice(3, 7), slice(7, 15)  # t in 0.2..0.3, 0.35..0.5, 0.55..0.9


def test_thresholds_are_the_reference_ones() -> None:
    assert DEFAULT_THRESHOLDS == pytest.approx([0.2 + 0.05 * i for i in range(15)])


def test_golden_single_image() -> None:
    metric = SaliencyMetric()
    metric.update(PRED, LABEL)
    result = metric.compute()
    per_threshold = np.array(result["mIoU_per_threshold"])
    assert per_threshold[LOW] == pytest.approx([2 / 3] * 3)  # TP 2, FP 1 (0.33)
    assert per_threshold[MID] == pytest.approx([1.0] * 4)
    assert per_threshold[HIGH] == pytest.approx([1 / 2] * 8)  # only 0.95 left
    assert result["mIoU"] == pytest.approx(1.0)
    assert result["threshold"] == pytest.approx(0.35)
    assert result["maxF"] == pytest.approx(1.0)
    assert result["thresholds"] == pytest.approx(list(DEFAULT_THRESHOLDS))


def test_golden_with_an_empty_image() -> None:
    metric = SaliencyMetric()
    metric.update(PRED, LABEL)
    metric.update(np.full((2, 3), 0.1), np.zeros((2, 3)))  # both empty: Jaccard 1, precision = recall = 0
    result = metric.compute()
    per_threshold = np.array(result["mIoU_per_threshold"])
    assert per_threshold[LOW] == pytest.approx([5 / 6] * 3)
    assert per_threshold[HIGH] == pytest.approx([3 / 4] * 8)
    assert result["mIoU"] == pytest.approx(1.0)
    # Precision / recall are averaged over images first: MID has P = R = 1/2, so F = 1/2 (LOW 0.4, HIGH 1/3).
    assert result["maxF"] == pytest.approx(0.5)
    assert result["n_images"] == 2


def test_reference_pred_equal_to_gt_png() -> None:
    """datasets.md section 7: a prediction equal to 255 * GT gives mIoU 1."""
    label = (np.random.default_rng(1).random((6, 5)) > 0.5).astype(np.float32)
    spec = get_task("saliency")
    saved = spec.to_saved(label * 1.0)  # 255 * GT as uint8, as a prediction PNG
    metric = make_metric(spec)
    metric.update(torch.from_numpy(saved / 255.0)[None], label)
    assert metric.compute()["mIoU"] == 1.0


def test_ignored_pixels_are_left_out() -> None:
    metric = SaliencyMetric(thresholds=(0.5,))
    metric.update(np.array([[0.9, 0.9, 0.1]]), np.array([[1, 255, 0]], dtype=np.float32))
    assert metric.compute()["mIoU"] == 1.0


def test_bad_input_is_a_one_line_error() -> None:
    with pytest.raises(TsnError, match="at least one threshold"):
        SaliencyMetric(thresholds=())
    with pytest.raises(TsnError, match="resize the prediction"):
        SaliencyMetric().update(np.zeros((1, 2, 2)), np.zeros((2, 3)))


def test_empty_is_nan() -> None:
    result = SaliencyMetric().compute()
    assert np.isnan(result["mIoU"]) and np.isnan(result["maxF"]) and result["n_images"] == 0


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 6), st.integers(1, 6))))
def test_perfect_prediction_is_one(mask) -> None:
    metric = SaliencyMetric()
    metric.update(mask.astype(np.float32), mask.astype(np.float32))
    result = metric.compute()
    assert result["mIoU"] == 1.0
    assert result["maxF"] == pytest.approx(1.0 if mask.any() else 0.0)
