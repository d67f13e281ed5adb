"""Task Switching Networks (Sun et al., ICCV 2021) for multi-task dense prediction.

The top-level API, in the manner of timm::

    import tsn

    model = tsn.create_model("tsn_r18_pascal")          # a preset of tsn.list_models(), or a ModelConfig
    model = tsn.load_model("runs/tsn")                  # a checkpoint file or a `tsn train` run folder
    maps = tsn.predict(model, "photo.jpg")              # {task: prediction at the photo's size}, every task

plus the registries that extend the package without editing it: :func:`register_task` (a new task),
:func:`register_dataset` (a new dataset), and their lookups. ``import tsn`` is light: every name is imported on
first use (PEP 562 ``__getattr__``), so importing the package loads neither torch nor timm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "TsnError": "tsn.errors",
    # models
    "ModelConfig": "tsn.models.config",
    "create_model": "tsn.models.registry",
    "list_models": "tsn.models.registry",
    "load_model": "tsn.models.checkpoint",
    "save_checkpoint": "tsn.models.checkpoint",
    # inference
    "predict": "tsn.inference.api",
    # tasks
    "TaskSpec": "tsn.tasks",
    "get_task": "tsn.tasks",
    "register_task": "tsn.tasks",
    # datasets
    "DatasetSpec": "tsn.datasets",
    "get_dataset": "tsn.datasets",
    "list_datasets": "tsn.datasets",
    "register_dataset": "tsn.datasets",
}
"""Public name -> the module that defines it (imported when the name is first used)."""

_COMPATIBLE: dict[str, str] = {"TASKS": "tsn.tasks", "dataset_tasks": "tsn.datasets"}
"""Names ``tsn`` exported before the curated API; still reachable, no longer advertised."""

__all__ = [
    "__version__",
    "TsnError",
    "ModelConfig",
    "create_model",
    "list_models",
    "load_model",
    "save_checkpoint",
    "predict",
    "TaskSpec",
    "get_task",
    "register_task",
    "DatasetSpec",
    "get_dataset",
    "list_datasets",
    "register_dataset",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time these are loaded lazily by __getattr__
    from tsn.datasets import DatasetSpec, get_dataset, list_datasets, register_dataset
    from tsn.datasets import dataset_tasks as dataset_tasks
    from tsn.errors import TsnError
    from tsn.inference.api import predict
    from tsn.models.checkpoint import load_model, save_checkpoint
    from tsn.models.config import ModelConfig
    from tsn.models.registry import create_model, list_models
    from tsn.tasks import TASKS as TASKS
    from tsn.tasks import TaskSpec, get_task, register_task


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name) or _COMPATIBLE.get(name)
    if module is None:
        raise AttributeError(f"module 'tsn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
