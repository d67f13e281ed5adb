"""The baselines a TSN is compared with: one network per task, and a shared encoder with one decoder per task."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from tsn.models.architectures import register_architecture
from tsn.models.backbone import (
    UNetDecoder,
    build_encoder,
    crop,
    default_decoder_channels,
    encode,
    encoder_feature_info,
    encoder_input_multiple,
    padded_size,
)
from tsn.models.base import DensePredictionModel
from tsn.models.layers import ConvBlock
from tsn.models.model_config import ModelConfig

__all__ = ["SingleTaskNet", "MultiHeadNet"]


def _plain_decoder(config: ModelConfig, encoder: nn.Module) -> UNetDecoder:
    encoder_channels = encoder_feature_info(encoder).channels()
    decoder_channels = config.decoder_channels or default_decoder_channels(encoder_channels)
    return UNetDecoder(encoder_channels, decoder_channels, partial(ConvBlock, norm=config.norm))


@register_architecture("single_task", task_count=1)
class SingleTaskNet(DensePredictionModel):
    """The paper's single-task baseline: the same U-Net, blocks conv -> InstanceNorm(affine) -> ReLU, no task code."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = build_encoder(config)
        self.input_multiple = encoder_input_multiple(self.encoder)
        self.decoder = _plain_decoder(config, self.encoder)
        (spec,) = self.task_specs.values()
        self.head = nn.Conv2d(self.decoder.out_channels, spec.channels, kernel_size=1)

    def predict_tasks(self, image: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        features = encode(self.encoder, image, self.input_multiple)
        size = padded_size(image.shape[-2:], self.input_multiple)
        out = crop(self.head(self.decoder(features, None, size)), image.shape[-2:], self.input_multiple)
        return {name: out for name in names}


@register_architecture("multi_head", per_task_parameters=True)
class MultiHeadNet(DensePredictionModel):
    """The field's standard multi-task baseline: a shared encoder and one unconditioned decoder + head per task.

    Its parameter count grows with every task (a decoder each), unlike the TSN's.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = build_encoder(config)
        self.input_multiple = encoder_input_multiple(self.encoder)
        decoders = {name: _plain_decoder(config, self.encoder) for name in self.task_specs}
        self.decoders = nn.ModuleDict(decoders)
        self.heads = nn.ModuleDict(
            {
                name: nn.Conv2d(decoders[name].out_channels, spec.channels, kernel_size=1)
                for name, spec in self.task_specs.items()
            }
        )

    def predict_tasks(self, image: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        features = encode(self.encoder, image, self.input_multiple)
        size = padded_size(image.shape[-2:], self.input_multiple)
        outputs = {name: self.heads[name](self.decoders[name](features, None, size)) for name in names}
        return {name: crop(out, image.shape[-2:], self.input_multiple) for name, out in outputs.items()}
