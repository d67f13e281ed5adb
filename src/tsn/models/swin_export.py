"""timm's Swin window attention and patch merging, rewritten so that ``torch.export`` traces them at every size.

Used by the ``swin_export`` backbone adapter (:mod:`tsn.models.backbone_adapters`) on the export's own copy of a
model (:func:`tsn.inference.export.export_onnx`): the same operations on the same values, with

* sizes padded up as ``(n + w - 1) // w * w``: timm's ``n + (w - n % w) % w`` (and ``n + n % 2`` in the patch
  merging) nests a ``Mod`` per stage that the exporter's symbolic algebra cannot simplify, and the trace of a
  tiny Swin had not finished after 10 minutes;
* the crop back from whole windows gathered rather than sliced (see :func:`tsn.models.backbone.crop`).

The rewrite is checked by the export's verification like every export, at sizes that need window padding and not.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["traceable_swin", "untraceable_windows"]


def untraceable_windows(encoder: nn.Module) -> str:
    """The class names of shifted-window attention blocks (modules with ``window_size`` and ``shift_size``) that
    :func:`traceable_swin` does not rewrite (Swin V2's), comma-separated; empty when there are none."""
    from timm.models.swin_transformer import SwinTransformerBlock

    names = {
        type(module).__name__
        for module in encoder.modules()
        if hasattr(module, "window_size") and hasattr(module, "shift_size")
        and not isinstance(module, SwinTransformerBlock)
    }
    return ", ".join(sorted(names))


def traceable_swin(model: nn.Module) -> None:
    """Rewrite the window attention and patch merging of timm's Swin blocks in ``model`` in place (module
    docstring); other modules are left as they are."""
    from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

    for module in model.modules():
        if isinstance(module, SwinTransformerBlock):
            module._attn = types.MethodType(_swin_window_attention, module)  # type: ignore[method-assign]
        elif isinstance(module, PatchMerging):
            module.forward = types.MethodType(_swin_patch_merging, module)  # type: ignore[method-assign]


def _swin_window_attention(block: Any, x: torch.Tensor) -> torch.Tensor:
    """timm's ``SwinTransformerBlock._attn`` (NHWC in and out), written for :func:`traceable_swin`."""
    from timm.models.swin_transformer import window_partition, window_reverse

    _, height, width, channels = x.shape
    (window_h, window_w), shift = block.window_size, block.shift_size
    shifted = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if any(shift) else x
    padded_h, padded_w = (height + window_h - 1) // window_h * window_h, (width + window_w - 1) // window_w * window_w
    shifted = F.pad(shifted, (0, 0, 0, padded_w - width, 0, padded_h - height))
    windows = window_partition(shifted, block.window_size).view(-1, block.window_area, channels)
    mask = block.get_attn_mask(shifted) if getattr(block, "dynamic_mask", False) else block.attn_mask
    attended = block.attn(windows, mask=mask).view(-1, window_h, window_w, channels)
    merged = window_reverse(attended, block.window_size, padded_h, padded_w)
    rows, columns = torch.arange(height, device=x.device), torch.arange(width, device=x.device)
    merged = merged.index_select(1, rows).index_select(2, columns)
    return torch.roll(merged, shifts=shift, dims=(1, 2)) if any(shift) else merged


def _swin_patch_merging(merging: Any, x: torch.Tensor) -> torch.Tensor:
    """timm's ``PatchMerging.forward`` (NHWC, 2 x 2 neighbours concatenated), written for :func:`traceable_swin`."""
    batch, height, width, channels = x.shape
    padded_h, padded_w = (height + 1) // 2 * 2, (width + 1) // 2 * 2
    x = F.pad(x, (0, 0, 0, padded_w - width, 0, padded_h - height))
    x = x.reshape(batch, padded_h // 2, 2, padded_w // 2, 2, channels).permute(0, 1, 3, 4, 2, 5).flatten(3)
    return merging.reduction(merging.norm(x))
