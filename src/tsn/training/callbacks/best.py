"""Validation during training and the choice of the ``best`` checkpoint.

:class:`Validation` validates after every ``validation.every`` epochs and after the last one, reads the
criterion (``validation.best``), keeps the best value in the run's state, appends the validation to the history
and announces it to every callback (``after_validation``); the checkpoint callback then writes ``best.pt``. The
plateau learning-rate schedule steps on the criterion here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

from tsn.training.callbacks.base import Callback
from tsn.training.criterion import ValidationOutcome
from tsn.training.validation import ValidationResult, validate

if TYPE_CHECKING:
    from tsn.training.loop import TrainLoop

__all__ = ["Validation"]


class Validation(Callback):
    """Validate ``loader`` when due, choose ``best`` and announce the outcome (``after_validation``)."""

    def __init__(self, loader: DataLoader, metric_tasks: Sequence[str], *, progress: bool = True) -> None:
        self.loader, self.metric_tasks, self.progress = loader, list(metric_tasks), progress

    def due(self, loop: TrainLoop) -> bool:
        """At an epoch's end: every ``validation.every`` epochs, and always after the last epoch."""
        every = loop.config.validation.every
        return loop.is_last_epoch() or bool(every and loop.state.epoch % every == 0)

    def validate(self, loop: TrainLoop) -> ValidationResult:
        """The model's validation now (every rank takes part; every rank gets the same result)."""
        loop.ctx.sync_buffers(loop.model)
        c = loop.config
        return validate(
            loop.model, self.loader, loop.specs, loop.weights, ctx=loop.ctx, metric_tasks=self.metric_tasks,
            metric_options=c.validation.metric_options, amp=loop.precision, channels_last=c.channels_last,
            progress=self.progress,
        )

    def after_epoch(self, loop: TrainLoop) -> None:
        if not self.due(loop):
            return
        result = self.validate(loop)
        state, criterion = loop.state, loop.criterion
        value = criterion.read(result)
        improved = criterion.improved(value, state.best_value)
        if improved:
            state.best_value, state.best_epoch, state.best_step = value, state.epoch, state.step
        record = _record(loop, result, value)
        state.history.append(record)
        loop.dispatch("after_validation", ValidationOutcome(result, criterion.name, value, improved, record))
        if loop.config.scheduler.name == "plateau":
            loop.scheduler.step(value)


def _record(loop: TrainLoop, result: ValidationResult, value: float) -> dict[str, Any]:
    """The history entry of a validation (``history.json``; also kept in every checkpoint)."""
    return {
        "epoch": loop.state.epoch,
        "step": loop.state.step,
        "criterion": loop.criterion.name,
        "value": value,
        "lr": loop.learning_rates(),
        "loss": result.loss,
        "losses": result.losses,
        # scalars only: curves and per-class lists would swell every checkpoint (tsn evaluate has them all)
        "metrics": {
            name: {key: score for key, score in scores.items() if not isinstance(score, (list, dict))}
            for name, scores in result.metrics.items()
        },
        "n_images": result.n_images,
    }
