"""Encoder: any timm backbone created with ``features_only=True``, and the U-Net decoder shared by all models.

The decoder takes NCHW feature maps of any size. CNNs give those for any input size; transformers and MambaOut
may give channels-last (NHWC) maps, which :func:`encode` converts, reading the format timm declares on the
feature model (``output_fmt``); and backbones built on a patch embedding need whole patches, so :func:`encode`
pads the input to the size they take and the models crop their outputs back (docs/backbones.md).
"""

from __future__ import annotations

import math
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
    "encoder_input_multiple",
    "encoder_output_format",
    "encode",
    "padded_size",
    "crop",
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

    Backbones that are built for one input size (Swin, ViT) are asked for ``dynamic_img_size=True``, timm's switch
    for any input size (attention masks / position embeddings made for the input at each call); the others do not
    take that argument (timm raises TypeError naming it) and take any size anyway.
    """
    import timm

    try:
        try:
            encoder = timm.create_model(backbone, pretrained=pretrained, features_only=True, dynamic_img_size=True)
        except TypeError as error:
            if "dynamic_img_size" not in str(error):
                raise
            encoder = timm.create_model(backbone, pretrained=pretrained, features_only=True)
    except RuntimeError as error:  # timm's message for an unknown name
        raise TsnError(f"cannot build backbone {backbone!r}: {error}") from None
    except Exception as error:  # pragma: no cover - download failures and the like
        raise TsnError(f"cannot build backbone {backbone!r} (pretrained={pretrained}): {error}") from None
    output_format = encoder_output_format(encoder)
    if output_format not in ("NCHW", "NHWC"):
        raise TsnError(f"backbone {backbone!r} gives {output_format} token sequences, not feature maps; use a "
                       "backbone whose timm features_only model gives NCHW or NHWC maps (docs/backbones.md)")
    return encoder


def encoder_feature_info(encoder: nn.Module) -> FeatureInfo:
    """timm's description (``channels()``, ``reduction()``) of the feature maps of a :func:`create_encoder` model."""
    # nn.Module's attribute lookup is typed ``Tensor | Module``; timm's features_only models set a FeatureInfo.
    return cast("FeatureInfo", encoder.feature_info)


def encoder_output_format(encoder: nn.Module) -> str:
    """``"NCHW"`` or ``"NHWC"`` (or a token format): the layout timm declares for a features_only model's maps.

    timm's feature wrappers (FeatureListNet, FeatureGetterNet, FeatureHookNet) carry ``output_fmt``, taken from the
    backbone (Swin and MambaOut: NHWC); the hand-written feature classes of some CNN families (EfficientNet,
    MobileNetV3) have none and give NCHW, timm's default format.
    """
    from timm.layers import Format

    return Format(getattr(encoder, "output_fmt", Format.NCHW)).value


def encoder_input_multiple(encoder: nn.Module) -> tuple[int, int]:
    """Height and width multiples the encoder's input must have: 1 for CNNs; for a backbone with a timm patch
    embedding that needs whole patches (Swin, ViT with ``dynamic_img_size``), its patch size."""
    from timm.layers import PatchEmbed

    height, width = 1, 1
    for module in encoder.modules():
        if isinstance(module, PatchEmbed) and module.img_size is not None and not module.dynamic_img_pad:
            height = math.lcm(height, int(module.patch_size[0]))
            width = math.lcm(width, int(module.patch_size[1]))
    return height, width


def encode(encoder: nn.Module, image: torch.Tensor, multiple: Sequence[int]) -> list[torch.Tensor]:
    """The encoder's NCHW feature maps of ``image``, zero-padded at the bottom and right to the ``multiple``
    (:func:`encoder_input_multiple`) the encoder needs; decode at :func:`padded_size` and :func:`crop` back.

    Zero after the input normalisation is the dataset's mean colour; padding only the far sides keeps the image's
    pixel grid where it is, so the cropped output gives each pixel its own prediction. No multiple, no padding:
    the shapes are not even read, which keeps ``torch.export``'s symbolic sizes free.
    """
    if tuple(multiple) != (1, 1):
        height, width = padded_size(image.shape[-2:], multiple)
        image = F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2]))
    features = list(encoder(image))
    if encoder_output_format(encoder) == "NHWC":
        from timm.layers import Format, nhwc_to

        features = [nhwc_to(feature, Format.NCHW) for feature in features]
    return features


def padded_size(size: Sequence[int], multiple: Sequence[int]) -> Sequence[int]:
    """``size`` (height, width) rounded up to the ``multiple``; ``size`` itself when the multiple is 1."""
    if tuple(multiple) == (1, 1):
        return size
    return (-(-size[0] // multiple[0]) * multiple[0], -(-size[1] // multiple[1]) * multiple[1])


def crop(output: torch.Tensor, size: Sequence[int], multiple: Sequence[int]) -> torch.Tensor:
    """The top-left ``size`` of a map decoded at the :func:`padded_size`: the image's own pixels."""
    if tuple(multiple) == (1, 1):
        return output
    return output[..., : size[0], : size[1]]


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
