"""Models: the Task Switching Network, its single-task and multi-head baselines, presets by name, and the
registries of architectures and backbone adapters."""

from tsn.models.architectures import ArchitectureSpec, get_architecture, list_architectures, register_architecture
from tsn.models.backbone_adapters import BackboneAdapter, get_backbone_adapter, register_backbone_adapter
from tsn.models.base import DensePredictionModel
from tsn.models.baselines import MultiHeadNet, SingleTaskNet
from tsn.models.model_config import ModelConfig
from tsn.models.registry import MODEL_PRESETS, build_model, create_model, list_models, model_config
from tsn.models.tsn import TaskEmbeddingNet, TaskSwitchingNet

__all__ = [
    "DensePredictionModel",
    "TaskSwitchingNet",
    "TaskEmbeddingNet",
    "SingleTaskNet",
    "MultiHeadNet",
    "ModelConfig",
    "MODEL_PRESETS",
    "build_model",
    "create_model",
    "list_models",
    "model_config",
    "ArchitectureSpec",
    "register_architecture",
    "get_architecture",
    "list_architectures",
    "BackboneAdapter",
    "register_backbone_adapter",
    "get_backbone_adapter",
]
