"""Speed options that keep a model's results: memory format, fused blocks, bfloat16 autocast, ``torch.compile``.

No option changes the weights or the state dict, and none changes anything outside the model it is applied to.
Their measured effect on the paper's TSN (random weights, 512 x 512, all five tasks; differences from the authors'
float32 eager outputs, whose largest magnitude is 4.8; speed on a 2-core AMX Xeon, details and re-measurement in
``tsn benchmark`` and docs/performance.md):

============== ========================================================= =============================================
option         what it does                                              effect on results (largest abs difference)
============== ========================================================= =============================================
channels_last  NHWC activations and weights: oneDNN's fast convolutions  float32 rounding only (~1e-5)
               (fp32 convs 1.3-1.5x faster; bf16 AMX kernels need it)
fused          :mod:`tsn.models.fused` AdaIN blocks: norm + modulation   float32 rounding only (~1e-5)
               folded into one in-place pass
compile        ``torch.compile`` (Inductor, weights frozen for           float32 rounding only (~1e-5)
               inference); pays on CPU only with bf16
bf16           bfloat16 autocast: convolutions and activations in        up to 4% of the output scale (0.17 of 4.8);
               bfloat16 (AMX / tensor cores); losses stay in float32     >= 97% of class / binary decisions unchanged
============== ========================================================= =============================================

One more setting is not a model option, because it changes the whole process: :func:`tune_glibc_allocator`
makes glibc's malloc keep freed memory (bit-identical results; a third of the float32 CPU time of a large forward
on a 2-core VM is otherwise spent page-faulting fresh memory in). Nothing applies it unless asked: call it
yourself, or pass ``--tune-allocator`` to ``tsn predict``, ``tsn evaluate`` or ``tsn benchmark``.

The measured speed-ups, against the authors' way both as shipped and in a process with the same settings, are in
docs/performance.md (``tsn benchmark``). Typical use::

    options = fastest_options(device)
    model = optimize(model, options)               # use the returned model (its AdaIN blocks are replaced)
    with torch.inference_mode(), autocast(device, options.precision):   # tsn.precision.autocast
        outputs = model(prepare(image, options))
"""

from __future__ import annotations

import ctypes
import dataclasses
import sys
from dataclasses import dataclass
from typing import overload

import torch
from torch import nn

from tsn.errors import TsnError
from tsn.models.base import DensePredictionModel
from tsn.models.fused import fuse_adain_blocks
from tsn.precision import native_bf16

__all__ = [
    "SpeedOptions", "fastest_options", "exact_options", "optimize", "prepare", "tune_glibc_allocator",
]


@dataclass(frozen=True)
class SpeedOptions:
    """Which speed options to apply; all off is plain float32 eager PyTorch."""

    channels_last: bool = False
    fused: bool = False
    bf16: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, text: str) -> SpeedOptions:
        """Options from a comma-separated list such as ``"channels_last,fused,bf16"`` (``""`` or ``none``: none)."""
        names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip() and n.strip() != "none"]
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise TsnError(f"unknown speed option {unknown[0]!r}; known: {', '.join(known)}")
        return cls(**{n: True for n in names})

    @property
    def precision(self) -> str:
        """The autocast precision of these options (:func:`tsn.precision.autocast`): ``bf16`` or ``none``."""
        return "bf16" if self.bf16 else "none"

    def __str__(self) -> str:
        chosen = [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]
        return ",".join(chosen) or "none"


def fastest_options(device: str | torch.device = "cpu", *, allow_bf16: bool = True) -> SpeedOptions:
    """The fastest options on ``device``'s type whose results stay within the tolerances above.

    bfloat16 is chosen (unless ``allow_bf16`` is False) only where the hardware computes it natively: CPUs with
    AVX512-BF16 / AMX, CUDA GPUs from Ampere on; elsewhere it is emulated and slower than float32. On the CPU,
    ``torch.compile`` is chosen only with bfloat16: it then removes most of the memory-bound time around the AMX
    convolutions (2.7x less CPU time), while in float32 it measured no faster than the fused eager blocks and
    costs ~30 s of compilation per input shape.
    """
    device = torch.device(device)
    if device.type == "cuda":
        bf16 = allow_bf16 and native_bf16(device)
        return SpeedOptions(channels_last=True, fused=True, bf16=bf16, compile=True)
    bf16 = allow_bf16 and native_bf16(device)
    return SpeedOptions(channels_last=True, fused=True, bf16=bf16, compile=bf16)


def exact_options(device: str | torch.device = "cpu") -> SpeedOptions:
    """The options that keep float32 results (largest output change below 1e-4 on the paper model, see
    docs/performance.md): channels_last and the fused AdaIN block, on any device. The inference commands
    (``tsn predict``, ``tsn evaluate``) use these; they need no compilation per input shape.
    """
    del device  # the same on every device; the argument keeps the signature of fastest_options
    return SpeedOptions(channels_last=True, fused=True)


@overload
def optimize(
    model: DensePredictionModel, options: SpeedOptions, *, inference: bool = True
) -> DensePredictionModel: ...


@overload
def optimize(model: nn.Module, options: SpeedOptions, *, inference: bool = True) -> nn.Module: ...


def optimize(model: nn.Module, options: SpeedOptions, *, inference: bool = True) -> nn.Module:
    """``model`` with ``options`` applied; use the returned model. Its state dict keeps its keys and values.

    ``model`` itself is changed (its weights' memory format, its AdaIN blocks replaced by fused ones through their
    parents, see :func:`tsn.models.fused.fuse_adain_blocks`): pass a copy to keep the original. Nothing outside
    the model changes. ``inference=True`` lets ``torch.compile`` freeze the weights into the compiled graph (CPU:
    pre-packed oneDNN weights); call the model under ``torch.inference_mode()`` then. Compilation happens on the
    first call with each new input shape.
    """
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.fused:
        model = fuse_adain_blocks(model)
    if options.compile:
        model.compile(options={"freezing": True} if inference else None)
    return model


def prepare(image: torch.Tensor, options: SpeedOptions) -> torch.Tensor:
    """The input in the memory format the options ask for (saves a conversion inside the first convolution)."""
    return image.contiguous(memory_format=torch.channels_last) if options.channels_last else image


def tune_glibc_allocator() -> bool:
    """Make glibc's malloc keep freed memory for reuse, for the whole process and until it exits.

    By default glibc serves large allocations (always those above 32 MB) with a fresh ``mmap``, so each large
    activation of a 512 x 512 forward is page-faulted in (zeroed by the kernel) again on every call: up to a third
    of the CPU time of a float32 forward on a 2-core VM. This turns ``mmap`` and trimming off (``mallopt``), so
    freed pages are reused: results are bit-identical, but the process keeps its peak memory until it exits, and
    every library in it allocates this way. That suits a long inference or training process, which is why it is
    never applied by default: call it explicitly (the commands' ``--tune-allocator``).

    Returns False, changing nothing, where that is not possible (not Linux, not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
