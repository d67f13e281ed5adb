"""The optimizer and the learning-rate schedule of a training run: the paper's encoder / decoder parameter groups
(with optional layer-wise decay), step-based schedules with warm-up, and ReduceLROnPlateau."""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import torch

from tsn.models import DensePredictionModel
from tsn.models.backbone import encoder_layer_ids
from tsn.training.train_config import SchedulerConfig, TrainConfig

__all__ = ["build_optimizer", "build_scheduler"]


def _parameter_groups(
    model: DensePredictionModel, lr: float, encoder_lr: float | None, layer_decay: float | None = None
) -> list[dict[str, Any]]:
    """The paper's two groups: the encoder, and everything else (decoder, task embedding, heads); with
    ``layer_decay``, one encoder group per depth (:func:`tsn.models.backbone.encoder_layer_ids`), the deepest at
    the encoder's rate and each one below at ``layer_decay`` times the rate above (BEiT's layer-wise decay)."""
    encoder = list(model.encoder.parameters())
    in_encoder = {id(p) for p in encoder}
    rest = [p for p in model.parameters() if id(p) not in in_encoder]
    top_lr = lr if encoder_lr is None else encoder_lr
    decoder = {"params": rest, "lr": lr, "name": "decoder"}
    if layer_decay is None:
        return [{"params": encoder, "lr": top_lr, "name": "encoder"}, decoder]
    ids, layers = encoder_layer_ids(model.encoder)
    groups: dict[int, list[torch.nn.Parameter]] = {}
    for name, parameter in model.encoder.named_parameters():
        groups.setdefault(ids[name], []).append(parameter)
    return [
        {"params": groups[layer], "lr": top_lr * layer_decay ** (layers - 1 - layer), "name": f"encoder.{layer}"}
        for layer in sorted(groups)
    ] + [decoder]


def build_optimizer(model: DensePredictionModel, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the two parameter groups ``encoder`` and ``decoder``."""
    o = config.optim
    groups = _parameter_groups(model, o.lr, o.encoder_lr, o.layer_decay)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    optimizer = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return optimizer(groups, lr=o.lr, weight_decay=o.weight_decay)


def _lr_factor(step: int, *, config: SchedulerConfig, total: int) -> float:
    """Multiplier of the initial learning rates after ``step`` optimizer steps (step-based schedules)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    if config.name == "cosine":
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if config.name == "poly":
        return (1 - progress) ** config.power
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: SchedulerConfig, total_steps: int, mode: Literal["min", "max"]
) -> Any:
    """ReduceLROnPlateau (stepped on validation) or a per-step LambdaLR (cosine, poly, constant + warm-up)."""
    if config.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=config.factor, patience=config.patience
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(_lr_factor, config=config, total=total_steps))
