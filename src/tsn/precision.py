"""The mixed-precision policy, in one place: which precisions exist, what ``auto`` means, and the one ``autocast``.

Training (``amp`` in the train config), validation, inference (:mod:`tsn.inference.speed`) and the studies all
enter autocast through :func:`autocast`, so a precision means the same thing everywhere:

======= =====================================================================================================
none    float32 throughout
bf16    autocast to bfloat16 (CUDA or CPU): convolutions and matrix products in bfloat16, losses in float32
fp16    autocast to float16, CUDA only; training scales the loss with a gradient scaler (:func:`grad_scaler`)
auto    bf16 where the device computes it natively (a CUDA GPU that supports it, a CPU with AMX or
        AVX512-BF16), else none: elsewhere bf16 is emulated and slower than float32
======= =====================================================================================================

This module imports only torch, so any layer of the package can use it.
"""

from __future__ import annotations

import contextlib
import typing
from typing import Any, Literal

import torch

from tsn.errors import TsnError

__all__ = ["Precision", "PRECISIONS", "native_bf16", "resolve_precision", "check_precision", "autocast", "grad_scaler"]

Precision = Literal["none", "bf16", "fp16", "auto"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA: as torch reports; CPU: AMX or AVX512-BF16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    # torch exposes these CPU probes only privately; without them, assume no native bf16.
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``auto`` -> ``bf16`` where ``device`` computes bf16 natively, else ``none``; the other values unchanged."""
    if precision not in PRECISIONS:
        raise TsnError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "none"


def check_precision(precision: str, device: str | torch.device) -> str:
    """:func:`resolve_precision`, refusing in one line a precision that ``device`` cannot run (fp16 off CUDA)."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp16" and torch.device(device).type != "cuda":
        raise TsnError("amp fp16 needs a CUDA GPU; use --set amp=bf16 (or none) on the CPU")
    return resolved


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` (``none``, ``bf16``, ``fp16``, ``auto``) on ``device``.

    ``none`` is a no-op context: an autocast region opened by the caller stays in force inside it.
    """
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    if resolved == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler | None:
    """The gradient scaler training needs at ``precision``: one for fp16 (its gradients underflow), else None."""
    resolved = resolve_precision(precision, device)
    return torch.amp.GradScaler(torch.device(device).type) if resolved == "fp16" else None
