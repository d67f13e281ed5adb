"""Task Switching Networks (Sun et al., ICCV 2021) for multi-task dense prediction."""

from __future__ import annotations

__version__ = "0.1.0"

from tsn.errors import TsnError
from tsn.tasks import TASKS, TaskSpec, dataset_tasks, get_task

__all__ = ["__version__", "TsnError", "TASKS", "TaskSpec", "get_task", "dataset_tasks"]
