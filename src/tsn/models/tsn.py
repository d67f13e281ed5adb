"""The Task Switching Network: one encoder, one task-conditioned decoder, one output layer for every task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import nn

from tsn.errors import TsnError
from tsn.models.backbone import (
    UNetDecoder,
    create_encoder,
    crop,
    default_decoder_channels,
    encode,
    encoder_feature_info,
    encoder_input_multiple,
    padded_size,
)
from tsn.models.base import DensePredictionModel
from tsn.models.config import ModelConfig
from tsn.models.layers import AdaINConvBlock, EqualLinear, PixelNorm, pool_channels

__all__ = ["TaskEmbeddingNet", "TaskSwitchingNet"]


class TaskEmbeddingNet(nn.Module):
    """Task code -> task embedding ``w``: PixelNorm, then ``n_fc`` x [equalized-lr Linear, LeakyReLU(0.2)].

    The task code of task ``i`` (of ``T``) is a ``T * n_ones`` vector of zeros with ones in block ``i``.
    """

    def __init__(self, num_tasks: int, n_ones: int = 20, n_fc: int = 8, latent_dim: int = 100) -> None:
        super().__init__()
        self.num_tasks, self.n_ones = num_tasks, n_ones
        layers: list[nn.Module] = [PixelNorm()]
        width = num_tasks * n_ones
        for _ in range(n_fc):
            layers += [EqualLinear(width, latent_dim), nn.LeakyReLU(0.2)]
            width = latent_dim
        self.layers = nn.Sequential(*layers)

    def task_code(self, index: torch.Tensor) -> torch.Tensor:
        """Task codes (len(index) x T*n_ones) for task indices ``index``."""
        blocks = torch.nn.functional.one_hot(index, self.num_tasks).to(torch.float32)
        return blocks.repeat_interleave(self.n_ones, dim=1)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.embed_code(self.task_code(index))

    def embed_code(self, code: torch.Tensor) -> torch.Tensor:
        """Task embeddings of arbitrary task codes (K x T*n_ones): one-hot codes, mixtures, any vector."""
        if code.ndim != 2 or code.shape[1] != self.num_tasks * self.n_ones:
            raise TsnError(f"a task code is a K x {self.num_tasks * self.n_ones} matrix for this model "
                           f"({self.num_tasks} tasks x {self.n_ones}), got shape {tuple(code.shape)}")
        return self.layers(code.to(self.layers.get_parameter("1.weight_orig")))


class TaskSwitchingNet(DensePredictionModel):
    """TSN (Sun et al., ICCV 2021): the network performs one task at a time, selected by a learned task embedding.

    ``model(image, "semseg")`` returns that task's raw output; ``model(image, ["semseg", "normals"])`` or
    ``model(image)`` returns a dict. Several tasks share one encoder pass and one pass of the lateral blocks'
    convolutions, and their decoder passes are batched (the task embeddings stacked along the batch axis), which
    gives the same outputs as separate calls because instance normalisation works per sample.
    """

    decode_pixels: int = 8 * 512 * 512
    """Most output pixels (samples x height x width) that one batched decoder call of :meth:`predict_tasks`
    handles; the remaining tasks go to further calls. It bounds the memory of all-task inference on large
    batches (8 images x 5 tasks at 512 x 512 in one call: over 10 GB in float32) and leaves the outputs unchanged."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = create_encoder(config.backbone, config.pretrained)
        self.input_multiple = encoder_input_multiple(self.encoder)
        encoder_channels = encoder_feature_info(self.encoder).channels()
        decoder_channels = config.decoder_channels or default_decoder_channels(encoder_channels)
        self.task_embedding = TaskEmbeddingNet(len(self.task_specs), config.n_ones, config.n_fc, config.latent_dim)
        block = partial(AdaINConvBlock, latent_dim=config.latent_dim, norm=config.norm)
        self.decoder = UNetDecoder(encoder_channels, decoder_channels, block)
        out = config.output_channels or max(spec.channels for spec in self.task_specs.values())
        self.head = nn.Conv2d(decoder_channels[-1], out, kernel_size=1)

    def task_index(self, names: Sequence[str]) -> torch.Tensor:
        order = list(self.task_specs)
        return torch.tensor([order.index(n) for n in names], device=self.head.weight.device)

    def embed(self, names: Sequence[str]) -> torch.Tensor:
        """Task embeddings ``w`` (len(names) x latent_dim)."""
        return self.task_embedding(self.task_index(names))

    def task_code(self, mixture: Mapping[str, float]) -> torch.Tensor:
        """The task code (1 x T*n_ones) of a weighted mixture of tasks, ``{"semseg": 0.7, "normals": 0.3}``.

        The weights multiply each task's block of ones; the embedding network's PixelNorm then rescales the code,
        so only the ratios between the weights matter. ``{"semseg": 1.0}`` is that task's own code.
        """
        names = self.task_names(list(mixture))
        weights = torch.tensor([float(w) for w in mixture.values()], dtype=torch.float32)
        if not torch.isfinite(weights).all() or (weights < 0).any() or float(weights.sum()) <= 0:
            raise TsnError(f"task mixture weights must be finite, non-negative and not all zero, got {dict(mixture)}")
        one_hot = self.task_embedding.task_code(self.task_index(names).cpu())
        return (weights[:, None] * one_hot).sum(dim=0, keepdim=True).to(self.head.weight.device)

    def decode_embeddings(self, image: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """The shared output layer's raw maps (K x N x C x H x W) for K task embeddings ``w`` (K x latent_dim).

        Any embedding is accepted: a task's own (:meth:`embed`), one of a mixed code
        (``self.task_embedding.embed_code(self.task_code({...}))``) or a point chosen in the latent space. Read
        the result as a task with ``pool_channels(raw, spec.channels)`` and ``spec.postprocess``.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.config.latent_dim:
            raise TsnError(f"task embeddings are a K x {self.config.latent_dim} matrix for this model, "
                           f"got shape {tuple(embeddings.shape)}")
        features = encode(self.encoder, image, self.input_multiple)
        batch, size = image.shape[0], padded_size(image.shape[-2:], self.input_multiple)
        style = embeddings.to(self.head.weight).repeat_interleave(batch, dim=0)
        raw = crop(self.decode(features, style, size), image.shape[-2:], self.input_multiple)
        return raw.unflatten(0, (embeddings.shape[0], batch))

    def decode_mixtures(self, image: torch.Tensor, mixtures: Sequence[Mapping[str, float]]) -> torch.Tensor:
        """Raw shared-layer maps (K x N x C x H x W) for K task mixtures (see :meth:`task_code`)."""
        codes = torch.cat([self.task_code(mixture) for mixture in mixtures])
        return self.decode_embeddings(image, self.task_embedding.embed_code(codes))

    def decode(self, features: Sequence[torch.Tensor], style: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Shared decoder + output layer for a batch whose every sample carries its own task embedding."""
        return self.head(self.decoder(features, style, size))

    def predict_tasks(self, image: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        features = encode(self.encoder, image, self.input_multiple)
        batch, size = image.shape[0], padded_size(image.shape[-2:], self.input_multiple)
        per_call = max(1, self.decode_pixels // (batch * size[0] * size[1]))
        outputs: dict[str, torch.Tensor] = {}
        for start in range(0, len(names), per_call):
            group = names[start : start + per_call]
            # Task-major (sample t * batch + n); the lateral blocks broadcast it over the unrepeated features.
            style = self.embed(group).repeat_interleave(batch, dim=0)
            raw = crop(self.decode(features, style, size), image.shape[-2:], self.input_multiple)
            for name, chunk in zip(group, raw.split(batch, dim=0), strict=True):
                outputs[name] = pool_channels(chunk, self.task_specs[name].channels)
        return outputs

    def forward_per_task(self, image: torch.Tensor, task: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The authors' way: the whole network (encoder included) once per task. Kept for parity and benchmarks."""
        return {name: self.predict_tasks(image, [name])[name] for name in self.task_names(task)}
