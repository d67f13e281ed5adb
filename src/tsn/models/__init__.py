"""Models: the Task Switching Network, its single-task and multi-head baselines, presets by name."""

from tsn.models.base import DensePredictionModel
from tsn.models.baselines import MultiHeadNet, SingleTaskNet
from tsn.models.config import ModelConfig
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
]
