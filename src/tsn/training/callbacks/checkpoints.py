"""What the run folder keeps for resuming and for the record: ``last.pt``, ``best.pt``, ``history.json``,
``result.json`` (layout: :class:`tsn.training.resume.RunPaths`).

``last`` is saved every ``checkpoint_every`` optimizer steps, at every epoch's end and when the run is stopped
(so an interrupted run never loses more than the steps since the last save); ``best`` at the end of an epoch
whose validation improved the criterion. Saves are atomic: a crash leaves the previous file intact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from tsn.training.callbacks.base import Callback
from tsn.utils.io import atomic_write_json

if TYPE_CHECKING:
    from tsn.training.criterion import ValidationOutcome
    from tsn.training.loop import RunResult, TrainLoop
    from tsn.training.schedules import Step

__all__ = ["Checkpointer"]


class Checkpointer(Callback):
    """Save ``last`` / ``best`` when due and write the history and the result (rank 0 writes files)."""

    def __init__(self) -> None:
        self.improved = False

    def after_step(self, loop: TrainLoop, step: Step, losses: Mapping[str, float]) -> None:
        every = loop.config.checkpoint_every
        if every and loop.state.step % every == 0 and not loop.stopping:  # a stop saves anyway
            loop.save(loop.paths.last)

    def after_validation(self, loop: TrainLoop, outcome: ValidationOutcome) -> None:
        self.improved = self.improved or outcome.improved
        if loop.ctx.is_main:
            atomic_write_json(loop.paths.history, loop.state.history)

    def after_epoch(self, loop: TrainLoop) -> None:
        loop.save(loop.paths.last, *([loop.paths.best] if self.improved else []))
        self.improved = False

    def on_interrupt(self, loop: TrainLoop) -> None:
        loop.save(loop.paths.last)
        loop.log.info("stopped at step %d; resume with: tsn train --resume %s", loop.state.step, loop.paths.root)

    def after_train(self, loop: TrainLoop, result: RunResult) -> None:
        if loop.ctx.is_main:
            atomic_write_json(loop.paths.result, result.to_dict())
