"""Building blocks of the TSN decoder: equalized-lr linear layers, pixel norm, (AdaIN) conv blocks, channel pooling.

Module and parameter names are chosen to read well; :mod:`tsn.models.convert` maps the authors' checkpoint names onto
them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NormType",
    "PixelNorm",
    "EqualLinear",
    "ConvBlock",
    "AdaINConvBlock",
    "modulate",
    "channel_pool_matrix",
    "pool_channels",
]

NormType = Literal["instance", "batch"]


class PixelNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps)`` over the feature axis (StyleGAN's mapping-network input norm)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class EqualLinear(nn.Module):
    """Linear layer with the equalized learning rate of StyleGAN.

    The stored weight ``weight_orig`` starts as N(0, 1) and is scaled by ``sqrt(2 / fan_in)`` at run time, so
    every layer learns at the same effective rate under Adam.
    """

    def __init__(self, in_features: int, out_features: int, bias_init: torch.Tensor | float = 0.0) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scale = math.sqrt(2.0 / in_features)
        self.weight_orig = nn.Parameter(torch.randn(out_features, in_features))
        bias = torch.zeros(out_features)
        self.bias = nn.Parameter(bias + bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_orig * self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _plain_norm(norm: NormType, channels: int, affine: bool) -> nn.InstanceNorm2d | nn.BatchNorm2d:
    if norm == "instance":
        # Statistics of the current sample, also at test time (no running stats), as the authors.
        return nn.InstanceNorm2d(channels, affine=affine, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    raise ValueError(f"unknown norm {norm!r}; use 'instance' or 'batch'")


class ConvBlock(nn.Module):
    """conv(k) -> norm (affine) -> ReLU: the unconditioned block of the single-task and multi-head baselines."""

    def __init__(self, kernel_size: int, in_channels: int, out_channels: int, norm: NormType = "instance") -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = _plain_norm(norm, out_channels, affine=True)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * scale + shift`` per sample and channel, for ``k`` modulations of every sample of ``x``.

    ``x`` is ``N x C x H x W``; ``scale`` and ``shift`` are ``kN x C``, group-major (row ``g * N + n`` modulates
    sample ``n``). The result is ``kN x C x H x W`` in the same order, written in one pass without first
    repeating ``x`` ``k`` times.
    """
    n, c = x.shape[:2]
    groups = scale.shape[0] // n
    if groups * n != scale.shape[0]:
        raise ValueError(f"{scale.shape[0]} modulations for {n} samples: need a multiple")
    if groups == 1:
        return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])
    shape = (groups, n, c, 1, 1)
    return torch.addcmul(shift.view(shape), x.unsqueeze(0), scale.view(shape)).flatten(0, 1)


class AdaINConvBlock(nn.Module):
    """conv(k) -> norm (no affine) -> ``x * scale + shift`` -> LeakyReLU(0.01), with (scale, shift) from ``style``.

    ``style`` is the task embedding ``w``; an equalized-lr linear layer maps it to ``2 * out_channels`` values whose
    bias starts at 1 for the scale half and 0 for the shift half, so an untrained block is a plain normalisation.

    ``style`` may hold ``k`` embeddings per sample of ``x`` (``kN`` rows, group-major, see :func:`modulate`). The
    convolution and the normalisation do not depend on the task, so they then run once per sample and only the
    modulation is repeated: the TSN decodes all its tasks from one pass of its lateral blocks this way.
    (BatchNorm statistics are unchanged by repeating every sample ``k`` times, so this holds for both norms.)
    """

    def __init__(
        self,
        kernel_size: int,
        in_channels: int,
        out_channels: int,
        latent_dim: int,
        norm: NormType = "instance",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = _plain_norm(norm, out_channels, affine=False)
        bias_init = torch.cat([torch.ones(out_channels), torch.zeros(out_channels)])
        self.style = EqualLinear(latent_dim, 2 * out_channels, bias_init=bias_init)
        self.negative_slope = negative_slope

    def modulation(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel ``(scale, shift)`` of this block for task embeddings ``style`` (N x latent)."""
        scale, shift = self.style(style).chunk(2, dim=1)
        return scale, shift

    def forward(self, x: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        if style is None:
            raise ValueError("AdaINConvBlock needs the task embedding")
        scale, shift = self.modulation(style)
        return F.leaky_relu(modulate(self.norm(self.conv(x)), scale, shift), self.negative_slope)


def channel_pool_matrix(in_channels: int, out_channels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``out x in`` averaging matrix equal to ``adaptive_avg_pool`` over the channel axis, in ``dtype``.

    Group ``i`` averages input channels ``floor(i * C / c) .. ceil((i + 1) * C / c) - 1`` (the authors' way of
    reading a task with ``c`` channels out of the shared ``C``-channel output layer). The weights ``1 / size`` are
    built in float64 and rounded once into ``dtype``: a float32 matrix widened to float64 would carry 1/3 with a
    1e-8 error into every float64 result.
    """
    matrix = torch.zeros(out_channels, in_channels, dtype=torch.float64)
    for i in range(out_channels):
        start = (i * in_channels) // out_channels
        end = -((-(i + 1) * in_channels) // out_channels)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix.to(dtype)


def pool_channels(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Average groups of channels of ``x`` (N x C x H x W) down to ``out_channels``; identity when equal.

    A matrix product rather than ``adaptive_avg_pool3d`` over channels: the same values to a few float64 ulps
    (one rounding of each weight, see :func:`channel_pool_matrix`), several times faster on a CPU, and it exports
    to ONNX for any channel counts.
    """
    if x.shape[1] == out_channels:
        return x
    matrix = channel_pool_matrix(x.shape[1], out_channels, dtype=x.dtype).to(device=x.device)
    return torch.einsum("oc,nchw->nohw", matrix, x)
