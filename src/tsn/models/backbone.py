"""Encoder: any timm backbone created with ``features_only=True``, and the U-Net decoder shared by all models."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from tsn.errors import TsnError
from tsn.models.config import PAPER_DECODER_CHANNELS

if TYPE_CHECKING:  # timm is imported lazily at run time (see create_encoder)
    from timm.models import FeatureInfo

__all__ = [
    "create_encoder",
    "encoder_feature_info",
    "default_decoder_channels",
    "UNetDecoder",
    "upsample",
    "BlockFactory",
]

BlockFactory = Callable[[int, int, int], nn.Module]
"""``(kernel_size, in_channels, out_channels) -> block``; a block is called as ``block(x, style)``."""


def create_encoder(backbone: str, pretrained: bool = False) -> nn.Module:
    """A timm ``features_only`` model returning one feature map per stage, shallow to deep.

    For ``resnet18`` these are the paper's five stages (64, 64, 128, 256, 512 channels at strides 2 to 32):
    conv1+bn1+relu, maxpool+layer1, layer2, layer3, layer4.
    """
    import timm

    try:
        return timm.create_model(backbone, pretrained=pretrained, features_only=True)
    except RuntimeError as error:  # timm's message for an unknown name
        raise TsnError(f"cannot build backbone {backbone!r}: {error}") from None
    except Exception as error:  # pragma: no cover - download failures and the like
        raise TsnError(f"cannot build backbone {backbone!r} (pretrained={pretrained}): {error}") from None


def encoder_feature_info(encoder: nn.Module) -> FeatureInfo:
    """timm's description (``channels()``, ``reduction()``) of the feature maps of a :func:`create_encoder` model."""
    # nn.Module's attribute lookup is typed ``Tensor | Module``; timm's features_only models set a FeatureInfo.
    return cast("FeatureInfo", encoder.feature_info)


def default_decoder_channels(encoder_channels: Sequence[int]) -> tuple[int, ...]:
    """The paper's widths for a five-level encoder; otherwise the encoder's own widths, deep to shallow, then 64."""
    if len(encoder_channels) == len(PAPER_DECODER_CHANNELS):
        return PAPER_DECODER_CHANNELS
    return tuple(encoder_channels[-2::-1]) + (64,)


def upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (the authors' ``Upsample(scale_factor=2)`` for sizes / 32)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class UNetDecoder(nn.Module):
    """U-Net decoder over ``n`` encoder levels, built from one kind of block.

    ``laterals[i]`` is a 1x1 block on encoder level ``i``; walking from the deepest level up, the running map is
    upsampled to the next level's size, concatenated with its lateral (upsampled path first) and fused by a 3x3
    block; finally it is upsampled to the input size and refined by ``final``.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], block: BlockFactory) -> None:
        super().__init__()
        levels = len(encoder_channels)
        if len(decoder_channels) != levels:
            raise TsnError(
                f"decoder_channels needs one width per encoder level ({levels}), got {len(decoder_channels)}"
            )
        self.laterals = nn.ModuleList(block(1, c, c) for c in encoder_channels)
        fuse, width = [], encoder_channels[-1]
        for step, level in enumerate(range(levels - 2, -1, -1)):
            fuse.append(block(3, width + encoder_channels[level], decoder_channels[step]))
            width = decoder_channels[step]
        self.fuse = nn.ModuleList(fuse)
        self.final = block(3, width, decoder_channels[-1])
        self.out_channels = decoder_channels[-1]

    def forward(
        self, features: Sequence[torch.Tensor], style: torch.Tensor | None, output_size: Sequence[int]
    ) -> torch.Tensor:
        x = self.laterals[-1](features[-1], style)
        for step, level in enumerate(range(len(features) - 2, -1, -1)):
            lateral = self.laterals[level](features[level], style)
            x = upsample(x, lateral.shape[-2:])
            x = self.fuse[step](torch.cat([x, lateral], dim=1), style)
        return self.final(upsample(x, output_size), style)
