"""The shared rounding-error model (tests/error_model.py): its formula, its failure message, its layer counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from error_model import (
    SAFETY,
    assert_close_float32,
    assert_close_float64,
    largest_reduction,
    network_reductions,
    reduction_depth,
    rounding_error_bound,
)


def test_bound_formula_and_equivalent_forms() -> None:
    eps = torch.finfo(torch.float32).eps
    assert rounding_error_bound(scale=3.0, reduction=16, depth=4) == pytest.approx(2 * 8 * eps * 3.0 * SAFETY)
    assert rounding_error_bound(scale=3.0, reduction=[16] * 4) == rounding_error_bound(scale=3.0, reduction=16, depth=4)
    assert rounding_error_bound(scale=1.0, reduction=9, sides=1, dtype=torch.float64) == pytest.approx(
        3 * torch.finfo(torch.float64).eps * SAFETY)
    with pytest.raises(ValueError):
        rounding_error_bound(scale=1.0, reduction=[4, 4], depth=2)


def test_failure_names_the_bound_and_the_worst_element() -> None:
    expected = np.array([1.0, -2.0, 4.0])
    ratio = assert_close_float32(expected + 1e-7, expected, reduction=1)
    assert 0 < ratio < 1
    with pytest.raises(AssertionError, match=r"semseg: max \|actual - expected\| = 0.001 at index \(1,\).*"
                                             r"bound .* sides 2 .*scale 4 .*ratio"):
        assert_close_float32(expected + [0, 1e-3, 0], expected, reduction=1, what="semseg")
    with pytest.raises(AssertionError, match="NaN"):
        assert_close_float64([np.nan, 1.0], [1.0, 1.0], reduction=1)
    with pytest.raises(AssertionError, match="shape"):
        assert_close_float64(np.zeros(2), np.zeros(3), reduction=1)


def test_layer_reductions_of_a_network() -> None:
    net = nn.Sequential(nn.Conv2d(8, 4, 3, groups=2), nn.Linear(10, 5), nn.ReLU())
    assert network_reductions(net) == [4 * 9, 10]
    assert largest_reduction(net) == 36 and reduction_depth(net) == 2
    assert network_reductions(nn.ReLU()) == [1] and largest_reduction(nn.ReLU()) == 1


def test_the_model_covers_a_float32_matmul_against_float64() -> None:
    """One long reduction: float32 vs float64 (one side) stays under the bound (here well under)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 4096, generator=g), torch.randn(4096, 32, generator=g)
    exact = a.double() @ b.double()
    assert_close_float32(a @ b, exact, reduction=4096, sides=1)
    assert math.isfinite(assert_close_float64(a.double() @ b.double(), exact, reduction=4096))
