"""Training configuration: the typed dataclasses of a run and their range checks.

:meth:`TrainConfig.to_dict` gives the fully resolved config, the one written to every run directory. Reading YAML
presets with inheritance, ``--set key=value`` overrides and the type checks of every value are
:mod:`tsn.training.train_config_loading`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from tsn.errors import TsnError
from tsn.models import ModelConfig

__all__ = [
    "DataConfig",
    "OptimConfig",
    "SchedulerConfig",
    "ValidationConfig",
    "TrainConfig",
    "SCHEDULES",
    "validate_config",
]

ScheduleName = Literal["epoch", "round_robin", "all_tasks"]
SCHEDULES: tuple[str, ...] = typing.get_args(ScheduleName)
TransformName = Literal["tsns_train", "astmt_train", "eval"]


@dataclass(frozen=True)
class DataConfig:
    """Which data, at which resolution, with which augmentation."""

    dataset: str = "pascal_context"
    """A dataset of the registry (:func:`tsn.dataset_catalog.list_datasets`: ``synthetic``, ``pascal_context``,
    ``nyud``, ``nyuv2_13``, ``cityscapes_7``...), built by :func:`tsn.data.build_dataset`."""
    root: str | None = None
    """Data root of the real datasets (default ``$TSN_DATA_ROOT``, then ``~/.cache/tsn/data``)."""
    train_split: str = "train"
    val_split: str = "val"
    size: tuple[int, int] | int = (512, 512)
    """Network input ``(H, W)``; one integer means a square (stored as ``(H, W)``)."""
    train_transform: TransformName = "tsns_train"
    """Training pipeline of :func:`tsn.data.transforms.build_transforms` (``eval``: resize only)."""
    task_transforms: dict[str, TransformName] = field(default_factory=dict)
    """Per-task training pipelines (the paper trains normals with ``astmt_train``). They apply to the per-task
    schedules; ``all_tasks`` augments every task of a sample together with ``train_transform``. Tasks the model
    does not have are skipped, so single-task presets can inherit the mapping."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of ``build_dataset`` for both splits (synthetic: ``size``, ``seed``...)."""
    train_options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the training split only (e.g. the synthetic ``length``)."""
    val_options: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 2
    """DataLoader worker processes (0: load in the training process)."""

    def __post_init__(self) -> None:
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)
        if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):
            raise TsnError(f"config data.size must be one or two positive integers, got {self.size!r}")
        object.__setattr__(self, "size", size)

    @property
    def input_size(self) -> tuple[int, int]:
        """:attr:`size` as ``(H, W)`` (the type of ``size`` also admits the one integer a config may give)."""
        size = self.size
        return (size, size) if isinstance(size, int) else (size[0], size[1])


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer, with the paper's two learning rates: the (pretrained) encoder's and everything else's."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-4
    encoder_lr: float | None = 1e-6
    """Learning rate of ``model.encoder``; None: the same as ``lr``."""
    layer_decay: float | None = None
    """Layer-wise learning-rate decay of the encoder (transformer recipes: 0.65-0.8, docs/backbones.md): its
    deepest block trains at ``encoder_lr``, each block below at ``layer_decay`` times the one above. None: off."""
    weight_decay: float = 0.0
    momentum: float = 0.9
    """SGD only."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: no clipping)."""


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning-rate schedule: ``plateau`` steps on validation, the others on every optimizer step."""

    name: Literal["plateau", "cosine", "poly", "constant"] = "plateau"
    factor: float = 0.5
    """plateau: multiply the learning rates by this when the validation criterion stops improving."""
    patience: int = 10
    """plateau: validations without improvement before the rates drop."""
    warmup_steps: int = 0
    """cosine / poly / constant: linear warm-up from 0 over this many steps."""
    power: float = 0.9
    """poly: ``(1 - step / total) ** power``."""
    min_lr_ratio: float = 0.0
    """cosine: the final learning rate as a fraction of the initial one."""


@dataclass(frozen=True)
class ValidationConfig:
    """When and how the model is validated, and which validation is ``best``."""

    every: int = 1
    """Validate after every N epochs (and always after the last one); 0: only after the last one."""
    metrics: bool | list[str] = True
    """Tasks whose metric (:func:`tsn.metrics.make_metric`) is computed besides the validation losses: true (all),
    false (none) or a list (e.g. all but edges, whose benchmark costs about a second per real image)."""
    metric_options: dict[str, Any] = field(default_factory=dict)
    """Options of :func:`tsn.metrics.make_metric` (``edge_protocol``, ``depth_protocol``...)."""
    max_images: int | None = None
    """Validate on the first N images of the split only (None: all)."""
    batch_size: int | None = None
    """Images per validation batch on each process (None: the training micro-batch)."""
    best: str = "loss"
    """``loss`` (mean weighted validation loss, the authors'), ``loss/TASK`` (one task's validation loss),
    ``TASK`` (its headline metric, in the metric's direction) or ``average_drop`` (against ``reference``)."""
    reference: dict[str, float] = field(default_factory=dict)
    """Single-task headline scores (metric units) for ``best: average_drop``."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``to_dict`` is written to the run directory as ``config.yaml``."""

    name: str = ""
    """Free-form description (the preset's name)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    schedule: ScheduleName = "epoch"
    """Task schedule (:mod:`tsn.training.schedules`): ``epoch``, ``round_robin`` or ``all_tasks``."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """Per-task loss weights; a task not named keeps the registry's (the paper's) weight."""
    label_fractions: dict[str, float] = field(default_factory=dict)
    """Partially labelled data, for experiments: the fraction (0 < f <= 1) of training images labelled per task,
    e.g. ``{semseg: 0.25}``; a task not named keeps all its labels. The subset is a function of ``seed`` and the
    image index, nested across fractions (:mod:`tsn.data.partial`). CLI: ``--label-fraction semseg=0.25``."""
    epochs: int = 300
    max_steps: int | None = None
    """Stop after this many optimizer steps (the last epoch may be partial), then validate."""
    batch_size: int = 16
    """Samples per optimizer step, over all processes and accumulation steps (the global batch)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step (micro-batch = batch_size / (world_size * grad_accum))."""
    amp: Literal["none", "bf16", "fp16", "auto"] = "none"
    """Autocast dtype: bf16 (CUDA or CPU), fp16 (CUDA only, with a gradient scaler), or auto (bf16 where the
    hardware computes it natively: recent GPUs, CPUs with AMX / AVX512-BF16; else none)."""
    channels_last: bool = False
    """NHWC activations and weights (oneDNN's fast convolutions on CPUs; tensor cores on GPUs)."""
    fused: bool = False
    """Train with the fused AdaIN blocks (:mod:`tsn.models.fused`: instance norm, modulation and LeakyReLU as one
    affine map; the same weights and state dict, float32 rounding only). With ``channels_last`` and ``amp: bf16`` it
    is the training path ``tsn benchmark`` measures (docs/performance.md)."""
    compile: bool = False
    """Train the model and the losses through ``torch.compile`` (Inductor), for GPUs: forward and backward become
    fused kernels around the convolutions. It costs a compilation on the first steps, once per task list and input
    shape (cached on disk for the next run; the per-task schedules compile one graph per task), so it can only pay
    on long runs. Not on a CPU: on a 2-core AMX Xeon (512 x 512, bf16) the compiled step took 1.6x the eager one's
    time with 2 threads, after 2-15 min of compilation (docs/performance.md). The CPU needs a C++ compiler.
    Validation and checkpoints use the uncompiled model: the same keys, the same exact resume."""
    sync_bn: bool = False
    """Synchronise BatchNorm statistics across GPUs (CUDA DDP only)."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N`` (DDP: the local rank's GPU)."""
    checkpoint_every: int = 500
    """Save ``checkpoints/last.pt`` every N optimizer steps (0: at epoch ends only)."""
    log_every: int = 10
    """Write the training losses to the log and TensorBoard every N optimizer steps."""
    tensorboard: bool = True
    callbacks: list[str | dict[str, Any]] = field(default_factory=list)
    """Callbacks added to the training loop after the built-in ones (:mod:`tsn.training.callbacks`), in order:
    a registered name (a plugin's ``register_callback``), ``module:Name`` or ``path/to/file.py:Name``, or
    ``{name: ..., options: {...}}`` to pass keyword arguments. Each must be found when the config is loaded."""

    def __post_init__(self) -> None:
        validate_config(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-ready values (tuples as lists); ``config_from_dict(c.to_dict()) == c``."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["model"] = self.model.to_dict()
        return _plain(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------------------------- range checks

_AT_LEAST_ONE = ("epochs", "batch_size", "grad_accum", "log_every", "max_steps", "validation.max_images",
                 "validation.batch_size", "model.n_ones", "model.n_fc", "model.latent_dim", "model.output_channels")
"""Counts that must be >= 1 (those that may be null are checked only when set)."""
_AT_LEAST_ZERO = ("checkpoint_every", "seed", "data.num_workers", "validation.every", "scheduler.patience",
                  "scheduler.warmup_steps", "optim.weight_decay", "optim.encoder_lr")
"""Values that must be >= 0 (``optim.encoder_lr`` 0 freezes the encoder)."""
_POSITIVE = ("optim.lr", "optim.grad_clip", "scheduler.power")
"""Values that must be > 0 (where set)."""
_FRACTIONS = {
    "optim.momentum": (True, False),  # [0, 1)
    "scheduler.factor": (False, False),  # (0, 1): a plateau must lower the learning rate
    "scheduler.min_lr_ratio": (True, True),  # [0, 1]
}
"""Values in the unit interval: key -> (0 allowed, 1 allowed)."""


def _field(config: TrainConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def validate_config(config: TrainConfig) -> None:
    """Check the range of every value of a training config, and that the data options exist, in one place.

    Types are checked while the config is built (:func:`config_from_dict`); this checks what the types cannot say
    (a zero learning rate, a negative worker count, an option the dataset does not take), so that a bad config is
    refused before a run folder is created or any data is read. Every message names the key and how to set it.
    """
    from tsn.data import check_dataset_options
    from tsn.dataset_catalog import canonical_dataset_name
    from tsn.utils.checks import require_fraction, require_int, require_non_negative, require_positive

    def check(require: Any, key: str, value: Any, *args: Any, **kwargs: Any) -> None:
        try:
            require(f"config {key}", value, *args, **kwargs)
        except TsnError as error:
            raise TsnError(f"{error}; fix it in the config file or with --set {key}=VALUE") from None

    for key in _AT_LEAST_ONE:
        if _field(config, key) is not None:
            check(require_int, key, _field(config, key), minimum=1)
    for key in _AT_LEAST_ZERO:
        if _field(config, key) is not None:
            check(require_non_negative, key, _field(config, key))
    for key in _POSITIVE:
        if _field(config, key) is not None:
            check(require_positive, key, _field(config, key))
    for key, (zero, one) in _FRACTIONS.items():
        check(require_fraction, key, _field(config, key), include_zero=zero, include_one=one)
    if config.optim.layer_decay is not None:  # (0, 1]
        check(require_fraction, "optim.layer_decay", config.optim.layer_decay, include_zero=False, include_one=True)
    for task, weight in config.loss_weights.items():
        check(require_non_negative, f"loss_weights.{task}", weight)
    run_tasks = [spec.name for spec in config.model.task_specs]
    for task, fraction in config.label_fractions.items():
        if task not in run_tasks:
            raise TsnError(f"config label_fractions names {task!r}, which is not a task of this run "
                           f"({', '.join(run_tasks)}); use --label-fraction TASK=FRACTION with one of those")
        check(require_fraction, f"label_fractions.{task}", fraction, include_zero=False, include_one=True)
    for task, channels in config.model.task_channels.items():
        check(require_int, f"model.task_channels.{task}", channels, minimum=1)
    for width in config.model.decoder_channels or ():
        check(require_int, "model.decoder_channels", width, minimum=1)
    if config.device != "auto":
        import torch

        try:
            torch.device(config.device)
        except (RuntimeError, TypeError):
            raise TsnError(f"config device: {config.device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    d = config.data
    try:
        canonical_dataset_name(d.dataset)
    except TsnError as error:
        raise TsnError(f"config data.dataset: {error}") from None
    for section in ("options", "train_options", "val_options"):
        check_dataset_options(d.dataset, getattr(d, section), where=f"config data.{section}:")
    if config.callbacks:  # found (imported) now, so that a misspelt one is refused before any work
        from tsn.training.callbacks import check_callback_entries

        check_callback_entries(config.callbacks)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        return _plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return value
