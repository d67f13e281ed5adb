"""The model configuration: everything needed to rebuild a model, stored inside every checkpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tsn.errors import TsnError
from tsn.models.layers import NormType
from tsn.tasks import TaskSpec, resolve_tasks

__all__ = ["Architecture", "ModelConfig", "PAPER_DECODER_CHANNELS"]

Architecture = Literal["tsn", "single_task", "multi_head"]

PAPER_DECODER_CHANNELS: tuple[int, ...] = (512, 256, 256, 128, 64)
"""Output widths of the four fusion blocks (deep to shallow) and of the final full-resolution block."""


@dataclass(frozen=True)
class ModelConfig:
    """A model's architecture. Serialised as a plain dict into every checkpoint (``to_dict`` / ``from_dict``)."""

    arch: Architecture = "tsn"
    tasks: tuple[str, ...] = ("semseg", "human_parts", "edges", "normals", "saliency")
    task_channels: Mapping[str, int] = field(default_factory=dict)
    """Channels per task where they differ from the registry default (e.g. NYUD semseg: 41)."""
    backbone: str = "resnet18"
    """Any timm model that supports ``features_only``; a pretrained tag may be given (``resnet18.tv_in1k``)."""
    pretrained: bool = False
    """Load the backbone's pretrained weights through timm (downloads on first use; never in tests)."""
    decoder_channels: tuple[int, ...] | None = None
    """One width per encoder level: the fusion blocks deep to shallow, then the final block. None: the paper's."""
    norm: NormType = "instance"
    n_ones: int = 20
    """Length of each task's block of ones in the task code (code length = n_tasks * n_ones)."""
    n_fc: int = 8
    """Equalized-lr linear layers in the task-embedding network."""
    latent_dim: int = 100
    """Size of the task embedding ``w``."""
    output_channels: int | None = None
    """Channels of the TSN's single shared output layer; None: the largest task's."""

    def __post_init__(self) -> None:
        if self.arch not in ("tsn", "single_task", "multi_head"):
            raise TsnError(f"unknown architecture {self.arch!r}; use tsn, single_task or multi_head")
        specs = self.task_specs  # validates the task names
        object.__setattr__(self, "tasks", tuple(s.name for s in specs))
        object.__setattr__(self, "task_channels", {k: int(v) for k, v in dict(self.task_channels).items()})
        if self.decoder_channels is not None:
            object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        if self.arch == "single_task" and len(specs) != 1:
            raise TsnError(f"a single-task network has exactly one task, got {len(specs)}: {', '.join(self.tasks)}")
        if self.output_channels is not None and self.output_channels < max(s.channels for s in specs):
            raise TsnError("output_channels must be at least the largest task's channel count")

    @property
    def task_specs(self) -> tuple[TaskSpec, ...]:
        return resolve_tasks(self.tasks, self.task_channels)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tasks"] = list(self.tasks)
        data["task_channels"] = {s.name: s.channels for s in self.task_specs}
        data["decoder_channels"] = list(self.decoder_channels) if self.decoder_channels else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TsnError(f"unknown model config field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if "tasks" in values:
            values["tasks"] = tuple(values["tasks"])
        if values.get("decoder_channels") is not None:
            values["decoder_channels"] = tuple(values["decoder_channels"])
        return cls(**values)
