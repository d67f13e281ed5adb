"""Comparison bounds for floating-point results, derived from a rounding-error model instead of tuned to one CPU.

Why: a float32 result depends on the kernel that computed it (oneDNN with or without AMX, AVX2 or AVX-512,
the thread count, the blocking of each reduction). A tolerance tuned on one machine fails on another, so every
float32 (and float64) comparison in the tests takes its bound from what is compared.

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

Set ``TSN_ERROR_MODEL_LOG=/path/file.jsonl`` to append every comparison's error, bound and ratio (used to
verify the model across CPUs and thread counts).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["SAFETY", "rounding_error_bound", "assert_within_rounding_error", "assert_close_float32",
           "assert_close_float64", "network_reductions", "largest_reduction", "reduction_depth"]

# The per-element estimate sqrt(n)*eps holds for most elements, not for the worst of the ~10^5 elements a test
# compares, whose error is a few standard deviations out (a Gaussian's maximum over N samples is about
# sqrt(2 ln N) ~ 4.8 sigma for N = 10^5). A factor of 2 on top of lambda = 2 above covers that tail.
SAFETY = 2.0


Reduction = int | Sequence[int]


def _accumulated_length(reduction: Reduction, depth: int) -> int:
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
    return sides * math.sqrt(_accumulated_length(reduction, depth)) * eps * float(scale) * SAFETY


def _as_float64(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _log(record: dict) -> None:
    path = os.environ.get("TSN_ERROR_MODEL_LOG")
    if path:
        record["test"] = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")


def assert_within_rounding_error(actual, expected, *, dtype: torch.dtype, reduction: Reduction, depth: int = 1,
                                 sides: int = 2, scale: float | None = None, what: str = "") -> float:
    """Assert ``max |actual - expected| <= rounding_error_bound(...)``; return the ratio error / bound.

    ``scale`` defaults to ``max |expected|`` (at least the smallest normal number, so an all-zero reference
    still needs an exact match up to underflow). The failure message names the bound's factors and the worst
    element. Shapes must match exactly and NaNs must sit at the same places.
    """
    a, e = _as_float64(actual), _as_float64(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaN at different places"
    a, e = np.where(nan_a, 0.0, a), np.where(nan_e, 0.0, e)
    if scale is None:
        scale = max(float(np.abs(e).max(initial=0.0)), torch.finfo(dtype).tiny)
    bound = rounding_error_bound(scale=scale, reduction=reduction, depth=depth, sides=sides, dtype=dtype)
    difference = np.abs(a - e)
    error = float(difference.max(initial=0.0))
    ratio = error / bound
    name = str(dtype).removeprefix("torch.")
    _log({"what": what, "dtype": name, "max_error": error, "bound": bound, "ratio": ratio})
    if not error <= bound:
        worst = np.unravel_index(int(difference.argmax()), difference.shape)
        raise AssertionError(
            f"{what or 'values'}: max |actual - expected| = {error:.3g} at index {tuple(int(i) for i in worst)} "
            f"(actual {a[worst]:.9g}, expected {e[worst]:.9g}) exceeds the {name} error-model bound {bound:.3g} = "
            f"sides {sides} x sqrt(accumulated reduction length {_accumulated_length(reduction, depth)}) x eps "
            f"{torch.finfo(dtype).eps:.3g}"
            f" x scale {scale:.4g} x safety {SAFETY:g} (ratio {ratio:.2f})")
    return ratio


def assert_close_float32(actual, expected, *, reduction: Reduction, depth: int = 1, sides: int = 2,
                         scale: float | None = None, what: str = "") -> float:
    """Float32 results: :func:`assert_within_rounding_error` with float32's eps."""
    return assert_within_rounding_error(actual, expected, dtype=torch.float32, reduction=reduction, depth=depth,
                                        sides=sides, scale=scale, what=what)


def assert_close_float64(actual, expected, *, reduction: Reduction, depth: int = 1, sides: int = 2,
                         scale: float | None = None, what: str = "") -> float:
    """Float64 results (exactness proofs): :func:`assert_within_rounding_error` with float64's eps."""
    return assert_within_rounding_error(actual, expected, dtype=torch.float64, reduction=reduction, depth=depth,
                                        sides=sides, scale=scale, what=what)


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
