"""Edge cases where the metrics must behave as the reference evaluators (datasets.md section 5), and exact pooling.

* human parts: only an all-background or all-ignored label is skipped, not a label that is one part everywhere;
* normals: mean / median / RMSE / within-threshold pooled over every pixel of every image, the median exact;
* channel pooling: the shared output layer pooled to a task's channels equals the authors' adaptive average
  pooling over channels to float64 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsn.metrics import NormalsMetric, make_metric
from tsn.metrics.normals import WITHIN_DEGREES, angular_error
from tsn.models.layers import channel_pool_matrix, pool_channels
from tsn.tasks import IGNORE_INDEX, get_task

EPS64 = float(np.finfo(np.float64).eps)


# ------------------------------------------------------------------------------------------------ human parts
def test_parts_skip_only_all_background_or_all_ignored_labels() -> None:
    metric = make_metric(get_task("human_parts"))
    head_everywhere = np.full((3, 4), 1)  # one part over the whole crop: scored by the reference
    background_everywhere = np.zeros((3, 4))
    ignored_everywhere = np.full((3, 4), IGNORE_INDEX)
    background_and_ignored = np.where(np.arange(12).reshape(3, 4) < 6, 0, IGNORE_INDEX)  # two values: scored
    for label in (head_everywhere, background_everywhere, ignored_everywhere, background_and_ignored):
        metric.update(np.ones((3, 4), dtype=np.int64), label)
    result = metric.compute()
    assert (result["n_images"], result["n_skipped"]) == (2, 2)
    # head: TP 12; background: FN 6 (the 6 background pixels predicted as head, which also makes 6 FP for head).
    assert result["IoU"][:2] == [0.0, pytest.approx(12 / 18)]


# ------------------------------------------------------------------------------------------------ normals
def _random_images(seed: int, sizes: list[tuple[int, int]], spread: float = 1.0) -> list[tuple[np.ndarray, ...]]:
    """(pred, label) pairs: labels with some all-zero (invalid) pixels, predictions near the labels."""
    rng = np.random.default_rng(seed)
    images = []
    for height, width in sizes:
        label = rng.normal(size=(3, height, width))
        label[:, rng.random((height, width)) < 0.2] = 0.0
        pred = label + spread * rng.normal(size=(3, height, width))
        images.append((pred, label))
    return images


def _reference_scores(images: list[tuple[np.ndarray, ...]]) -> dict[str, float]:
    """The reference evaluator's pooling, in float64: every valid error of every image in one array."""
    errors = []
    for pred, label in images:
        valid = np.linalg.norm(label, axis=0) != 0
        if valid.any():
            errors.append(angular_error(pred.reshape(3, -1), label.reshape(3, -1))[valid.ravel()])
    pooled = np.concatenate(errors)
    scores = {"mErr": np.mean(pooled), "median": np.median(pooled), "rmse": np.mean(pooled**2) ** 0.5}
    scores.update({f"within_{t:g}": np.mean(pooled < t) * 100 for t in WITHIN_DEGREES})
    scores["n_pixels"] = pooled.size
    return scores


def _score(images, **options) -> dict:
    metric = NormalsMetric(**options)
    for pred, label in images:
        metric.update(pred, label)
    return metric.compute()


@pytest.mark.parametrize("limit", [NormalsMetric().kept_errors_limit, 300])
def test_normals_pool_as_the_reference_with_an_exact_median(limit) -> None:
    images = _random_images(0, [(7, 9), (12, 5), (1, 1), (20, 16), (9, 9), (15, 22)] * 4)
    images.insert(3, (np.ones((3, 4, 4)), np.zeros((3, 4, 4))))  # an all-zero label: skipped by both
    expected, result = _reference_scores(images), _score(images, kept_errors_limit=limit)
    n = expected["n_pixels"]
    assert result["n_pixels"] == n and result["n_skipped"] == 1
    assert result["median"] == expected["median"] and result["median_exact"]  # bit for bit
    for key in [f"within_{t:g}" for t in WITHIN_DEGREES]:
        assert result[key] == expected[key]  # integer counts, then the reference's count / n * 100
    # Sums of n positive float64 terms in another order: each within n * eps relative of the exact sum.
    assert result["mErr"] == pytest.approx(expected["mErr"], rel=2 * n * EPS64, abs=0)
    assert result["rmse"] == pytest.approx(expected["rmse"], rel=2 * n * EPS64, abs=0)


def test_normals_exact_median_in_bounded_memory() -> None:
    images = _random_images(1, [(30, 30)] * 20)
    metric = NormalsMetric(kept_errors_limit=400)
    for pred, label in images:
        metric.update(pred, label)
        assert metric._n_kept <= 2 * 400 + 30 * 30  # the limit (x2 for crowded bins) plus one image
    result = metric.compute()
    assert result["median_exact"] and result["median"] == _reference_scores(images)["median"]


def test_normals_median_falls_back_to_half_a_bin_when_the_data_drift() -> None:
    """Small errors first, large ones after: the final middle rank lies outside the window kept early on."""
    angles = np.radians(np.concatenate([np.linspace(0, 5, 600), np.linspace(40, 60, 900)]))
    pred = np.stack([np.zeros_like(angles), np.sin(angles), np.cos(angles)]).reshape(3, 15, 100)
    label = np.zeros_like(pred)
    label[2] = 1.0
    metric = NormalsMetric(kept_errors_limit=100)
    for row in range(15):
        metric.update(pred[:, row : row + 1], label[:, row : row + 1])
    result = metric.compute()
    exact = np.median(np.degrees(angles))
    assert not result["median_exact"] and result["median_resolution"] == 0.001
    assert abs(result["median"] - exact) <= 0.0005 + 1e-12


def test_normals_median_of_one_crowded_bin_is_exact() -> None:
    vectors = np.random.default_rng(2).normal(size=(3, 40, 40))
    result = _score([(vectors, vectors)] * 3, kept_errors_limit=50)
    assert result["median_exact"] and result["median"] < 1e-5 and result["n_pixels"] == 3 * 1600


def test_normals_kept_errors_limit_option() -> None:
    assert make_metric(get_task("normals"), normals_kept_errors_limit=99).kept_errors_limit == 99


# ------------------------------------------------------------------------------------------------ channel pooling
@pytest.mark.parametrize("channels, pooled", [(21, 3), (21, 1), (21, 7), (41, 3), (5, 2), (21, 21)])
def test_pooled_tasks_equal_adaptive_average_pooling_in_float64(channels, pooled) -> None:
    x = 10 * torch.randn(2, channels, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    flat = x.permute(0, 2, 3, 1).reshape(-1, 1, channels)  # channels last: pool them as a 1-d signal
    reference = torch.nn.functional.adaptive_avg_pool1d(flat, pooled).reshape(2, 6, 5, pooled).permute(0, 3, 1, 2)
    mine = pool_channels(x, pooled)
    assert mine.dtype == torch.float64
    # Each output averages g <= ceil(C / c) + 1 inputs: weights 1/g rounded once (eps/2), g products and sums on
    # each side (adaptive pooling sums then divides): |error| <= (2g + 2) * eps/2 * max|x|. The float32-built
    # matrix of old was 3e-7 off here, 1e8 times this bound.
    group = -(-channels // pooled) + 1
    bound = (2 * group + 2) * EPS64 / 2 * float(x.abs().max())
    assert float((mine - reference).abs().max()) <= bound


def test_pool_matrix_is_rounded_once_into_the_requested_dtype() -> None:
    assert channel_pool_matrix(21, 3).dtype == torch.float32
    exact = channel_pool_matrix(5, 2, dtype=torch.float64)
    assert exact[0, 0].item() == 1 / 3  # the float64 nearest to 1/3, not a float32 1/3 widened
    assert torch.equal(channel_pool_matrix(5, 2), exact.float())
