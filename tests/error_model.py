"""The float32 error model for the tests: :mod:`tsn.utils.error_model` (the bound, the layer counts) plus
assertions that fail with a message naming the bound's factors and the worst element.

The model itself, its derivation and its calibration are documented in :mod:`tsn.utils.error_model`; the
product's ONNX export verification uses the same bound. Set ``TSN_ERROR_MODEL_LOG=/path/file.jsonl`` to append
every comparison's error, bound and ratio (used to verify the model across CPUs and thread counts).
"""

from __future__ import annotations

import json
import os

import torch

from tsn.utils.error_model import (
    SAFETY,
    Reduction,
    accumulated_length,
    compare,
    largest_reduction,
    network_reductions,
    reduction_depth,
    rounding_error_bound,
)

__all__ = ["SAFETY", "rounding_error_bound", "assert_within_rounding_error", "assert_close_float32",
           "assert_close_float64", "network_reductions", "largest_reduction", "reduction_depth"]


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
    try:
        result = compare(actual, expected, dtype=dtype, reduction=reduction, depth=depth, sides=sides, scale=scale)
    except ValueError as error:
        raise AssertionError(f"{what}: {error}") from None
    name = str(dtype).removeprefix("torch.")
    _log({"what": what, "dtype": name, "max_error": result.error, "bound": result.bound, "ratio": result.ratio})
    if not result.within:
        raise AssertionError(
            f"{what or 'values'}: max |actual - expected| = {result.error:.3g} at index {result.worst} "
            f"(actual {result.actual_at_worst:.9g}, expected {result.expected_at_worst:.9g}) exceeds the {name} "
            f"error-model bound {result.bound:.3g} = sides {sides} x sqrt(accumulated reduction length "
            f"{accumulated_length(reduction, depth)}) x eps {torch.finfo(dtype).eps:.3g}"
            f" x scale {result.scale:.4g} x safety {SAFETY:g} (ratio {result.ratio:.2f})")
    return result.ratio


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
