"""Comparison bounds for floating-point results, derived from a rounding-error model instead of tuned to one CPU.

Why: a float32 result depends on the kernel that computed it (oneDNN with or without AMX, AVX2 or AVX-512,
the thread count, the blocking of each reduction). A tolerance tuned on one machine fails on another, so every
float32 (and float64) comparison, in the tests and in the product, takes its bound from what is compared.

The model
---------
A reduction of length ``n`` (a dot product, a conv output with fan-in ``k*k*C_in/groups``, a matmul's inner
dimension, a mean over ``H*W`` pixels) computed in a floating-point type with machine epsilon ``eps``
(``torch.finfo(dtype).eps``, 2**-23 for float32) has a relative forward error of about ``sqrt(n) * eps``: the
classical bound is ``n * u`` (``u = eps / 2``), but rounding errors of the partial sums are independent and
mostly cancel, which gives the probabilistic bound ``lambda * sqrt(n) * u`` (Higham and Mary, SIAM J. Sci.
Comput. 41, 2019) that blocked and pairwise kernels only improve on. ``sqrt(n) * eps`` is that bound with
``lambda = 2``.

A network adds one such error per layer. The layers of the models here are normalised (batch norm, instance
norm, AdaIN), so a relative error neither grows nor shrinks much from layer to layer, and the independent
errors of the layers add in quadrature: ``sqrt(n_1 + n_2 + ...) * eps`` over the reduction lengths ``n_l`` of
every layer (:func:`network_reductions`), or at most ``sqrt(depth * n_max) * eps`` for ``depth`` layers of
length at most ``n_max``. Measured against the output, the error is relative to the output's magnitude,
``scale`` (by default ``max |expected|``).

When both compared results are computed in the same precision by different kernels (the all-task path vs
the per-task path, our model vs the authors' float32 fixture, PyTorch vs onnxruntime) each carries its own
error, and they add: ``sides = 2``. When ``expected`` is exact (float64 or analytic), ``sides = 1``.

    bound = sides * sqrt(depth * reduction) * eps * scale * SAFETY        (reduction: one length)
    bound = sides * sqrt(sum(reduction)) * eps * scale * SAFETY          (reduction: every layer's length)

``SAFETY`` covers the maximum over many elements of the probabilistic per-element estimate (see its comment).
Pass ``reduction=network_reductions(model)`` for a whole network, or ``reduction=n`` (and ``depth``) for one
operation. The same model with float64's eps proves exactness: two computations of the same maths agree in
float64 to ~1e-12, while a wrong formula is off by far more.

Calibration (tests/models/test_parity.py, the authors' float32 fixture, 31 layers, sqrt(sum n_l) = 228): the
float32 error of one side, measured against float64, is 90-160 eps relative to max |output| on every task,
i.e. 0.4-0.7 of ``sqrt(sum n_l) * eps * scale``; so the bound is 3x the worst one-sided error and 7x the worst
two-sided difference seen with oneDNN's AVX-512, AVX2 and SSE4.1 kernels at 1 and 2 threads.

The product uses the same model: ``tsn export`` verifies onnxruntime against PyTorch within
:func:`rounding_error_bound` (:mod:`tsn.inference.export`), so an export that is correct on one CPU is accepted on
every CPU. The tests' assertions (``tests/error_model.py``) are :func:`compare` with a failure message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["SAFETY", "Reduction", "Comparison", "rounding_error_bound", "accumulated_length", "compare",
           "network_reductions", "largest_reduction", "reduction_depth"]

# The per-element estimate sqrt(n)*eps holds for most elements, not for the worst of the ~10^5 elements a test
# compares, whose error is a few standard deviations out (a Gaussian's maximum over N samples is about
# sqrt(2 ln N) ~ 4.8 sigma for N = 10^5). A factor of 2 on top of lambda = 2 above covers that tail.
SAFETY = 2.0


Reduction = int | Sequence[int]
"""One reduction length, or every layer's (:func:`network_reductions`)."""


def accumulated_length(reduction: Reduction, depth: int = 1) -> int:
    """``depth * n`` for one length, ``sum(n_l)`` for a list of every layer's length."""
    lengths = [reduction] if isinstance(reduction, int) else list(reduction)
    if not lengths or min(lengths) < 1 or depth < 1 or (depth > 1 and len(lengths) > 1):
        raise ValueError(f"need reduction lengths >= 1 and depth >= 1 (depth only with one length), "
                         f"got reduction {reduction}, depth {depth}")
    return depth * sum(lengths)


def rounding_error_bound(*, scale: float, reduction: Reduction, depth: int = 1, sides: int = 2,
                         dtype: torch.dtype = torch.float32) -> float:
    """The model's bound on ``max |actual - expected|`` (see the module docstring)."""
    if sides not in (1, 2):
        raise ValueError(f"sides is how many compared values carry rounding error: 1 or 2, got {sides}")
    eps = torch.finfo(dtype).eps
    return sides * math.sqrt(accumulated_length(reduction, depth)) * eps * float(scale) * SAFETY


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`: the largest difference, the bound, where the difference is largest."""

    error: float
    bound: float
    scale: float
    worst: tuple[int, ...]
    """Index of the largest difference (empty for empty arrays)."""
    actual_at_worst: float
    expected_at_worst: float

    @property
    def ratio(self) -> float:
        """``error / bound``: at most 1 when the values agree within the model."""
        return self.error / self.bound

    @property
    def within(self) -> bool:
        return self.error <= self.bound


def _as_float64(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def compare(actual: Any, expected: Any, *, dtype: torch.dtype, reduction: Reduction, depth: int = 1,
            sides: int = 2, scale: float | None = None) -> Comparison:
    """``max |actual - expected|`` against :func:`rounding_error_bound`, NaNs (which must sit at the same places,
    or :class:`ValueError`) left out; ``scale`` defaults to ``max |expected|`` (at least the smallest normal
    number, so an all-zero reference still needs an exact match up to underflow). Shapes must match."""
    a, e = _as_float64(actual), _as_float64(expected)
    if a.shape != e.shape:
        raise ValueError(f"shape {a.shape} != expected {e.shape}")
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if not np.array_equal(nan_a, nan_e):
        raise ValueError("NaN at different places")
    a, e = np.where(nan_a, 0.0, a), np.where(nan_e, 0.0, e)
    if scale is None:
        scale = max(float(np.abs(e).max(initial=0.0)), torch.finfo(dtype).tiny)
    bound = rounding_error_bound(scale=scale, reduction=reduction, depth=depth, sides=sides, dtype=dtype)
    difference = np.abs(a - e)
    if difference.size == 0:
        return Comparison(0.0, bound, float(scale), (), 0.0, 0.0)
    worst = tuple(int(i) for i in np.unravel_index(int(difference.argmax()), difference.shape))
    return Comparison(float(difference[worst]), bound, float(scale), worst, float(a[worst]), float(e[worst]))


def _reductions(module: nn.Module) -> Iterable[int]:
    for layer in module.modules():
        if isinstance(layer, nn.modules.conv._ConvNd):
            yield layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        elif isinstance(layer, nn.Linear):
            yield layer.in_features


def network_reductions(module: nn.Module) -> list[int]:
    """Every conv and linear layer's reduction length (``k*k*C_in/groups`` or ``in_features``), for ``reduction=``."""
    return list(_reductions(module)) or [1]


def largest_reduction(module: nn.Module) -> int:
    """The longest reduction of a network's conv and linear layers: max of ``k*k*C_in/groups`` and ``in_features``.

    Normalisation layers reduce over pixels; pass ``max(largest_reduction(model), H*W)`` when that is longer.
    """
    return max(_reductions(module), default=1)


def reduction_depth(module: nn.Module) -> int:
    """How many accumulating (conv and linear) layers a network has: a safe upper bound on the path length."""
    return max(sum(1 for _ in _reductions(module)), 1)
