"""The tiny training run the training tests share: a 0.6 M-parameter TSN on 64 px synthetic scenes, one task of
every output kind; each test file derives its own variant with :func:`tiny_run`."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

TINY_RUN: dict[str, Any] = {
    "name": "tiny",
    "model": {
        "preset": "tsn_r18_synthetic",
        "backbone": "mobilenetv3_small_050",  # 0.6 M parameters: a step takes milliseconds
        "decoder_channels": [16, 8, 8, 8, 8],
        "tasks": ["semseg", "saliency", "normals", "depth"],  # one task of every output kind
    },
    "data": {
        "dataset": "synthetic",
        "size": 64,
        "options": {"size": 64},
        "train_options": {"length": 12},
        "val_options": {"length": 4},
        "train_transform": "eval",
        "num_workers": 0,
    },
    "schedule": "all_tasks",
    "epochs": 2,
    "batch_size": 4,
    "optim": {"lr": 1.0e-3, "encoder_lr": 1.0e-4},
    "scheduler": {"name": "cosine", "warmup_steps": 2},
    "validation": {"every": 1, "metrics": ["semseg"]},
    "checkpoint_every": 2,
    "log_every": 1,
    "seed": 3,
    "device": "cpu",
}


def tiny_run(changes: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`TINY_RUN` with ``changes``: each value replaces its entry whole; a dotted key (``"model.backbone"``)
    replaces one entry inside a section."""
    config = copy.deepcopy(TINY_RUN)
    for key, value in changes.items():
        *sections, name = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[name] = copy.deepcopy(value)
    return config
