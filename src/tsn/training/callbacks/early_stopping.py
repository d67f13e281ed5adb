"""Early stopping: end a run whose validation criterion has stopped improving (``callbacks: [early_stopping]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tsn.training.callbacks.base import Callback, register_callback
from tsn.utils.checks import require_int

if TYPE_CHECKING:
    from tsn.training.criterion import ValidationOutcome
    from tsn.training.loop import TrainLoop

__all__ = ["EarlyStopping"]


@register_callback("early_stopping")
class EarlyStopping(Callback):
    """End the run, as finished, once ``patience`` validations in a row have not improved ``validation.best``.

    The count is read from the run's history (the validations after the best one), so a resumed run counts
    exactly as the uninterrupted one would, and resuming a run that stopped early ends at once. The epoch that
    stopped the run is saved as every epoch is (``last.pt``); ``best.pt`` holds the best validation.
    Config: ``callbacks: [{name: early_stopping, options: {patience: 5}}]``.
    """

    def __init__(self, patience: int = 10) -> None:
        self.patience = require_int("patience", patience, minimum=1)

    def stale(self, loop: TrainLoop) -> int:
        """Validations since the best one."""
        best = loop.state.best_step
        return sum(1 for record in loop.state.history if best is None or record["step"] > best)

    def before_train(self, loop: TrainLoop) -> None:
        if self.stale(loop) >= self.patience:
            loop.log.info("early stopping: the run stopped early already (patience %d); nothing to do", self.patience)
            loop.finish()

    def after_validation(self, loop: TrainLoop, outcome: ValidationOutcome) -> None:
        if self.stale(loop) < self.patience:
            return
        best = float("nan") if loop.state.best_value is None else loop.state.best_value
        loop.log.info("early stopping: %s has not improved in %d validations (best %.4f at epoch %s); the run ends "
                      "after this epoch", outcome.criterion, self.patience, best, loop.state.best_epoch)
        loop.finish()
