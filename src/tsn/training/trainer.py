"""The training engine behind ``tsn train``: :func:`train` runs a config into a run directory.

One loop serves every model, schedule and launch mode. Each epoch follows its plan (:mod:`tsn.training.schedules`);
each step trains the step's task(s) on one global batch, possibly accumulated over micro-batches and spread over
``torchrun`` processes (DistributedDataParallel). Validation, the learning-rate schedule, the ``best`` checkpoint,
logging and TensorBoard happen on the epoch boundaries; ``last`` is also saved every ``checkpoint_every`` steps.

Interruptions never lose more than the steps since the last checkpoint: SIGINT (Ctrl-C) or SIGTERM finishes the
current step, saves ``last`` with the exact position in the task schedule and returns; a second signal aborts at
once. A non-finite loss stops the run before it reaches the weights, naming the task and the step, and the last
good checkpoint stays as it was. ``train(..., resume=True)`` continues a run exactly where its checkpoint left it:
the interrupted-and-resumed run ends with the weights of the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from tsn.datasets import dataset_tasks
from tsn.errors import TsnError
from tsn.models import DensePredictionModel, build_model
from tsn.models.backbone import encoder_feature_info
from tsn.models.checkpoint import load_state_dict_checked
from tsn.models.fused import fuse_adain_blocks
from tsn.tasks import TaskSpec, get_task
from tsn.training.checkpointing import (
    RunPaths,
    TrainState,
    estimate_checkpoint_bytes,
    load_training_checkpoint,
    prepare_run_dir,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from tsn.training.config import TrainConfig
from tsn.training.config_loading import apply_overrides, config_from_dict, load_config_dict
from tsn.training.distributed import DistContext, init_distributed
from tsn.training.losses import loss_weights, multitask_loss
from tsn.training.optim import build_optimizer, build_scheduler
from tsn.training.schedules import (
    ALL,
    PlanDataset,
    PlanSampler,
    Pool,
    Step,
    epoch_plan,
    micro_batch_size,
    plan_streams,
    stream_pools,
)
from tsn.training.validation import ValidationResult, autocast, resolve_amp, validate, validation_loader
from tsn.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "RunResult",
    "Criterion",
    "criterion",
    "Trainer",
    "resume_config",
    "train",
]

LOGGER = "tsn.train"


@dataclass(frozen=True)
class RunResult:
    """What :func:`train` returns (also written as ``result.json``)."""

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


# ------------------------------------------------------------------------------------------------- criterion


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
        task = _model_task(best.partition("/")[2], specs, "validation.best")
        return Criterion(best, False, lambda r: r.losses[task])
    if best == "average_drop":
        if set(reference) != set(specs):
            raise TsnError("validation.best average_drop needs validation.reference scores for exactly the model's "
                           f"tasks ({', '.join(specs)})")
        for task in specs:
            need_metric(task)
        return Criterion(best, False, lambda r: average_drop(r.headline(specs), reference, specs.values()))
    task = _model_task(best, specs, "validation.best")
    need_metric(task)
    return Criterion(f"{task}/{specs[task].metric}", specs[task].higher_is_better, lambda r: r.headline(specs)[task])


def _model_task(name: str, specs: Mapping[str, TaskSpec], what: str) -> str:
    task = get_task(name).name
    if task not in specs:
        raise TsnError(f"{what} names task {name!r}, which the model does not have ({', '.join(specs)})")
    return task


# ------------------------------------------------------------------------------------------------ checks


def _check_tasks(config: TrainConfig) -> dict[str, TaskSpec]:
    """The model's task specs, checked against the dataset's tasks and channel counts."""
    specs = {spec.name: spec for spec in config.model.task_specs}
    for name, theirs in zip(specs, dataset_tasks(config.data.dataset, list(specs)), strict=False):
        if theirs.channels != specs[name].channels:
            raise TsnError(
                f"the model predicts {specs[name].channels} channels for {name} but {config.data.dataset} has "
                f"{theirs.channels}; use the model preset of that dataset"
            )
    for name in config.data.task_transforms:
        get_task(name)  # a misspelt task is an error; a task this model lacks is simply not trained
    return specs


def _metric_tasks(config: TrainConfig, specs: Mapping[str, TaskSpec]) -> list[str]:
    chosen = config.validation.metrics
    if isinstance(chosen, bool):
        return list(specs) if chosen else []
    return [_model_task(name, specs, "validation.metrics") for name in chosen]


def _check_compiler(device: torch.device) -> None:
    """``compile: true`` on the CPU needs the C++ compiler Inductor builds its kernels with: refused before any work."""
    if device.type != "cpu":
        return
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: let torch.compile report for itself
        return
    try:
        get_cpp_compiler()
    except Exception:
        raise TsnError("config compile: torch.compile on the CPU needs a C++ compiler (g++ or clang++) and none "
                       "was found; install one, or train without it (--set compile=false)") from None


def _ignore_signals(_: int) -> None:
    """DataLoader workers leave Ctrl-C / SIGTERM to the training process, which saves before it stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _StopRequest:
    """SIGINT / SIGTERM set a flag checked after every step; a second signal aborts immediately."""

    def __init__(self, log: logging.Logger) -> None:
        self.requested, self.log = False, log
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, _frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log.info("%s received: saving a checkpoint after this step (send it again to abort without saving)",
                      signal.Signals(number).name)

    def __exit__(self, *_: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


class _ConsoleHandler(logging.Handler):
    """Log lines on stderr printed above the progress bar (``tqdm.write``) instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _release_logger() -> logging.Logger:
    """The training logger without handlers (closing the previous run's log file)."""
    log = logging.getLogger(LOGGER)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    return log


def _setup_logger(paths: RunPaths | None, console: bool) -> logging.Logger:
    """Rank 0 logs to ``train.log`` (and the console); other ranks stay silent."""
    log = _release_logger()
    log.setLevel(logging.DEBUG)
    log.propagate = False
    if paths is None:  # not rank 0: silent
        log.addHandler(logging.NullHandler())
        return log
    file_handler = logging.FileHandler(paths.log, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(file_handler)
    if console:  # the console gets epoch summaries; the file also gets the running losses
        stream = _ConsoleHandler()
        stream.setLevel(logging.INFO)
        log.addHandler(stream)
    return log


# ------------------------------------------------------------------------------------------------- trainer


class Trainer:
    """One training process (one rank): builds everything from the config, then :meth:`run` trains.

    :func:`train` is the usual entry point; the class is public for callers that need the trained ``model`` in
    memory afterwards (call :meth:`close` when done).
    """

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistContext,
        out_dir: Path,
        *,
        resume: bool,
        stop_at_step: int | None,
        progress: bool,
    ) -> None:
        self.config, self.ctx, self.stop_at_step, self.progress = config, ctx, stop_at_step, progress
        self.started = time.perf_counter()
        self.writer: Any = None
        self.specs = _check_tasks(config)
        self.weights = loss_weights(self.specs, config.loss_weights)
        self.metric_tasks = _metric_tasks(config, self.specs)
        v = config.validation
        self.criterion = criterion(v.best, self.specs, v.reference, self.metric_tasks)
        self.amp = resolve_amp(config.amp, self.ctx.device)
        if self.amp == "fp16" and self.ctx.device.type != "cuda":
            raise TsnError("amp fp16 needs a CUDA GPU; use --set amp=bf16 (or none) on the CPU")
        if config.compile:
            _check_compiler(self.ctx.device)
        self.micro_batch = micro_batch_size(config.batch_size, self.ctx.world_size, config.grad_accum)

        # Data first: a missing dataset is the likeliest mistake, and is found before any weights are downloaded.
        self.streams = plan_streams(config.schedule, list(self.specs))
        with self.ctx.main_first():
            self.train_loader, self.sampler, self.lengths = self._train_data()
            self.val_loader = self._val_data()
        torch.manual_seed(config.seed)
        with self.ctx.main_first():
            self.model = self._build_model()
        self.steps_per_epoch = len(self._plan(0))  # before the run folder: too little (labelled) data is refused
        self.paths = self._prepare_run_dir(out_dir, resume)
        self.log = _setup_logger(self.paths if self.ctx.is_main else None, console=progress)
        if self.paths.removed_temp_files:
            self.log.info(f"removed {len(self.paths.removed_temp_files)} temporary file(s) left by an interrupted save")
        total = self.steps_per_epoch * config.epochs
        self.total_steps = min(total, config.max_steps) if config.max_steps else total

        self.model.to(self.ctx.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if config.fused:  # the same parameters, so the optimizer and the checkpoints see no difference
            self.model = fuse_adain_blocks(self.model)
        self.optimizer = build_optimizer(self.model, config)
        mode: Literal["min", "max"] = "max" if self.criterion.higher_is_better else "min"
        self.scheduler = build_scheduler(self.optimizer, config.scheduler, self.total_steps, mode)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        self.state = TrainState()
        if resume:
            self._load(self.paths.last)
        # The compiled wrapper only runs the training steps: self.model (validation, checkpoints) stays uncompiled,
        # so no ``_orig_mod.`` key reaches a checkpoint. DDP is compiled as a whole (its buckets become graph breaks).
        # The losses and their backward are compiled too: full-resolution pointwise work on every task's output.
        self.wrapped = self._wrap(self.model)
        self.net = cast(nn.Module, torch.compile(self.wrapped)) if config.compile else self.wrapped
        self.loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]] = (
            torch.compile(multitask_loss) if config.compile else multitask_loss
        )
        self.writer = self._tensorboard()
        self._running: dict[str, list[float]] = {}

    # ------------------------------------------------------------------------------------------ setup
    def _build_model(self) -> DensePredictionModel:
        model = build_model(self.config.model)
        # Instance normalisation needs more than one pixel per map, also at the encoder's coarsest level.
        smallest = 2 * max(encoder_feature_info(model.encoder).reduction())
        size = self.config.data.input_size
        if min(size) < smallest:
            raise TsnError(
                f"data.size {list(size)} is too small for the {self.config.model.backbone} encoder: "
                f"use at least {smallest} x {smallest}"
            )
        return model

    def _prepare_run_dir(self, out_dir: Path, resume: bool) -> RunPaths:
        """Rank 0 checks and creates the run directory; every rank gets the same verdict."""
        error, paths = None, RunPaths(out_dir)
        if self.ctx.is_main:
            try:
                paths = prepare_run_dir(out_dir, resume=resume, checkpoint_bytes=estimate_checkpoint_bytes(self.model))
                # Rewritten on resume too: values changed with --set then stay for the next resume.
                atomic_write_text(paths.config, self.config.to_yaml())
            except TsnError as caught:
                error = str(caught)
        error = self.ctx.broadcast(error)
        if error:
            raise TsnError(error)
        return paths

    def _train_data(self) -> tuple[DataLoader, PlanSampler, dict[str, Pool]]:
        from tsn.data import build_dataset, build_transforms, collate
        from tsn.data.partial import PartialLabels

        d = self.config.data
        options = {**d.options, **d.train_options}
        kinds = {get_task(task).name: kind for task, kind in d.task_transforms.items()}
        datasets, transforms = {}, {}
        for stream in self.streams:
            names = list(self.specs) if stream == ALL else [stream]
            datasets[stream] = build_dataset(d.dataset, d.train_split, tasks=names, root=d.root, **options)
            fractions = {t: f for t, f in self.config.label_fractions.items() if t in names}
            if fractions:  # an experiment's partial labels (tsn.data.partial): the same subset on every rank
                datasets[stream] = PartialLabels(datasets[stream], fractions, self.config.seed, tasks=names)
            kind = kinds.get(stream, d.train_transform)
            transforms[stream] = build_transforms(kind, d.input_size, tasks=[self.specs[n] for n in names])
        sampler = PlanSampler(self.ctx.rank, self.ctx.world_size, self.config.grad_accum, self.config.seed)
        loader = DataLoader(
            PlanDataset(datasets, transforms),
            batch_sampler=sampler,
            num_workers=d.num_workers,
            collate_fn=collate,
            pin_memory=self.ctx.device.type == "cuda",
            persistent_workers=d.num_workers > 0,
            worker_init_fn=_ignore_signals if d.num_workers > 0 else None,
            generator=torch.Generator(),  # the loader's seed draws must not advance the global RNG
        )
        # Per-task streams draw only the samples labelled for their task.
        return loader, sampler, stream_pools(self.config.schedule, datasets)

    def _val_data(self) -> DataLoader:
        from tsn.data import build_dataset, build_transforms

        d, v = self.config.data, self.config.validation
        transform = build_transforms("eval", d.input_size, tasks=list(self.specs.values()), seed=0)
        dataset = build_dataset(
            d.dataset, d.val_split, tasks=list(self.specs), root=d.root, transform=transform,
            **{**d.options, **d.val_options},
        )
        return validation_loader(
            dataset, v.batch_size or self.micro_batch, self.ctx, num_workers=d.num_workers, max_images=v.max_images
        )

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.ctx.distributed:
            return model
        if self.config.sync_bn and self.ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # One task per step leaves a multi-head model's other decoders without gradients.
        unused = self.config.schedule != "all_tasks" and self.config.model.arch == "multi_head"
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)

    def _tensorboard(self) -> Any:
        if not (self.config.tensorboard and self.ctx.is_main):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.paths.tensorboard), purge_step=self.state.step or None)

    def _plan(self, epoch: int) -> list[Step]:
        c = self.config
        return epoch_plan(c.schedule, list(self.specs), self.lengths, c.batch_size, c.seed, epoch)

    # ------------------------------------------------------------------------------------ checkpoints
    def _training_payload(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "state": self.state.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(),
            "world_size": self.ctx.world_size,
        }

    def _save(self, *paths: Path) -> None:
        """Rank 0 writes the checkpoint(s); a failure (full disk) stops every rank with rank 0's message."""
        self.ctx.sync_buffers(self.model)
        error = None
        if self.ctx.is_main:
            payload = self._training_payload()
            try:
                for path in paths:
                    save_training_checkpoint(path, self.model, payload)
            except TsnError as caught:
                error = str(caught)
        error = self.ctx.broadcast(error)
        if error:
            raise TsnError(error)

    def _load(self, path: Path) -> None:
        payload = self.ctx.broadcast(load_training_checkpoint(path) if self.ctx.is_main else None)
        assert payload is not None  # rank 0 loaded it and the broadcast gave it to every rank
        training = payload["training"]
        load_state_dict_checked(self.model, payload["state_dict"], str(path))
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        if self.scaler is not None and training.get("scaler"):
            self.scaler.load_state_dict(training["scaler"])
        set_rng_state(training["rng"])
        self.state = TrainState.from_dict(training["state"])
        if training["config"] != self.config.to_dict():
            self.log.info("resuming with a config that differs from the checkpoint's; config.yaml holds the new one")

    # ------------------------------------------------------------------------------------------- steps
    def _micro_step(self, tasks: tuple[str, ...], batch: Mapping[str, Any], sync: bool) -> dict[str, float]:
        """Forward, loss, finiteness check and backward of one micro-batch; returns its task losses."""
        images = batch["image"].to(self.ctx.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        # self.wrapped is the DistributedDataParallel wrapper exactly when the run is distributed (see _wrap).
        net, wrapper = self.wrapped, nn.parallel.DistributedDataParallel
        no_sync = net.no_sync if isinstance(net, wrapper) and not sync else contextlib.nullcontext
        with no_sync():
            with autocast(self.ctx.device, self.amp):
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

    def _stop_now(self, stop: _StopRequest) -> bool:
        wanted = stop.requested or (self.stop_at_step is not None and self.state.step >= self.stop_at_step)
        return self.ctx.max_int(int(wanted)) > 0

    # ---------------------------------------------------------------------------------------- logging
    def _learning_rates(self) -> dict[str, float]:
        return {group.get("name", str(i)): group["lr"] for i, group in enumerate(self.optimizer.param_groups)}

    def _record_losses(self, losses: Mapping[str, float]) -> None:
        for name, value in losses.items():
            self._running.setdefault(name, []).append(value)
        if self.state.step % self.config.log_every or not self.ctx.is_main:
            return
        means = {name: sum(v) / len(v) for name, v in self._running.items()}
        self._running = {}
        if self.writer is not None:
            for name, value in means.items():
                self.writer.add_scalar(f"train/loss/{name}", value, self.state.step)
            for name, lr in self._learning_rates().items():
                self.writer.add_scalar(f"lr/{name}", lr, self.state.step)
        text = " ".join(f"{name} {value:.4f}" for name, value in means.items())
        self.log.debug("step %d: %s", self.state.step, text)

    def _record_validation(self, result: ValidationResult, value: float, improved: bool) -> None:
        """Append the validation to the history; log it and write it to TensorBoard."""
        record = {
            "epoch": self.state.epoch + 1,
            "step": self.state.step,
            "criterion": self.criterion.name,
            "value": value,
            "lr": self._learning_rates(),
            "loss": result.loss,
            "losses": result.losses,
            # scalars only: curves and per-class lists would swell every checkpoint (tsn evaluate has them all)
            "metrics": {
                name: {key: value for key, value in scores.items() if not isinstance(value, (list, dict))}
                for name, scores in result.metrics.items()
            },
            "n_images": result.n_images,
        }
        self.state.history.append(record)
        headline = result.headline(self.specs)
        if self.writer is not None:
            self.writer.add_scalar("val/loss", result.loss, self.state.step)
            for name, loss in result.losses.items():
                self.writer.add_scalar(f"val/loss/{name}", loss, self.state.step)
            for name, score in headline.items():
                self.writer.add_scalar(f"val/{name}/{self.specs[name].metric}", score, self.state.step)
            self.writer.flush()
        scores = " ".join(f"{name} {self.specs[name].metric} {score:.4f}" for name, score in headline.items())
        self.log.info(
            "epoch %d step %d: val loss %.4f %s| %s %.4f%s", self.state.epoch + 1, self.state.step, result.loss,
            scores + " " if scores else "", self.criterion.name, value, " (best)" if improved else "",
        )

    # ------------------------------------------------------------------------------------------- loop
    def _validate(self) -> ValidationResult:
        self.ctx.sync_buffers(self.model)
        v = self.config.validation
        return validate(
            self.model, self.val_loader, self.specs, self.weights, ctx=self.ctx, metric_tasks=self.metric_tasks,
            metric_options=v.metric_options, amp=self.amp, channels_last=self.config.channels_last,
            progress=self.progress,
        )

    def _end_epoch(self, last: bool) -> None:
        """Validate when due, step the plateau schedule, then save ``last`` (and ``best`` when it improved)."""
        every = self.config.validation.every
        improved = False
        if last or (every and (self.state.epoch + 1) % every == 0):
            result = self._validate()
            value = self.criterion.read(result)
            improved = self.criterion.improved(value, self.state.best_value)
            if improved:
                self.state.best_value, self.state.best_epoch = value, self.state.epoch + 1
                self.state.best_step = self.state.step
            self._record_validation(result, value, improved)
            if self.config.scheduler.name == "plateau":
                self.scheduler.step(value)
            if self.ctx.is_main:
                atomic_write_json(self.paths.history, self.state.history)
        self.state.epoch += 1
        self.state.position = 0
        self._save(self.paths.last, *([self.paths.best] if improved else []))

    def _run_epoch(self, stop: _StopRequest) -> Literal["done", "stopped", "budget"]:
        from tqdm import tqdm

        c, epoch = self.config, self.state.epoch
        plan = self._plan(epoch)
        if c.max_steps is not None:  # the budget ends inside this epoch
            plan = plan[: max(self.state.position, c.max_steps - self.state.step + self.state.position)]
        self.sampler.set_epoch(epoch, plan, self.state.position)
        self.net.train()
        batches = iter(self.train_loader)
        bar = tqdm(total=len(plan), initial=self.state.position, desc=f"epoch {epoch + 1}/{c.epochs}",
                   unit="step", leave=False, dynamic_ncols=True, disable=not (self.progress and self.ctx.is_main))
        with bar:
            for number in range(self.state.position, len(plan)):
                step = plan[number]
                losses = self._optimizer_step(step, batches)
                self.state.position = number + 1
                self._record_losses(losses)
                bar.set_postfix(task="all" if len(step.tasks) > 1 else step.tasks[0],
                                loss=f"{sum(self.weights[t] * v for t, v in losses.items()):.4f}", refresh=False)
                bar.update()
                if self._stop_now(stop):
                    return "stopped"
                if c.checkpoint_every and self.state.step % c.checkpoint_every == 0:
                    self._save(self.paths.last)
        return "budget" if c.max_steps is not None and self.state.step >= c.max_steps else "done"

    def run(self) -> RunResult:
        c = self.config
        self.log.info(
            "%s: %s %s, %s parameters, tasks %s | schedule %s, %d steps/epoch, global batch %d (%d x %d ranks x %d "
            "accumulation) on %s, precision %s | run dir %s", c.name or "training", c.model.arch, c.model.backbone,
            f"{self.model.num_parameters():,}", ", ".join(self.specs), c.schedule, self.steps_per_epoch,
            c.batch_size, self.micro_batch, self.ctx.world_size, c.grad_accum, self.ctx.device,
            ("float32" if self.amp == "none" else self.amp) + (", torch.compile" if c.compile else ""), self.paths.root,
        )
        if self.state.step:
            self.log.info("resuming at epoch %d, step %d (%d steps into the epoch)",
                          self.state.epoch + 1, self.state.step, self.state.position)
        status: Literal["finished", "interrupted"] = "finished"
        with _StopRequest(self.log) as stop:
            while self.state.epoch < c.epochs and not self._budget_spent():
                outcome = self._run_epoch(stop)
                if outcome == "stopped":
                    self._save(self.paths.last)
                    self.log.info("stopped at step %d; resume with: tsn train --resume %s",
                                  self.state.step, self.paths.root)
                    status = "interrupted"
                    break
                self._end_epoch(last=outcome == "budget" or self.state.epoch + 1 == c.epochs)
        return self._finish(status)

    def _budget_spent(self) -> bool:
        """``max_steps`` reached and its last epoch closed (validated and saved): nothing is left to do."""
        s = self.state
        return self.config.max_steps is not None and s.step >= self.config.max_steps and s.position == 0

    def _finish(self, status: Literal["finished", "interrupted"]) -> RunResult:
        s = self.state
        best = None if s.best_value is None else {
            "criterion": self.criterion.name, "value": s.best_value, "epoch": s.best_epoch, "step": s.best_step,
        }
        result = RunResult(
            run_dir=self.paths.root, status=status, epoch=s.epoch, step=s.step, best=best,
            validation=s.history[-1] if s.history else None,
            checkpoint=self.paths.best if self.paths.best.is_file() else self.paths.last,
            seconds=round(time.perf_counter() - self.started, 3),
        )
        if self.ctx.is_main:
            atomic_write_json(self.paths.result, result.to_dict())
            if status == "finished":
                summary = f"best {best['criterion']} {best['value']:.4f} at epoch {best['epoch']}" if best else ""
                self.log.info("finished: %d steps in %.0f s; %s; checkpoint %s", s.step, result.seconds, summary,
                              result.checkpoint)
        return result

    def close(self) -> None:
        """Flush TensorBoard and close the log file (the process group is the caller's)."""
        if self.writer is not None:
            self.writer.close()
        _release_logger()


def resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config of an existing run (its ``config.yaml``), with optional ``--set`` overrides."""
    path = Path(run_dir).expanduser() / "config.yaml"
    if not path.is_file():
        raise TsnError(f"{run_dir} is not a run directory (no config.yaml); give the --out folder of a tsn train run")
    return config_from_dict(apply_overrides(load_config_dict(path), overrides))


def train(
    config: TrainConfig | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> RunResult:
    """Train ``config`` into the run directory ``out_dir``, or continue the run there with ``resume=True``.

    ``config=None`` with ``resume=True`` reads the run's own ``config.yaml``. ``stop_at_step`` stops the run as a
    SIGTERM would once that many optimizer steps are done (the same checkpoint, the same resume). ``progress``
    shows progress bars and log lines on the console (the log file is always written). Under ``torchrun`` every
    process calls this; only rank 0 writes files.
    """
    if config is None:
        if not resume:
            raise TsnError("no config given; pass a config, or resume=True to continue the run in out_dir")
        config = resume_config(out_dir)
    ctx = init_distributed(config.device)
    trainer = None
    try:
        trainer = Trainer(
            config, ctx, Path(out_dir), resume=resume, stop_at_step=stop_at_step, progress=progress
        )
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        _release_logger()  # also when the trainer failed while being built
        ctx.close()
