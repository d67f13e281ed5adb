"""The run's record for people: ``train.log`` (and the console) and TensorBoard scalars.

Rank 0 logs to ``train.log``; the console gets the epoch summaries above the progress bar, the file also gets
the running training losses every ``log_every`` steps. Other ranks stay silent.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tsn.training.callbacks.base import Callback

if TYPE_CHECKING:
    from tsn.training.criterion import ValidationOutcome
    from tsn.training.loop import RunResult, TrainLoop
    from tsn.training.schedules import Step

__all__ = ["TrainLog", "TensorBoard", "release_logger"]


class _ConsoleHandler(logging.Handler):
    """Log lines on stderr printed above the progress bar (``tqdm.write``) instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def release_logger(log: logging.Logger) -> None:
    """Remove (and close) every handler of ``log``: the log file of the previous run is closed."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


class _RunningLosses:
    """The training losses since the last report, averaged every ``log_every`` steps (both the log file and
    TensorBoard report the same means, so one buffer shape serves both)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add(self, loop: TrainLoop, losses: Mapping[str, float]) -> dict[str, float] | None:
        """Record one step's losses; their means since the last report when this step is a reporting step."""
        for name, value in losses.items():
            self.values.setdefault(name, []).append(value)
        if loop.state.step % loop.config.log_every:
            return None
        means = {name: sum(values) / len(values) for name, values in self.values.items()}
        self.values = {}
        return means


class TrainLog(Callback):
    """``train.log`` and the console: the run's header, running losses, validations, the end."""

    def __init__(self, console: bool = True, notes: tuple[str, ...] = ()) -> None:
        self.console, self.notes = console, notes
        self.running = _RunningLosses()

    def before_train(self, loop: TrainLoop) -> None:
        log = loop.log
        release_logger(log)
        log.setLevel(logging.DEBUG)
        log.propagate = False
        if not loop.ctx.is_main:
            log.addHandler(logging.NullHandler())
            return
        file_handler = logging.FileHandler(loop.paths.log, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(file_handler)
        if self.console:  # the console gets epoch summaries; the file also gets the running losses
            stream = _ConsoleHandler()
            stream.setLevel(logging.INFO)
            log.addHandler(stream)
        c, ctx = loop.config, loop.ctx
        log.info(
            "%s: %s %s, %s parameters, tasks %s | schedule %s, %d steps/epoch, global batch %d (%d x %d ranks x %d "
            "accumulation) on %s, precision %s | run dir %s", c.name or "training", c.model.arch, c.model.backbone,
            f"{loop.model.num_parameters():,}", ", ".join(loop.specs), c.schedule, loop.steps_per_epoch,
            c.batch_size, loop.micro_batch, ctx.world_size, c.grad_accum, ctx.device,
            ("float32" if loop.precision == "none" else loop.precision) + (", torch.compile" if c.compile else ""),
            loop.paths.root,
        )
        for note in self.notes:
            log.info("%s", note)
        if loop.state.step:
            log.info("resuming at epoch %d, step %d (%d steps into the epoch)",
                     loop.state.epoch + 1, loop.state.step, loop.state.position)

    def after_step(self, loop: TrainLoop, step: Step, losses: Mapping[str, float]) -> None:
        if not loop.ctx.is_main or (means := self.running.add(loop, losses)) is None:
            return
        loop.log.debug("step %d: %s", loop.state.step, " ".join(f"{n} {v:.4f}" for n, v in means.items()))

    def after_validation(self, loop: TrainLoop, outcome: ValidationOutcome) -> None:
        headline = outcome.result.headline(loop.specs)
        scores = " ".join(f"{name} {loop.specs[name].metric} {score:.4f}" for name, score in headline.items())
        loop.log.info(
            "epoch %d step %d: val loss %.4f %s| %s %.4f%s", outcome.record["epoch"], outcome.record["step"],
            outcome.result.loss, scores + " " if scores else "", outcome.criterion, outcome.value,
            " (best)" if outcome.improved else "",
        )

    def after_train(self, loop: TrainLoop, result: RunResult) -> None:
        if not (loop.ctx.is_main and result.status == "finished"):
            return
        best = result.best
        summary = f"best {best['criterion']} {best['value']:.4f} at epoch {best['epoch']}" if best else ""
        loop.log.info("finished: %d steps in %.0f s; %s; checkpoint %s", result.step, result.seconds, summary,
                      result.checkpoint)

    def close(self, loop: TrainLoop) -> None:
        release_logger(loop.log)


class TensorBoard(Callback):
    """TensorBoard scalars in ``RUN_DIR/tensorboard`` (rank 0): training losses and learning rates every
    ``log_every`` steps, validation losses and headline metrics at every validation."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.running = _RunningLosses()

    def before_train(self, loop: TrainLoop) -> None:
        if not loop.ctx.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the events its interrupted part wrote after the checkpoint.
        self.writer = SummaryWriter(str(loop.paths.tensorboard), purge_step=loop.state.step or None)

    def after_step(self, loop: TrainLoop, step: Step, losses: Mapping[str, float]) -> None:
        if self.writer is None or (means := self.running.add(loop, losses)) is None:
            return
        for name, value in means.items():
            self.writer.add_scalar(f"train/loss/{name}", value, loop.state.step)
        for name, lr in loop.learning_rates().items():
            self.writer.add_scalar(f"lr/{name}", lr, loop.state.step)

    def after_validation(self, loop: TrainLoop, outcome: ValidationOutcome) -> None:
        if self.writer is None:
            return
        step, result = loop.state.step, outcome.result
        self.writer.add_scalar("val/loss", result.loss, step)
        for name, loss in result.losses.items():
            self.writer.add_scalar(f"val/loss/{name}", loss, step)
        for name, score in result.headline(loop.specs).items():
            self.writer.add_scalar(f"val/{name}/{loop.specs[name].metric}", score, step)
        self.writer.flush()

    def close(self, loop: TrainLoop) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
