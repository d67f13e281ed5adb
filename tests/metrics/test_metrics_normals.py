"""Surface normals: angular error pooled over all valid pixels, with the reference's validity rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tsn.errors import TsnError
from tsn.metrics import NormalsMetric, make_metric
from tsn.metrics.normals import angular_error
from tsn.tasks import get_task

Z = (0.0, 0.0, 1.0)
SIN20, COS20 = math.sin(math.radians(20)), math.cos(math.radians(20))


def _row(*vectors) -> np.ndarray:
    """Vectors as one image row, ``3 x 1 x N``."""
    return np.array(vectors, dtype=np.float64).T[:, None, :]


# Errors 0, 90, 45 (label not unit length), 20 degrees; then an all-zero (invalid) and an ignored (255) pixel.
LABEL = _row(Z, (1, 0, 0), (0, 0, 2), Z, (0, 0, 0), (255, 255, 255))
PRED = _row(Z, (0, 1, 0), (0, 1, 1), (0, SIN20, COS20), (1, 0, 0), (1, 0, 0))


def test_golden_errors() -> None:
    metric = NormalsMetric()
    metric.update(PRED, LABEL)
    result = metric.compute()
    assert result["mErr"] == pytest.approx((0 + 90 + 45 + 20) / 4)
    assert result["median"] == pytest.approx((20 + 45) / 2, rel=1e-14)
    assert result["rmse"] == pytest.approx(math.sqrt((0 + 90**2 + 45**2 + 20**2) / 4))
    assert result["within_11.25"] == pytest.approx(25.0)
    assert result["within_22.5"] == pytest.approx(50.0)
    assert result["within_30"] == pytest.approx(50.0)
    assert (result["n_pixels"], result["n_images"], result["n_skipped"]) == (4, 1, 0)
    assert result["median_exact"] and result["median_resolution"] == 0.0


def test_label_layouts_are_equivalent() -> None:
    channels_first, channels_last = NormalsMetric(), NormalsMetric()
    channels_first.update(PRED, LABEL)
    channels_last.update(PRED, LABEL.transpose(1, 2, 0))
    assert channels_last.compute() == channels_first.compute()


def test_pooled_over_pixels_and_all_zero_labels_skipped() -> None:
    metric = NormalsMetric()
    metric.update(_row((1, 0, 0)), _row((0, 1, 0)))
    metric.update(_row(Z, Z, Z), _row(Z, Z, Z))
    metric.update(_row(Z, Z), np.zeros((3, 1, 2)))  # all-zero label: skipped, as the reference
    result = metric.compute()
    assert result["mErr"] == pytest.approx(90 / 4)  # pixel-weighted, not the image mean 45
    assert result["median"] == pytest.approx(0.0, abs=1e-3)
    assert (result["n_images"], result["n_skipped"]) == (2, 1)


def test_within_percentages() -> None:
    radians = np.radians([11.0, 11.5, 25.0, 29.9, 31.0])
    pred = np.stack([np.zeros_like(radians), np.sin(radians), np.cos(radians)])[:, None, :]
    metric = NormalsMetric()
    metric.update(pred, _row(*[Z] * 5))
    result = metric.compute()
    assert (result["within_11.25"], result["within_22.5"], result["within_30"]) == pytest.approx((20.0, 40.0, 80.0))


def test_reference_identical_png_gives_zero_error() -> None:
    """datasets.md section 7: a normals prediction PNG identical to the GT PNG gives mErr ~ 0."""
    png = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    label = (2.0 * png / 255.0 - 1.0).astype(np.float32)  # the loader's decoding, H x W x 3, not renormalised
    pred = torch.from_numpy(label.transpose(2, 0, 1))  # the evaluator's decoding of the same PNG
    metric = make_metric(get_task("normals"))
    metric.update(pred, label)
    result = metric.compute()
    assert result["mErr"] < 1e-3
    assert result["within_11.25"] == 100.0


def test_bad_shapes_are_one_line_errors() -> None:
    metric = NormalsMetric()
    with pytest.raises(TsnError, match="3 x H x W"):
        metric.update(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)))
    with pytest.raises(TsnError, match="resize the prediction"):
        metric.update(np.zeros((3, 2, 2)), np.zeros((3, 2, 4)))
    with pytest.raises(TsnError, match="bins_per_degree"):
        NormalsMetric(bins_per_degree=0)


def test_empty_is_nan() -> None:
    result = NormalsMetric().compute()
    assert np.isnan(result["mErr"]) and np.isnan(result["median"]) and result["n_pixels"] == 0


def _nonzero_vectors(n: int) -> st.SearchStrategy[np.ndarray]:
    """``3 x 1 x n`` vectors, none (nearly) zero."""
    return arrays(np.float64, (3, 1, n), elements=st.floats(-1, 1)).filter(
        lambda v: np.all(np.linalg.norm(v, axis=0) > 1e-3)
    )


_vectors = st.integers(1, 12).flatmap(lambda n: st.tuples(_nonzero_vectors(n), _nonzero_vectors(n)))


@settings(max_examples=60, deadline=None)
@given(_vectors)
def test_identical_is_zero_and_error_is_symmetric(pair) -> None:
    first, second = pair
    same = NormalsMetric()
    same.update(first, first)
    assert same.compute()["mErr"] == pytest.approx(0.0, abs=1e-5)
    forward, backward = NormalsMetric(), NormalsMetric()
    forward.update(first, second)
    backward.update(second, first)
    assert backward.compute()["mErr"] == pytest.approx(forward.compute()["mErr"], abs=1e-9)
    assert backward.compute()["median"] == pytest.approx(forward.compute()["median"], abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 180), min_size=1, max_size=50))
def test_median_is_numpys_exactly(angles) -> None:
    radians = np.radians(angles)
    pred = np.stack([np.zeros_like(radians), np.sin(radians), np.cos(radians)])[:, None, :]
    metric = NormalsMetric()
    metric.update(pred, np.broadcast_to(np.array(Z)[:, None, None], pred.shape))
    errors = angular_error(pred[:, 0], np.broadcast_to(np.array(Z)[:, None], pred[:, 0].shape))
    assert metric.compute()["median"] == np.median(errors)
