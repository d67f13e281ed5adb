"""Task Switching Networks (Sun et al., ICCV 2021) for multi-task dense prediction.

The top-level API, in the manner of timm::

    import tsn

    model = tsn.create_model("tsn_r18_pascal")          # a preset of tsn.list_models(), or a ModelConfig
    model = tsn.load_model("runs/tsn")                  # a checkpoint file or a `tsn train` run folder
    model = tsn.load_model("hf-hub:my-lab/tsn-r18")     # a shared model (tsn.save_pretrained, `tsn push`)
    maps = tsn.predict(model, "photo.jpg")              # {task: prediction at the photo's size}, every task

plus the registries that extend the package without editing it (docs/extending.md): :func:`register_task` (a new
task), :func:`register_dataset` (a new dataset), :func:`register_kind` (a new output kind), :func:`register_loss`
(a new loss), :func:`register_architecture` (a new architecture) and :func:`register_backbone_adapter` (what a
family of backbones needs), and their lookups. ``import tsn`` is light: every name is imported on
first use (PEP 562 ``__getattr__``), so importing the package loads neither torch nor timm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "TsnError": "tsn.errors",
    # models
    "ModelConfig": "tsn.models.model_config",
    "create_model": "tsn.models.registry",
    "list_models": "tsn.models.registry",
    "load_model": "tsn.models.checkpoint",
    "save_checkpoint": "tsn.models.checkpoint",
    "save_pretrained": "tsn.hub.folder",
    "register_architecture": "tsn.models.architectures",
    "list_architectures": "tsn.models.architectures",
    "BackboneAdapter": "tsn.models.backbone_adapters",
    "register_backbone_adapter": "tsn.models.backbone_adapters",
    # losses
    "register_loss": "tsn.training.losses",
    # inference
    "predict": "tsn.inference.api",
    # tasks
    "TaskSpec": "tsn.tasks",
    "get_task": "tsn.tasks",
    "register_task": "tsn.tasks",
    # output kinds
    "OutputKind": "tsn.kinds",
    "register_kind": "tsn.kinds",
    # datasets
    "DatasetSpec": "tsn.dataset_catalog",
    "get_dataset": "tsn.dataset_catalog",
    "list_datasets": "tsn.dataset_catalog",
    "register_dataset": "tsn.dataset_catalog",
}
"""Public name -> the module that defines it (imported when the name is first used)."""

_COMPATIBLE: dict[str, str] = {"TASKS": "tsn.tasks", "dataset_tasks": "tsn.dataset_catalog"}
"""Names ``tsn`` exported before the curated API; still reachable, no longer advertised."""

__all__ = [
    "__version__",
    "TsnError",
    "ModelConfig",
    "create_model",
    "list_models",
    "load_model",
    "save_checkpoint",
    "save_pretrained",
    "register_architecture",
    "list_architectures",
    "BackboneAdapter",
    "register_backbone_adapter",
    "register_loss",
    "predict",
    "TaskSpec",
    "get_task",
    "register_task",
    "OutputKind",
    "register_kind",
    "DatasetSpec",
    "get_dataset",
    "list_datasets",
    "register_dataset",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time these are loaded lazily by __getattr__
    from tsn.dataset_catalog import DatasetSpec, get_dataset, list_datasets, register_dataset
    from tsn.dataset_catalog import dataset_tasks as dataset_tasks
    from tsn.errors import TsnError
    from tsn.hub.folder import save_pretrained
    from tsn.inference.api import predict
    from tsn.kinds import OutputKind, register_kind
    from tsn.models.architectures import list_architectures, register_architecture
    from tsn.models.backbone_adapters import BackboneAdapter, register_backbone_adapter
    from tsn.models.checkpoint import load_model, save_checkpoint
    from tsn.models.model_config import ModelConfig
    from tsn.models.registry import create_model, list_models
    from tsn.tasks import TASKS as TASKS
    from tsn.tasks import TaskSpec, get_task, register_task
    from tsn.training.losses import register_loss


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name) or _COMPATIBLE.get(name)
    if module is None:
        raise AttributeError(f"module 'tsn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
