"""The model configuration: everything needed to rebuild a model, stored inside every checkpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tsn.errors import TsnError
from tsn.models.architectures import get_architecture
from tsn.models.layers import NormType
from tsn.tasks import TaskSpec, resolve_tasks

__all__ = ["ModelConfig", "PAPER_DECODER_CHANNELS"]

PAPER_DECODER_CHANNELS: tuple[int, ...] = (512, 256, 256, 128, 64)
"""Output widths of the four fusion blocks (deep to shallow) and of the final full-resolution block."""


@dataclass(frozen=True)
class ModelConfig:
    """A model's architecture. Serialised as a plain dict into every checkpoint (``to_dict`` / ``from_dict``)."""

    arch: str = "tsn"
    """The architecture's name in the registry (:mod:`tsn.models.architectures`): ``tsn``, ``multi_head``,
    ``single_task``, or one registered with :func:`tsn.register_architecture`."""
    tasks: tuple[str, ...] = ("semseg", "human_parts", "edges", "normals", "saliency")
    task_channels: Mapping[str, int] = field(default_factory=dict)
    """Channels per task where they differ from the registry default (e.g. NYUD semseg: 41)."""
    backbone: str = "resnet18"
    """Any timm model that supports ``features_only``; a pretrained tag may be given (``resnet18.tv_in1k``)."""
    pretrained: bool = False
    """Load the backbone's pretrained weights through timm (downloads on first use; never in tests). Offline, a
    backbone whose weights are neither cached nor reachable is refused in seconds with a one-line error."""
    pretrained_file: str | None = None
    """A local file with the backbone's weights (the full timm model's ``state_dict``, ``.pth`` / ``.bin`` /
    ``.safetensors``), loaded through timm's ``pretrained_cfg_overlay``; it implies ``pretrained``. For machines
    without network: copy the file that timm would download."""
    backbone_options: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``timm.create_model`` of the backbone, e.g. ``{"drop_path_rate": 0.1}`` (the
    stochastic depth of the transformer recipes, docs/backbones.md)."""
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
        try:
            architecture = get_architecture(self.arch)
        except TsnError as error:
            raise TsnError(f"config model.arch: {error}") from None
        specs = self.task_specs  # validates the task names
        object.__setattr__(self, "tasks", tuple(s.name for s in specs))
        object.__setattr__(self, "task_channels", {k: int(v) for k, v in dict(self.task_channels).items()})
        object.__setattr__(self, "backbone_options", _backbone_options(self.backbone_options))
        if self.pretrained_file is not None:
            object.__setattr__(self, "pretrained_file", str(self.pretrained_file))
            if not self.pretrained_file.strip():
                raise TsnError("model.pretrained_file is empty; give the path of a weights file, or leave it unset")
        if self.decoder_channels is not None:
            object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        architecture.check(self)
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


_RESERVED_OPTIONS = {
    "features_only": "always on",
    "pretrained": "use model.pretrained",
    "pretrained_cfg_overlay": "use model.pretrained_file",
    "dynamic_img_size": "always asked for where the backbone takes it",
    "out_indices": "the encoder returns every level timm reports",
}


def _backbone_options(options: Any) -> dict[str, Any]:
    """``backbone_options`` as a plain dict of str -> plain values, or a one-line error saying what is wrong."""
    if not isinstance(options, Mapping):
        raise TsnError(f"model.backbone_options must be a mapping such as {{drop_path_rate: 0.1}}, got {options!r}")
    for key, value in options.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise TsnError(f"model.backbone_options: {key!r} is not a keyword argument name")
        if key in _RESERVED_OPTIONS:
            raise TsnError(f"model.backbone_options: {key} is set by tsn ({_RESERVED_OPTIONS[key]})")
        if not isinstance(value, (bool, int, float, str, type(None), list, tuple)):
            raise TsnError(f"model.backbone_options.{key}: {value!r} is not a number, string, bool or list")
    # Lists, not tuples: the config is written as YAML and JSON, and read back equal.
    return {key: list(value) if isinstance(value, tuple) else value for key, value in options.items()}
