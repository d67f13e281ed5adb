"""Model presets by name (like timm's registry) and construction from a :class:`ModelConfig`."""

from __future__ import annotations

from typing import Any, Callable

from tsn.errors import TsnError
from tsn.models.base import DensePredictionModel
from tsn.models.config import ModelConfig
from tsn.tasks import DATASET_TASKS, PAPER_TASK_ORDER

__all__ = ["MODEL_PRESETS", "build_model", "create_model", "list_models", "model_config"]


def _architectures() -> dict[str, Callable[[ModelConfig], DensePredictionModel]]:
    from tsn.models.baselines import MultiHeadNet, SingleTaskNet
    from tsn.models.tsn import TaskSwitchingNet

    return {"tsn": TaskSwitchingNet, "single_task": SingleTaskNet, "multi_head": MultiHeadNet}


def _dataset(dataset: str, arch: str, **extra: Any) -> ModelConfig:
    channels = DATASET_TASKS[dataset]
    tasks = PAPER_TASK_ORDER if dataset == "pascal_context" else tuple(channels)
    return ModelConfig(arch=arch, tasks=tasks, task_channels=channels, **extra)  # type: ignore[arg-type]


MODEL_PRESETS: dict[str, ModelConfig] = {
    # The paper's exact configuration: ResNet-18 (torchvision ImageNet weights), 5 PASCAL tasks, 18,258,805 params.
    "tsn_r18_pascal": _dataset("pascal_context", "tsn", backbone="resnet18.tv_in1k"),
    "multi_head_r18_pascal": _dataset("pascal_context", "multi_head", backbone="resnet18.tv_in1k"),
    "tsn_r18_nyud": _dataset("nyud", "tsn", backbone="resnet18.tv_in1k"),
    "multi_head_r18_nyud": _dataset("nyud", "multi_head", backbone="resnet18.tv_in1k"),
    "tsn_r18_synthetic": _dataset("synthetic", "tsn", backbone="resnet18"),
    "multi_head_r18_synthetic": _dataset("synthetic", "multi_head", backbone="resnet18"),
}
"""Named configurations. Single-task baselines: ``model_config("single_task_r18_pascal", tasks=["normals"])``."""
for _name in ("pascal", "nyud", "synthetic"):
    _base = MODEL_PRESETS[f"tsn_r18_{_name}"]
    MODEL_PRESETS[f"single_task_r18_{_name}"] = _base.replace(arch="single_task", tasks=_base.tasks[:1])


def list_models() -> list[str]:
    return sorted(MODEL_PRESETS)


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """The preset's config with ``overrides`` applied (e.g. ``pretrained=True``, ``tasks=[...]``)."""
    if preset not in MODEL_PRESETS:
        raise TsnError(f"unknown model preset {preset!r}; known: {', '.join(list_models())}")
    return MODEL_PRESETS[preset].replace(**overrides)


def build_model(config: ModelConfig) -> DensePredictionModel:
    """Instantiate the model a config describes (weights freshly initialised, or pretrained backbone if asked)."""
    return _architectures()[config.arch](config)


def create_model(preset: str | ModelConfig, **overrides: Any) -> DensePredictionModel:
    """``create_model("tsn_r18_pascal")`` builds the paper's TSN; a :class:`ModelConfig` is built as given."""
    config = preset.replace(**overrides) if isinstance(preset, ModelConfig) else model_config(preset, **overrides)
    return build_model(config)
