"""A feature pyramid for plain (single-stride) ViTs: DPT-style reassembly of evenly spaced intermediate blocks.

A plain ViT (timm ``vit_*``, DeiT, DINOv2, EVA...) gives every block's tokens at one stride, the patch size, so a
U-Net decoder would start and end at 1/16 (or 1/14) resolution. :class:`ViTPyramid` turns four of its blocks into
four maps at 1/4, 1/2, 1, and 2 patch sizes (strides 4/8/16/32 for patch 16), the way DPT (Ranftl et al., 2021)
does: the blocks are spread evenly over the depth (2, 5, 8, 11 of 12, DPT's own choice for ViT-B), each is
projected by a 1x1 convolution and resampled by a strided transposed convolution (x4, x2), nothing, or a stride-2
3x3 convolution. DPT rather than ViTDet's simple feature pyramid (every level from the last block) because the
U-Net's skip connections are meant to carry the shallow, detailed features to the fine levels: DPT's fine levels
come from early blocks, as a CNN's come from its early stages (docs/backbones.md).

The tokens come from timm: the ViT's ``features_only`` model (``FeatureGetterNet``) calls its
``forward_intermediates``, which drops the prefix tokens (class, registers) and reshapes the patch tokens into
maps; DPT's "ignore" readout. Nothing here knows a model family: :func:`is_plain_vit` reads timm's ``feature_info``
(every level at one reduction) and the feature class.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

if TYPE_CHECKING:  # timm is imported lazily
    from timm.models import FeatureInfo

__all__ = ["PYRAMID_SCALES", "ViTPyramid", "is_plain_vit", "pyramid_blocks"]

PYRAMID_SCALES: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
"""Upsampling factor of each pyramid level relative to the ViT's patch grid, fine to coarse."""


def is_plain_vit(encoder: nn.Module) -> bool:
    """Whether a timm ``features_only`` model is a plain ViT: a feature getter (``forward_intermediates``) whose
    maps all have one reduction. Hierarchical transformers (Swin) and CNNs report several reductions."""
    from timm.models._features import FeatureGetterNet  # not re-exported by timm.models

    if not isinstance(encoder, FeatureGetterNet):
        return False
    reductions = {info["reduction"] for info in encoder.feature_info.info}
    return len(reductions) == 1


def pyramid_blocks(depth: int, levels: int = len(PYRAMID_SCALES)) -> tuple[int, ...]:
    """Indices of the blocks the ``levels`` pyramid levels read, evenly spaced and ending with the last block:
    ``(2, 5, 8, 11)`` for 12 blocks (DPT's), ``(5, 11, 17, 23)`` for 24; shallow models repeat blocks."""
    return tuple(max(0, math.ceil((level + 1) * depth / levels) - 1) for level in range(levels))


def _resample(channels: int, scale: float) -> nn.Module:
    if scale > 1:
        factor = int(scale)
        return nn.ConvTranspose2d(channels, channels, kernel_size=factor, stride=factor)
    if scale < 1:
        return nn.Conv2d(channels, channels, kernel_size=3, stride=round(1 / scale), padding=1)
    return nn.Identity()


class ViTPyramid(nn.Module):
    """A plain ViT's ``features_only`` model as a four-level NCHW pyramid (see the module docstring).

    Widths follow DPT's for ViT-B (96, 192, 384, 768 from 768): the embedding width divided by 8, 4, 2 and 1.
    ``feature_info`` describes the pyramid as timm describes any feature model (``channels()``, ``reduction()``),
    so the rest of the project treats it as one more backbone.
    """

    output_fmt = "NCHW"

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        from timm.layers import Format
        from timm.models import FeatureInfo

        vit_info = cast(FeatureInfo, vit.feature_info)
        info = vit_info.info  # every block, whichever the getter returns
        depth, width, patch = len(info), int(info[-1]["num_chs"]), int(info[-1]["reduction"])
        self.blocks = pyramid_blocks(depth)
        unique = tuple(sorted(set(self.blocks)))
        self._positions = [unique.index(block) for block in self.blocks]
        # The getter passes its out_indices to the ViT's forward_intermediates; its feature_info follows them.
        setattr(vit, "out_indices", unique)  # noqa: B010 - nn.Module's typed __setattr__ takes tensors / modules
        setattr(vit, "feature_info", vit_info.from_other(unique))  # noqa: B010
        self.vit = vit
        self._vit_format = Format(getattr(vit, "output_fmt", Format.NCHW))
        widths = [max(1, width // divisor) for divisor in (8, 4, 2, 1)]
        self.project = nn.ModuleList(nn.Conv2d(width, c, kernel_size=1) for c in widths)
        self.resample = nn.ModuleList(_resample(c, s) for c, s in zip(widths, PYRAMID_SCALES, strict=True))
        levels = [
            {"module": f"resample.{i}", "num_chs": c, "reduction": _reduction(patch, s), "index": i}
            for i, (c, s) in enumerate(zip(widths, PYRAMID_SCALES, strict=True))
        ]
        self.feature_info: FeatureInfo = FeatureInfo(levels, tuple(range(len(levels))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        from timm.layers import Format, nhwc_to

        tokens = list(self.vit(x))
        if self._vit_format == Format.NHWC:
            tokens = [nhwc_to(t, Format.NCHW) for t in tokens]
        return [
            resample(project(tokens[position]))
            for position, project, resample in zip(self._positions, self.project, self.resample, strict=True)
        ]


def _reduction(patch: int, scale: float) -> int | float:
    """Input pixels per map pixel; an integer where it is one (3.5 for the finest level of a patch-14 ViT)."""
    value = patch / scale
    return int(value) if float(value).is_integer() else value
