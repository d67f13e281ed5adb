"""Depth: the ASTMT / TSNs per-image protocol and the pixel-pooled protocol, on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tsn.errors import TsnError
from tsn.metrics import AstmtDepthMetric, PooledDepthMetric, depth_metric, make_metric
from tsn.tasks import get_task

LOG_TINY = math.log(1e-9)

# (pred, label) per image; label 0 is invalid, pred <= 0 becomes 1e-9.
IMAGES = [
    (np.array([[1.0, 1.0], [4.0, -1.0]]), np.array([[2.0, 0.0], [4.0, 1.0]])),
    (np.array([[2.0, 2.0]]), np.array([[1.0, 1.0]])),
    (np.array([[3.0, 1.0]]), np.array([[3.0, 1.4]])),
]


def _score(metric, images=IMAGES):
    for pred, label in images:
        metric.update(pred, label)
    return metric.compute()


def test_astmt_golden() -> None:
    result = _score(AstmtDepthMetric())
    # Image 1 scores its invalid pixel against a 1e-9 label (the reference's order of operations).
    rmse = [math.sqrt(3 / 4), 1.0, math.sqrt(0.4**2 / 2)]
    log_rmse = [math.sqrt((math.log(2) ** 2 + 2 * LOG_TINY**2) / 4), math.log(2), math.sqrt(math.log(1.4) ** 2 / 2)]
    assert result["rmse"] == pytest.approx(sum(rmse) / 3, rel=1e-8)
    assert result["log_rmse"] == pytest.approx(sorted(log_rmse)[1])  # median over images
    assert (result["protocol"], result["n_images"], result["n_skipped"]) == ("astmt", 3, 0)


def test_pooled_golden() -> None:
    result = _score(PooledDepthMetric())
    # Valid (label, pred) pixels: (2,1) (4,4) (1,1e-9) (1,2) (1,2) (3,3) (1.4,1).
    assert result["rmse"] == pytest.approx(math.sqrt((4 + 0.16) / 7), rel=1e-8)
    assert result["log_rmse"] == pytest.approx(math.sqrt((3 * math.log(2) ** 2 + LOG_TINY**2 + math.log(1.4) ** 2) / 7))
    assert result["abs_rel"] == pytest.approx((0.5 + 1 + 1 + 1 + 0.4 / 1.4) / 7, rel=1e-8)
    assert result["sq_rel"] == pytest.approx((0.5 + 1 + 1 + 1 + 0.16 / 1.4) / 7, rel=1e-8)
    # max(label / pred, pred / label): 2, 1, 1e9, 2, 2, 1, 1.4
    assert (result["delta_1"], result["delta_2"], result["delta_3"]) == pytest.approx((200 / 7, 300 / 7, 300 / 7))
    assert (result["protocol"], result["n_pixels"], result["n_images"]) == ("pooled", 7, 3)


def test_ignore_index_and_unscorable_images() -> None:
    for protocol in ("astmt", "pooled"):
        metric = depth_metric(protocol)
        metric.update(np.array([[2.0, 7.0]]), np.array([[2.0, 255.0]]))
        metric.update(np.array([[2.0]]), np.array([[255.0]]))
        result = metric.compute()
        assert result["rmse"] == 0.0
        assert (result["n_images"], result["n_skipped"]) == (1, 1)
    pooled = depth_metric("pooled")
    pooled.update(np.ones((2, 2)), np.zeros((2, 2)))  # no positive label
    assert pooled.compute()["n_skipped"] == 1


def test_factory_and_protocol_choice() -> None:
    spec = get_task("depth")
    assert make_metric(spec).compute()["protocol"] == "astmt"
    assert make_metric(spec, depth_protocol="pooled").compute()["protocol"] == "pooled"
    assert isinstance(depth_metric(" Pooled "), PooledDepthMetric)
    with pytest.raises(TsnError, match="unknown depth protocol 'eigen'; choose one of: astmt, pooled"):
        depth_metric("eigen")


def test_accepts_tensors_and_empty_is_nan() -> None:
    metric = PooledDepthMetric()
    assert math.isnan(metric.compute()["rmse"]) and math.isnan(AstmtDepthMetric().compute()["rmse"])
    metric.update(torch.full((1, 2, 2), 3.0), torch.full((1, 2, 2), 3.0))
    assert metric.compute()["rmse"] == 0.0


_positive_maps = st.lists(
    arrays(np.float64, (2, 3), elements=st.floats(0.1, 20.0)), min_size=1, max_size=4
)


@settings(max_examples=60, deadline=None)
@given(_positive_maps)
def test_identical_depth_scores_zero(maps) -> None:
    for protocol in ("astmt", "pooled"):
        result = _score(depth_metric(protocol), [(m, m) for m in maps])
        assert result["rmse"] == 0.0 and result["log_rmse"] == 0.0
        if protocol == "pooled":
            assert result["abs_rel"] == 0.0 and result["delta_1"] == 100.0


@settings(max_examples=60, deadline=None)
@given(_positive_maps, _positive_maps, st.randoms(use_true_random=False))
def test_pooled_is_invariant_to_image_order(preds, labels, random) -> None:
    images = list(zip(preds, labels, strict=False))
    shuffled = random.sample(images, len(images))
    first, second = _score(PooledDepthMetric(), images), _score(PooledDepthMetric(), shuffled)
    for key in ("rmse", "log_rmse", "abs_rel", "sq_rel", "delta_1"):
        assert second[key] == pytest.approx(first[key])
