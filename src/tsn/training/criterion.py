"""Which validation is ``best``: the criterion of ``validation.best`` and what one validation decided.

The :class:`Criterion` reads one number from a :class:`~tsn.training.validation.ValidationResult`; the
validation callback (:class:`tsn.training.callbacks.Validation`) compares it with the best so far and hands every
callback a :class:`ValidationOutcome` (``after_validation``). The plateau learning-rate schedule steps on the same
number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tsn.errors import TsnError
from tsn.tasks import TaskSpec, get_task
from tsn.training.validation import ValidationResult

__all__ = ["Criterion", "criterion", "ValidationOutcome", "model_task"]


@dataclass(frozen=True)
class Criterion:
    """The validation value that decides ``best`` (and drives the plateau schedule)."""

    name: str
    higher_is_better: bool
    read: Callable[[ValidationResult], float]

    def improved(self, value: float, best: float | None) -> bool:
        if not math.isfinite(value):
            return False
        return best is None or (value > best if self.higher_is_better else value < best)


@dataclass(frozen=True)
class ValidationOutcome:
    """One validation during training, as every callback's ``after_validation`` receives it."""

    result: ValidationResult
    """Per-task losses, their weighted mean and the metric results."""
    criterion: str
    """The criterion's name (``loss``, ``semseg/mIoU``, ``average_drop``...)."""
    value: float
    """The criterion's value at this validation."""
    improved: bool
    """Whether this is the best validation so far (``checkpoints/best.pt`` is written at the epoch's end)."""
    record: Mapping[str, Any]
    """The entry appended to the run's history (``history.json``): epoch, step, value, learning rates, scalars."""


def criterion(
    best: str, specs: Mapping[str, TaskSpec], reference: Mapping[str, float], scored: Sequence[str]
) -> Criterion:
    """Parse ``validation.best``: ``loss``, ``loss/TASK``, ``TASK`` (its headline metric) or ``average_drop``.

    ``scored`` lists the tasks whose metrics validation computes; a criterion needing another is an error.
    """
    from tsn.metrics.multitask import average_drop

    def need_metric(task: str) -> None:
        if task not in scored:
            raise TsnError(f"validation.best {best!r} needs the {task} metric; add {task} to validation.metrics")

    if best == "loss":
        return Criterion(best, False, lambda r: r.loss)
    if best.startswith("loss/"):
        task = model_task(best.partition("/")[2], specs, "validation.best")
        return Criterion(best, False, lambda r: r.losses[task])
    if best == "average_drop":
        if set(reference) != set(specs):
            raise TsnError("validation.best average_drop needs validation.reference scores for exactly the model's "
                           f"tasks ({', '.join(specs)})")
        for task in specs:
            need_metric(task)
        return Criterion(best, False, lambda r: average_drop(r.headline(specs), reference, specs.values()))
    task = model_task(best, specs, "validation.best")
    need_metric(task)
    return Criterion(f"{task}/{specs[task].metric}", specs[task].higher_is_better, lambda r: r.headline(specs)[task])


def model_task(name: str, specs: Mapping[str, TaskSpec], what: str) -> str:
    """The canonical name of task ``name``, which must be one of the model's tasks (``what`` names the key)."""
    task = get_task(name).name
    if task not in specs:
        raise TsnError(f"{what} names task {name!r}, which the model does not have ({', '.join(specs)})")
    return task
