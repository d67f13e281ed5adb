"""The Task Switching Network: one encoder, one task-conditioned decoder, one output layer for every task."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import cast

import torch
from torch import nn

from tsn.errors import TsnError
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
from tsn.models.layers import AdaINConvBlock, EqualLinear, PixelNorm, pool_channels
from tsn.models.model_config import ModelConfig

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


@register_architecture("tsn")
class TaskSwitchingNet(DensePredictionModel):
    """TSN (Sun et al., ICCV 2021): the network performs one task at a time, selected by a learned task embedding.

    ``model(image, "semseg")`` returns that task's raw output; ``model(image, ["semseg", "normals"])`` or
    ``model(image)`` returns a dict. Several tasks share one encoder pass; their decoder passes are batched in
    groups that fit :attr:`decode_bytes` (the task embeddings stacked along the batch axis; the lateral blocks'
    convolutions run once per group), which gives the same outputs as separate calls because instance
    normalisation works per sample.
    """

    decode_bytes: int = 512 * 2**20
    """Memory budget, in bytes, for the decoder activations of one batched decoder call of :meth:`predict_tasks`.

    The tasks are streamed through the decoder in groups of one size that fit it (at least one task per call),
    estimated by :meth:`decoder_bytes_per_task` from the feature shapes and the activation dtype; the outputs do not
    depend on the grouping. The default gives one task per call for a 512 x 512 image (float32 and bfloat16), which
    measured 1.25x less CPU time than one five-task call and keeps the all-task path's peak memory below the
    authors' way's (docs/performance.md); images of 256 x 256 and below decode every task in one call."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.encoder = build_encoder(config)
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
        # In the model's precision, so that a float64 model mixes exactly (ratios of non-dyadic weights included).
        weights = torch.tensor([float(w) for w in mixture.values()], dtype=self.head.weight.dtype)
        if not torch.isfinite(weights).all() or (weights < 0).any() or float(weights.sum()) <= 0:
            raise TsnError(f"task mixture weights must be finite, non-negative and not all zero, got {dict(mixture)}")
        one_hot = self.task_embedding.task_code(self.task_index(names).cpu()).to(weights.dtype)
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
        embeddings = embeddings.to(self.head.weight)
        return torch.stack(self.decode_in_groups(image, len(embeddings), lambda rows: embeddings[rows]))

    def decode_mixtures(self, image: torch.Tensor, mixtures: Sequence[Mapping[str, float]]) -> torch.Tensor:
        """Raw shared-layer maps (K x N x C x H x W) for K task mixtures (see :meth:`task_code`)."""
        codes = torch.cat([self.task_code(mixture) for mixture in mixtures])
        return self.decode_embeddings(image, self.task_embedding.embed_code(codes))

    def decode(self, features: Sequence[torch.Tensor], style: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Shared decoder + output layer for a batch whose every sample carries its own task embedding."""
        return self.head(self.decoder(features, style, size))

    def decoder_bytes_per_task(self, features: Sequence[torch.Tensor], size: Sequence[int],
                               dtype: torch.dtype) -> int:
        """Estimated peak activation bytes that one task adds to a decoder call, per image.

        From the shapes: at every fusion block the upsampled map, the lateral map and their concatenation are alive
        while the convolution writes its output and the modulation a second map of that size (the reference block;
        the fused one works in place); at the final block the upsampled map, two output-sized maps and the output
        layer's. The largest stage, in ``dtype``'s bytes. An upper estimate: it errs towards smaller groups.
        """
        stages = []
        for step, level in enumerate(range(len(features) - 2, -1, -1)):
            conv = cast(nn.Conv2d, self.decoder.fuse[step].conv)
            pixels = features[level].shape[-2] * features[level].shape[-1]
            stages.append(pixels * 2 * (conv.in_channels + conv.out_channels))
        final = cast(nn.Conv2d, self.decoder.final.conv)
        stages.append(size[0] * size[1] * (final.in_channels + 2 * final.out_channels + self.head.out_channels))
        return max(stages) * torch.empty((), dtype=dtype).element_size()

    def tasks_per_call(self, features: Sequence[torch.Tensor], size: Sequence[int], batch: int,
                       dtype: torch.dtype) -> int:
        """How many tasks one decoder call of :meth:`predict_tasks` takes within :attr:`decode_bytes` (>= 1)."""
        return max(1, self.decode_bytes // (batch * self.decoder_bytes_per_task(features, size, dtype)))

    def decode_in_groups(
        self,
        image: torch.Tensor,
        count: int,
        embed: Callable[[slice], torch.Tensor],
        read: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """The shared output layer's raw maps (N x C x H x W) of ``image`` for ``count`` task embeddings, in order;
        ``embed(rows)`` gives the embeddings of a slice of them, and ``read(index, raw)``, when given, turns map
        ``index`` into what is kept (a task's channels), inside its group: the group's full maps are not kept.

        The encoder runs once; the embeddings go through the decoder in groups that fit :attr:`decode_bytes`
        (:meth:`tasks_per_call`), each group's temporaries freed before the next group's are made. A list, not a
        generator, so that ``torch.compile`` traces the loop without a graph break.
        """
        features = encode(self.encoder, image, self.input_multiple)
        batch, size = image.shape[0], padded_size(image.shape[-2:], self.input_multiple)
        # Under autograd every group's activations are kept for the backward pass whatever the grouping: one call.
        recording = torch.is_grad_enabled() and any(p.requires_grad for p in self.head.parameters())
        per_call = count if recording else self.tasks_per_call(features, size, batch, _activation_dtype(features[-1]))
        # Groups of one size (the largest divisor of the task count that fits): every decoder call then has the same
        # shapes. Unequal groups (3 + 2 tasks) gave a compiled model two shapes per forward: 4x slower (bf16, CPU).
        per_call = max(d for d in range(1, min(per_call, count) + 1) if count % d == 0) if count else 1
        maps: list[torch.Tensor] = []
        for start in range(0, count, per_call):
            # Task-major (sample t * batch + n); the lateral blocks broadcast it over the unrepeated features.
            style = embed(slice(start, start + per_call)).repeat_interleave(batch, dim=0)
            raw = crop(self.decode(features, style, size), image.shape[-2:], self.input_multiple)
            chunks = raw.split(batch, dim=0)
            maps.extend(chunks if read is None else (read(start + i, chunk) for i, chunk in enumerate(chunks)))
            del raw, chunks, style  # the group's temporaries go before the next group's are made
        return maps

    def predict_tasks(self, image: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        maps = self.decode_in_groups(image, len(names), lambda rows: self.embed(names[rows]),
                                     lambda index, raw: pool_channels(raw, self.task_specs[names[index]].channels))
        return dict(zip(names, maps, strict=True))

    def forward_per_task(self, image: torch.Tensor, task: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The authors' way: the whole network (encoder included) once per task. Kept for parity and benchmarks."""
        return {name: self.predict_tasks(image, [name])[name] for name in self.task_names(task)}


def _activation_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype the decoder's activations will have: autocast's where it is on for ``tensor``'s device."""
    device = tensor.device.type
    if device != "meta" and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return tensor.dtype
