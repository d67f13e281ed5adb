"""The training loop: epochs of optimizer steps, with callbacks at fixed points (:mod:`tsn.training.callbacks`).

:class:`TrainLoop` holds what a run trains with (built by :class:`tsn.training.trainer.Trainer` from a config)
and does only the stepping: each epoch follows its plan (:mod:`tsn.training.schedules`), each step trains the
step's task(s) on one global batch, possibly accumulated over micro-batches and spread over ``torchrun``
processes (DistributedDataParallel). Everything else (validation and the ``best`` checkpoint, saving, logging,
TensorBoard, progress bars, signals) is a callback, and a user's callback sees the same loop.

A non-finite loss stops the run before it reaches the weights, naming the task and the step; the last good
checkpoint stays as it was.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from tsn.errors import TsnError
from tsn.models import DensePredictionModel
from tsn.precision import autocast
from tsn.tasks import TaskSpec
from tsn.training.callbacks.base import HOOKS, Callback
from tsn.training.criterion import Criterion
from tsn.training.distributed import DistContext
from tsn.training.resume import RunPaths, TrainState, save_training_checkpoint, training_payload
from tsn.training.schedules import PlanSampler, Step
from tsn.training.train_config import TrainConfig

__all__ = ["LOGGER", "RunResult", "TrainLoop"]

LOGGER = "tsn.train"
"""The logger of training runs (rank 0 writes it to ``train.log`` and the console)."""


@dataclass(frozen=True)
class RunResult:
    """What :func:`tsn.training.train` returns (also written as ``result.json``)."""

    run_dir: Path
    status: Literal["finished", "interrupted"]
    epoch: int
    """Epochs completed."""
    step: int
    """Optimizer steps completed."""
    best: dict[str, Any] | None
    """``{"criterion", "value", "epoch", "step"}`` of the best validation, or None before any validation."""
    validation: dict[str, Any] | None
    """The last validation record (losses, metrics), or None."""
    checkpoint: Path
    """``checkpoints/best.pt`` when it exists, else ``checkpoints/last.pt``."""
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(run_dir=str(self.run_dir), checkpoint=str(self.checkpoint))
        return data


@dataclass(eq=False)
class TrainLoop:
    """One process's training loop; callbacks read (and may change) its fields."""

    config: TrainConfig
    ctx: DistContext
    """This process's device, rank and collectives (``ctx.is_main``: the process that writes files)."""
    model: DensePredictionModel
    """The plain model: validation and checkpoints use it."""
    net: nn.Module
    """What the steps call: ``model``, wrapped in DistributedDataParallel and/or compiled."""
    ddp: nn.parallel.DistributedDataParallel | None
    loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    train_loader: DataLoader
    sampler: PlanSampler
    plan: Callable[[int], list[Step]]
    """Epoch -> its steps (:func:`tsn.training.schedules.epoch_plan`)."""
    specs: Mapping[str, TaskSpec]
    weights: Mapping[str, float]
    """Per-task loss weights."""
    criterion: Criterion
    paths: RunPaths
    state: TrainState
    """Epoch, step, position in the epoch's plan, best value, history: what a checkpoint restores."""
    precision: str
    """The resolved autocast precision (``none``, ``bf16`` or ``fp16``; :mod:`tsn.precision`)."""
    micro_batch: int
    steps_per_epoch: int
    total_steps: int
    callbacks: Sequence[Callback] = ()
    stop_at_step: int | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(LOGGER))
    started: float = field(default_factory=time.perf_counter)
    epoch_plan: list[Step] = field(default_factory=list)
    """The current epoch's steps (cut at ``max_steps``)."""
    stopping: bool = False
    """Set after a step when the run stops there (a signal or ``stop_at_step``): saved, then interrupted."""
    stop_requested: bool = False
    """Set by :meth:`request_stop` (SIGINT / SIGTERM through the signal callback); read after every step."""
    finish_requested: bool = False
    """Set by :meth:`finish`: the run ends, as finished, when the current epoch has ended."""

    # ------------------------------------------------------------------------------------------- hooks
    def dispatch(self, hook: str, *args: Any) -> None:
        """Call ``hook`` of every callback in order (a callback may announce ``after_validation`` this way)."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}")
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def request_stop(self) -> None:
        """Stop after the step in progress, as SIGTERM does: ``last`` is saved and the run can be resumed."""
        self.stop_requested = True

    def finish(self) -> None:
        """End the run, as finished, at the end of the current epoch (early stopping; before the first epoch: at
        once)."""
        self.finish_requested = True

    def close(self) -> None:
        """Every callback's ``close``, also when one of them fails (the first error is raised after)."""
        failure: BaseException | None = None
        for callback in self.callbacks:
            try:
                callback.close(self)
            except BaseException as error:
                failure = failure or error
        if failure is not None:
            raise failure

    # -------------------------------------------------------------------------------------------- run
    def run(self) -> RunResult:
        c = self.config
        status: Literal["finished", "interrupted"] = "finished"
        self.dispatch("before_train")
        while self.state.epoch < c.epochs and not self._budget_spent() and not self.finish_requested:
            if self._run_epoch() == "stopped":
                status = "interrupted"
                self.dispatch("on_interrupt")
                break
            self.state.epoch += 1
            self.state.position = 0
            self.dispatch("after_epoch")
        result = self._result(status)
        self.dispatch("after_train", result)
        return result

    def is_last_epoch(self) -> bool:
        """After an epoch's end: whether it was the run's last (``epochs`` reached or ``max_steps`` spent)."""
        return self.state.epoch >= self.config.epochs or self._budget_spent()

    def _budget_spent(self) -> bool:
        """``max_steps`` reached and its last epoch closed (validated and saved): nothing is left to do."""
        s = self.state
        return self.config.max_steps is not None and s.step >= self.config.max_steps and s.position == 0

    def _run_epoch(self) -> Literal["done", "stopped"]:
        c, epoch = self.config, self.state.epoch
        plan = self.plan(epoch)
        if c.max_steps is not None:  # the budget ends inside this epoch
            plan = plan[: max(self.state.position, c.max_steps - self.state.step + self.state.position)]
        self.epoch_plan = plan
        self.sampler.set_epoch(epoch, plan, self.state.position)
        self.net.train()
        batches = iter(self.train_loader)
        self.dispatch("before_epoch")
        for number in range(self.state.position, len(plan)):
            step = plan[number]
            self.dispatch("before_step", step)
            losses = self._optimizer_step(step, batches)
            self.state.position = number + 1
            self.stopping = self._stop_now()
            self.dispatch("after_step", step, losses)
            if self.stopping:
                return "stopped"
        return "done"

    def _stop_now(self) -> bool:
        wanted = self.stop_requested or (self.stop_at_step is not None and self.state.step >= self.stop_at_step)
        return self.ctx.max_int(int(wanted)) > 0  # every rank stops after the same step

    def _result(self, status: Literal["finished", "interrupted"]) -> RunResult:
        s = self.state
        best = None if s.best_value is None else {
            "criterion": self.criterion.name, "value": s.best_value, "epoch": s.best_epoch, "step": s.best_step,
        }
        return RunResult(
            run_dir=self.paths.root, status=status, epoch=s.epoch, step=s.step, best=best,
            validation=s.history[-1] if s.history else None,
            checkpoint=self.paths.best if self.paths.best.is_file() else self.paths.last,
            seconds=round(time.perf_counter() - self.started, 3),
        )

    # ------------------------------------------------------------------------------------------ steps
    def _micro_step(self, tasks: tuple[str, ...], batch: Mapping[str, Any], sync: bool) -> dict[str, float]:
        """Forward, loss, finiteness check and backward of one micro-batch; returns its task losses."""
        images = batch["image"].to(self.ctx.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        no_sync = self.ddp.no_sync if self.ddp is not None and not sync else contextlib.nullcontext
        with no_sync():
            with autocast(self.ctx.device, self.precision):
                raw = self.net(images, list(tasks))
            labels = {t: batch[t].to(self.ctx.device, non_blocking=True) for t in tasks}
            labelled = batch.get("labelled")  # partially labelled data: unlabelled samples leave the loss
            total, losses = self.loss(raw, labels, self.specs, self.weights, labelled)
            values = self._check_finite(losses)
            if labelled is not None:  # a task without a labelled sample here has no loss to log (not a zero)
                values = {t: v for t, v in values.items() if t not in labelled or bool(labelled[t].any())}
            scaled = total / self.config.grad_accum
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return values

    def _check_finite(self, losses: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The losses as floats; a non-finite one on any rank stops every rank with the task and step named."""
        values = torch.stack([v.detach().float() for v in losses.values()])
        bad = self.ctx.all_reduce_sum((~torch.isfinite(values)).float())
        if bad.any():
            task = next(name for name, flag in zip(losses, bad.tolist(), strict=True) if flag)
            kept = (
                f"the last good checkpoint {self.paths.last} is kept: resume from it"
                if self.paths.last.is_file() else "no checkpoint had been written yet: start again"
            )
            raise TsnError(
                f"non-finite loss for task {task} at step {self.state.step + 1} (epoch {self.state.epoch + 1}); "
                f"training stopped and {kept} with a lower learning rate (--set optim.lr=...) or without mixed "
                "precision (--set amp=none)"
            )
        return dict(zip(losses, values.tolist(), strict=True))

    def _optimizer_step(self, step: Step, batches: Iterator[Mapping[str, Any]]) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        accum = self.config.grad_accum
        losses: dict[str, float] = {}
        for index in range(accum):
            for name, value in self._micro_step(step.tasks, next(batches), sync=index == accum - 1).items():
                losses[name] = losses.get(name, 0.0) + value / accum
        clip = self.config.optim.grad_clip
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        if self.config.scheduler.name != "plateau":
            self.scheduler.step()
        self.state.step += 1
        return losses

    # ---------------------------------------------------------------------------------------- helpers
    def learning_rates(self) -> dict[str, float]:
        """The optimizer's current learning rate per parameter group (``encoder``, ``decoder``...)."""
        return {group.get("name", str(i)): group["lr"] for i, group in enumerate(self.optimizer.param_groups)}

    def save(self, *paths: Path) -> None:
        """Write the resumable checkpoint to ``paths`` (rank 0; every rank must call it: a full disk stops all)."""
        self.ctx.sync_buffers(self.model)
        error = None
        if self.ctx.is_main:
            payload = training_payload(self.config, self.state, self.optimizer, self.scheduler, self.scaler,
                                       self.ctx.world_size)
            try:
                for path in paths:
                    save_training_checkpoint(path, self.model, payload)
            except TsnError as caught:
                error = str(caught)
        error = self.ctx.broadcast(error)
        if error:
            raise TsnError(error)
