"""The interface every model of the project shares: ``model(image, task)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tsn.errors import TsnError
from tsn.models.model_config import ModelConfig
from tsn.tasks import TaskSpec, get_task

__all__ = ["DensePredictionModel", "TaskArg"]

TaskArg = str | Sequence[str] | None
"""One task name (returns a tensor), several (returns a dict keyed by task) or None (all tasks, a dict)."""


class DensePredictionModel(nn.Module):
    """Base class: holds the config and the task specs, and resolves the ``task`` argument of ``forward``.

    Subclasses implement ``predict_tasks(image, names) -> dict[name, raw output]``. Raw outputs have the task's
    channel count at the input's resolution; ``TaskSpec.postprocess`` turns them into predictions.
    """

    encoder: nn.Module
    """The image encoder (a timm backbone); every model sets it, training gives it its own learning rate."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.task_specs: dict[str, TaskSpec] = {spec.name: spec for spec in config.task_specs}

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.task_specs)

    def task_names(self, task: TaskArg) -> list[str]:
        """Canonical names for a ``task`` argument; unknown tasks get a one-line error."""
        requested = list(self.task_specs) if task is None else [task] if isinstance(task, str) else list(task)
        names = []
        for name in requested:
            canonical = get_task(name).name
            if canonical not in self.task_specs:
                raise TsnError(f"this model has no task {name!r}; its tasks: {', '.join(self.task_specs)}")
            names.append(canonical)
        return names

    def forward(self, image: torch.Tensor, task: TaskArg = None) -> torch.Tensor | dict[str, torch.Tensor]:
        """Run one task (``str`` -> tensor) or several (sequence or None -> dict keyed by task)."""
        names = self.task_names(task)
        outputs = self.predict_tasks(image, names)
        return outputs[names[0]] if isinstance(task, str) else outputs

    def predict_tasks(self, image: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
