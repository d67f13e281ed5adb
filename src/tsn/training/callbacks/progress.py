"""The progress bar of the training epochs (tqdm), on rank 0 when the run shows progress."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tsn.training.callbacks.base import Callback

if TYPE_CHECKING:
    from tsn.training.loop import TrainLoop
    from tsn.training.schedules import Step

__all__ = ["ProgressBar"]


class ProgressBar(Callback):
    """One bar per epoch: steps done, the step's task(s) and its weighted loss (validation draws its own bar)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def before_epoch(self, loop: TrainLoop) -> None:
        from tqdm import tqdm

        c = loop.config
        self.bar = tqdm(total=len(loop.epoch_plan), initial=loop.state.position,
                        desc=f"epoch {loop.state.epoch + 1}/{c.epochs}", unit="step", leave=False,
                        dynamic_ncols=True, disable=not (self.enabled and loop.ctx.is_main))

    def after_step(self, loop: TrainLoop, step: Step, losses: Mapping[str, float]) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix(task="all" if len(step.tasks) > 1 else step.tasks[0],
                             loss=f"{sum(loop.weights[t] * v for t, v in losses.items()):.4f}", refresh=False)
        self.bar.update()

    def after_epoch(self, loop: TrainLoop) -> None:
        self.close(loop)

    def on_interrupt(self, loop: TrainLoop) -> None:
        self.close(loop)

    def close(self, loop: TrainLoop) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
