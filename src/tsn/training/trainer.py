"""The training engine behind ``tsn train``: :func:`train` runs a config into a run directory.

:class:`Trainer` builds one process's run from a config (data, model, optimizer, schedule, the run folder, the
restored state of a resumed run) and hands it to the loop (:class:`tsn.training.loop.TrainLoop`) with its
callbacks: the built-in ones (:mod:`tsn.training.callbacks`: progress, log, TensorBoard, validation and ``best``,
checkpoints, signals), then the config's ``callbacks`` entries, then those given to :func:`train` in Python.

Interruptions never lose more than the steps since the last checkpoint: SIGINT (Ctrl-C) or SIGTERM finishes the
current step, saves ``last`` with the exact position in the task schedule and returns; a second signal aborts at
once. ``train(..., resume=True)`` continues a run exactly where its checkpoint left it: the interrupted-and-resumed
run ends with the weights of the uninterrupted one. Everything that can refuse a run (the config, the data, the
model, the run folder, a resumed run's checkpoint) is checked before the run folder is written: a refused run
leaves no folder, a refused resume changes no file.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.utils.data import DataLoader

from tsn.dataset_catalog import dataset_tasks
from tsn.errors import TsnError
from tsn.models import DensePredictionModel, build_model
from tsn.models.architectures import get_architecture
from tsn.models.backbone import encoder_feature_info
from tsn.models.fused import fuse_adain_blocks
from tsn.precision import check_precision, grad_scaler
from tsn.tasks import TaskSpec, get_task
from tsn.training.callbacks import (
    Callback,
    Checkpointer,
    ProgressBar,
    StopOnSignal,
    TensorBoard,
    TrainLog,
    Validation,
    build_callbacks,
)
from tsn.training.callbacks.run_log import release_logger
from tsn.training.callbacks.signals import ignore_signals
from tsn.training.criterion import criterion, model_task
from tsn.training.distributed import DistContext, init_distributed
from tsn.training.loop import LOGGER, RunResult, TrainLoop
from tsn.training.losses import loss_weights, multitask_loss
from tsn.training.optim import build_optimizer, build_scheduler
from tsn.training.resume import (
    RunPaths,
    TrainState,
    check_run_dir,
    estimate_checkpoint_bytes,
    load_training_checkpoint,
    prepare_run_dir,
    restore_training,
    set_rng_state,
)
from tsn.training.schedules import (
    ALL,
    PlanDataset,
    PlanSampler,
    Pool,
    epoch_plan,
    micro_batch_size,
    plan_streams,
    stream_pools,
)
from tsn.training.train_config import TrainConfig
from tsn.training.train_config_loading import apply_overrides, config_from_dict, load_config_dict
from tsn.training.validation import validation_loader
from tsn.utils.io import atomic_write_text
from tsn.utils.processes import data_loader

__all__ = ["Trainer", "resume_config", "train"]

CallbackEntry = Callback | str | Mapping[str, Any]
"""A callback, a registered name or ``module:Name``, or ``{name: ..., options: {...}}``."""


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
    return [model_task(name, specs, "validation.metrics") for name in chosen]


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


# ------------------------------------------------------------------------------------------------ trainer


class Trainer:
    """One training process (one rank): builds the run from the config, then :meth:`run` trains.

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
        callbacks: Sequence[CallbackEntry] = (),
    ) -> None:
        self.config, self.ctx = config, ctx
        started = time.perf_counter()
        user_callbacks = build_callbacks([*config.callbacks, *callbacks])  # a bad option: refused before any work
        self._verdict(lambda: check_run_dir(out_dir, resume=resume))  # a run to resume, or none to overwrite
        self.specs = _check_tasks(config)
        weights = loss_weights(self.specs, config.loss_weights)
        metric_tasks = _metric_tasks(config, self.specs)
        v = config.validation
        best = criterion(v.best, self.specs, v.reference, metric_tasks)
        precision = check_precision(config.amp, ctx.device)
        if config.compile:
            _check_compiler(ctx.device)
        self.micro_batch = micro_batch_size(config.batch_size, ctx.world_size, config.grad_accum)

        # Data first: a missing dataset is the likeliest mistake, and is found before any weights are downloaded.
        self.streams = plan_streams(config.schedule, list(self.specs))
        with ctx.main_first():
            train_loader, sampler, lengths = self._train_data()
            val_loader = self._val_data()
        torch.manual_seed(config.seed)
        with ctx.main_first():
            model = self._build_model()
        # epoch -> its steps; a function of the config and the data only, so a resumed run replays the same plans
        plan = functools.partial(epoch_plan, config.schedule, list(self.specs), lengths, config.batch_size, config.seed)
        steps_per_epoch = len(plan(0))  # before the run folder: too little (labelled) data is refused
        total = steps_per_epoch * config.epochs
        total_steps = min(total, config.max_steps) if config.max_steps else total

        model.to(ctx.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        if config.fused:  # the same parameters, so the optimizer and the checkpoints see no difference
            model = fuse_adain_blocks(model)
        optimizer = build_optimizer(model, config)
        mode: Literal["min", "max"] = "max" if best.higher_is_better else "min"
        scheduler = build_scheduler(optimizer, config.scheduler, total_steps, mode)
        scaler = grad_scaler(precision, ctx.device)
        restored = None
        if resume:  # before anything is written: a checkpoint that cannot be resumed changes no file
            last = RunPaths(Path(out_dir).expanduser()).last
            payload = self._verdict(lambda: load_training_checkpoint(last))  # rank 0 reads, every rank loads
            restored = restore_training(last, payload, config, model, optimizer, scheduler, scaler)
        paths = self._prepare_run_dir(out_dir, resume, model)
        notes = []  # for the log, which opens when the run starts
        if paths.removed_temp_files:
            notes.append(f"removed {len(paths.removed_temp_files)} temporary file(s) left by an interrupted save")
        if restored is not None and restored.config_changed:
            notes.append("resuming with a config that differs from the checkpoint's; config.yaml holds the new one")
        state = restored.state if restored is not None else TrainState()

        # The compiled wrapper only runs the training steps: the model (validation, checkpoints) stays uncompiled,
        # so no ``_orig_mod.`` key reaches a checkpoint. DDP is compiled as a whole (its buckets become graph breaks).
        # The losses and their backward are compiled too: full-resolution pointwise work on every task's output.
        ddp = self._wrap(model)
        wrapped: nn.Module = ddp if ddp is not None else model
        builtin: list[Callback] = [
            ProgressBar(progress),
            TrainLog(console=progress, notes=tuple(notes)),
            *([TensorBoard()] if config.tensorboard else []),
            Validation(val_loader, metric_tasks, progress=progress),
            Checkpointer(),
            StopOnSignal(),
        ]
        self.loop = TrainLoop(
            config=config, ctx=ctx, model=model, ddp=ddp,
            net=cast(nn.Module, torch.compile(wrapped)) if config.compile else wrapped,
            loss=torch.compile(multitask_loss) if config.compile else multitask_loss,
            optimizer=optimizer, scheduler=scheduler, scaler=scaler, train_loader=train_loader, sampler=sampler,
            plan=plan, specs=self.specs, weights=weights,
            criterion=best, paths=paths, state=state, precision=precision, micro_batch=self.micro_batch,
            steps_per_epoch=steps_per_epoch, total_steps=total_steps, callbacks=[*builtin, *user_callbacks],
            stop_at_step=stop_at_step, started=started,
        )
        if restored is not None:  # last: nothing may draw from the restored generators before the first step
            set_rng_state(restored.rng)

    @property
    def model(self) -> DensePredictionModel:
        """The trained model (uncompiled, unwrapped)."""
        return self.loop.model

    def run(self) -> RunResult:
        return self.loop.run()

    def close(self) -> None:
        """Close every callback (log file, TensorBoard, signal handlers); the process group is the caller's."""
        self.loop.close()

    # ------------------------------------------------------------------------------------------ setup
    def _verdict(self, check: Callable[[], Any]) -> Any:
        """Run ``check`` on rank 0 and give every rank its verdict: the same one-line error, or the value."""
        error, value = None, None
        if self.ctx.is_main:
            try:
                value = check()
            except TsnError as caught:
                error = str(caught)
        error, value = self.ctx.broadcast((error, value))
        if error:
            raise TsnError(error)
        return value

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

    def _prepare_run_dir(self, out_dir: Path, resume: bool, model: nn.Module) -> RunPaths:
        """Rank 0 creates (or reopens) the run directory and writes the config; every rank gets the verdict."""

        def prepare() -> RunPaths:
            paths = prepare_run_dir(out_dir, resume=resume, checkpoint_bytes=estimate_checkpoint_bytes(model))
            # Rewritten on resume too: values changed with --set then stay for the next resume.
            atomic_write_text(paths.config, self.config.to_yaml())
            return paths

        return cast(RunPaths, self._verdict(prepare))

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
        loader = data_loader(  # workers end with this process, even after kill -9
            PlanDataset(datasets, transforms),
            batch_sampler=sampler,
            num_workers=d.num_workers,
            collate_fn=collate,
            pin_memory=self.ctx.device.type == "cuda",
            persistent_workers=d.num_workers > 0,
            worker_init_fn=ignore_signals if d.num_workers > 0 else None,
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

    def _wrap(self, model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
        """The DistributedDataParallel wrapper of ``model`` in a distributed run, else None."""
        if not self.ctx.distributed:
            return None
        if self.config.sync_bn and self.ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # One task per step leaves a multi-head model's other decoders without gradients.
        per_task = get_architecture(self.config.model.arch).per_task_parameters
        unused = self.config.schedule != "all_tasks" and per_task
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)


def resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config of an existing run (its ``config.yaml``), with optional ``--set`` overrides."""
    path = RunPaths(Path(run_dir).expanduser()).config
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
    callbacks: Sequence[CallbackEntry] = (),
) -> RunResult:
    """Train ``config`` into the run directory ``out_dir``, or continue the run there with ``resume=True``.

    ``config=None`` with ``resume=True`` reads the run's own ``config.yaml``. ``stop_at_step`` stops the run as a
    SIGTERM would once that many optimizer steps are done (the same checkpoint, the same resume). ``progress``
    shows progress bars and log lines on the console (the log file is always written). ``callbacks`` are added
    after the built-in ones and the config's (:class:`~tsn.training.callbacks.Callback` objects, registered
    names or ``module:Name``). Under ``torchrun`` every process calls this; only rank 0 writes files.
    """
    if config is None:
        if not resume:
            raise TsnError("no config given; pass a config, or resume=True to continue the run in out_dir")
        config = resume_config(out_dir)
    ctx = init_distributed(config.device)
    trainer = None
    try:
        trainer = Trainer(config, ctx, Path(out_dir), resume=resume, stop_at_step=stop_at_step, progress=progress,
                          callbacks=callbacks)
        return trainer.run()
    finally:
        try:
            if trainer is not None:
                trainer.close()
        finally:
            release_logger(logging.getLogger(LOGGER))  # also when the trainer failed while being built
            ctx.close()
