"""Training configuration: typed dataclasses, YAML presets with inheritance, and ``--set key=value`` overrides.

A config is a YAML mapping whose sections mirror :class:`TrainConfig`. ``base: NAME_OR_PATH`` inherits another
config (deep-merged, the child wins). ``model`` takes any :class:`~tsn.models.ModelConfig` field plus ``preset``
(a model preset name, :func:`tsn.models.list_models`) to start from. Every value is checked against its field's
type when the config is built, so ``--set optim.lr=fast`` or ``--set data.sizee=64`` fail with one line naming the
key. A training preset has the name of the model preset it trains (``tsn_r18_pascal``, ``multihead_r18_pascal``,
``single_r18_pascal.normals``; see :mod:`tsn.models.registry`): each TSN recipe is a file ``tsn/configs/*.yaml``,
its baselines are derived from it by a rule (:func:`_derived_recipe`), and :func:`list_presets` names them all.
Names of the earlier scheme (``pascal-tsn-r18``, ``pascal-single-normals``...) still work, with a one-line note.
:meth:`TrainConfig.to_dict` gives the fully resolved config, the one written to every run directory.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from tsn.errors import TsnError
from tsn.models import ModelConfig, model_config

__all__ = [
    "DataConfig",
    "OptimConfig",
    "SchedulerConfig",
    "ValidationConfig",
    "TrainConfig",
    "SCHEDULES",
    "list_presets",
    "RENAMED_PRESETS",
    "load_config_dict",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "validate_config",
]

ScheduleName = Literal["epoch", "round_robin", "all_tasks"]
SCHEDULES: tuple[str, ...] = typing.get_args(ScheduleName)
TransformName = Literal["tsns_train", "astmt_train", "eval"]


@dataclass(frozen=True)
class DataConfig:
    """Which data, at which resolution, with which augmentation."""

    dataset: str = "pascal_context"
    """A dataset of the registry (:func:`tsn.datasets.list_datasets`: ``synthetic``, ``pascal_context``, ``nyud``,
    ``nyuv2_13``, ``cityscapes_7``...), built by :func:`tsn.data.build_dataset`."""
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
    from tsn.datasets import canonical_dataset_name
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


# ------------------------------------------------------------------------------------------------ loading


RENAMED_PRESETS: dict[str, str] = {
    **{f"{old}-tsn-r18": f"tsn_r18_{old}" for old in ("pascal", "nyud")},
    **{f"{old}-multihead-r18": f"multihead_r18_{old}" for old in ("pascal", "nyud")},
    "synthetic-tsn": "tsn_r10t_synthetic",
    "synthetic-multihead": "multihead_r10t_synthetic",
}
"""Training preset names before the one naming scheme -> today's; they still work and print a note."""
_RENAMED_SINGLE_PREFIXES = {"pascal-single-": "single_r18_pascal.", "nyud-single-": "single_r18_nyud.",
                            "synthetic-single-": "single_r10t_synthetic."}
"""``pascal-single-<task>`` -> ``single_r18_pascal.<task>`` and so on."""


def _packaged() -> list[str]:
    """Names of the recipe files ``tsn/configs/*.yaml``."""
    folder = resources.files("tsn") / "configs"
    return sorted(item.name[: -len(".yaml")] for item in folder.iterdir() if item.name.endswith(".yaml"))


def _derived_recipe(name: str, packaged: Sequence[str]) -> dict[str, Any] | None:
    """The raw mapping of a baseline recipe derived from its TSN's recipe file, or None if ``name`` is not one.

    ``multihead_<family>``: the recipe of ``tsn_<family>`` with the multi-head model, every batch training all tasks
    with one weighted loss (the usual way to train this baseline). ``single_<family>.<task>``: the same recipe with
    the single-task network of ``task``, validated with its metric when the TSN's recipe validates that task's
    metric (the edge benchmark is left to ``tsn evaluate`` in both). A recipe file of the same name wins.
    """
    from tsn.models.registry import MODEL_PRESETS, split_task

    preset, task = split_task(name)
    arch, _, family = preset.partition("_")
    base = f"tsn_{family}"
    if arch not in ("multihead", "single") or base not in packaged or preset not in MODEL_PRESETS:
        return None
    if arch == "multihead" and task is None:
        return {"base": base, "name": name, "model": {"preset": preset}, "schedule": "all_tasks"}
    if arch != "single" or task is None:
        return None
    base_data = load_config_dict(base)
    metrics = base_data.get("validation", {}).get("metrics", True)
    validate = metrics is True or (isinstance(metrics, list) and task in metrics)
    # The task is checked against the family's tasks when the model config is built (one-line error).
    return {"base": base, "name": name, "model": {"preset": preset, "tasks": [task]},
            "validation": {"metrics": validate}}


def list_presets() -> list[str]:
    """Every training preset, usable as ``--config NAME``: the recipe files (``tsn/configs/*.yaml``) and the
    baselines derived from each TSN recipe (``multihead_<family>``, ``single_<family>.<task>``)."""
    from tsn.models.registry import MODEL_PRESETS, list_models

    packaged = _packaged()
    names = set(packaged)
    for recipe in packaged:
        family = recipe.removeprefix("tsn_")
        if recipe.startswith("tsn_") and f"single_{family}" in MODEL_PRESETS:
            names.add(f"multihead_{family}")
            own_tasks = load_config_dict(recipe).get("model", {}).get("tasks")  # a recipe may train fewer tasks
            singles = list_models(f"single_{family}.*")
            names.update(name for name in singles if own_tasks is None or name.partition(".")[2] in own_tasks)
    return sorted(names)


def _canonical_preset(source: str) -> str | None:
    """``source`` as today's preset name if it names a preset (old names with a note), else None (a path)."""
    from tsn.models.registry import MODEL_PRESETS, announce_rename, list_models, split_task

    new = RENAMED_PRESETS.get(source)
    for old_prefix, new_prefix in _RENAMED_SINGLE_PREFIXES.items():
        if source.startswith(old_prefix) and source.removeprefix(old_prefix).isidentifier():  # not a file name
            new = new_prefix + source.removeprefix(old_prefix)
    if new is not None:
        announce_rename("training preset", source, new)
        return new
    packaged = _packaged()
    preset, task = split_task(source)
    family_recipe = f"tsn_{preset.partition('_')[2]}"
    baseline = (task is None and preset.startswith("multihead_") and preset in MODEL_PRESETS) or (
        preset.startswith("single_") and source in list_models()
    )
    return source if source in packaged or (baseline and family_recipe in packaged) else None


def _preset_list_text() -> str:
    """The presets for an error message, each family's single-task ones folded into ``single_<family>.TASK``."""
    shown = {name.split(".")[0] + (".TASK" if "." in name else "") for name in list_presets()}
    return ", ".join(sorted(shown))


def _read_yaml(source: str | Path) -> tuple[dict[str, Any], Path | None]:
    """A preset name or a YAML path -> (mapping, the file's folder for relative ``base`` paths)."""
    from tsn.models.registry import MODEL_PRESETS, split_task

    text_source = str(source)
    preset = _canonical_preset(text_source)
    if preset is not None and preset not in _packaged():
        derived = _derived_recipe(preset, _packaged())
        if derived is None:
            raise TsnError(f"config {text_source!r} is not a preset; presets: {_preset_list_text()}")
        return derived, None
    if preset is not None:
        text = (resources.files("tsn") / "configs" / f"{preset}.yaml").read_text()
        where, folder = f"preset {preset!r}", None
    else:
        path = Path(text_source).expanduser()
        preset_part, task = split_task(text_source)
        if not path.is_file() and task is not None and preset_part in MODEL_PRESETS:
            model_config(text_source)  # a preset name with a task it does not have: its one-line reason
        if not path.is_file():
            raise TsnError(
                f"config {text_source!r} is neither a preset nor a YAML file; presets: {_preset_list_text()}"
            )
        text, where, folder = path.read_text(), str(path), path.resolve().parent
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise TsnError(f"{where} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise TsnError(f"{where} must hold a YAML mapping (key: value lines), not {type(data).__name__}")
    return data, folder


def load_config_dict(source: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a preset or YAML file with its ``base`` chain merged in (not yet type-checked)."""
    data, folder = _read_yaml(source)
    base = data.pop("base", None)
    if base is None:
        return data
    base = str(base)
    if _canonical_preset(base) is None and folder is not None and not Path(base).is_absolute():
        base = str(folder / base)
    if base in _seen:
        raise TsnError(f"config {source!r} inherits from itself through 'base: {base}'")
    return _merge(load_config_dict(base, (*_seen, str(source))), data)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=3e-4", "model.tasks=[semseg, normals]"]`` applied to a raw config mapping.

    Values are parsed as YAML (numbers, booleans, ``null``, lists, mappings); the types are checked later by
    :func:`config_from_dict`, against the field the dotted key names.
    """
    result = _merge({}, data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise TsnError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=0.001")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise TsnError(f"--set {item!r}: the value is not valid YAML; quote it") from None
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise TsnError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build and type-check a :class:`TrainConfig` from a raw mapping (unknown keys are errors)."""
    return _build(TrainConfig, data, "")


def load_config(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """A preset name, a YAML path or a mapping, with ``--set`` style overrides, as a checked config."""
    data = dict(source) if isinstance(source, Mapping) else load_config_dict(source)
    return config_from_dict(apply_overrides(data, overrides))


# --------------------------------------------------------------------------------------------- type checks


def _merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of mappings, ``child`` winning; nested dicts are copied, never shared."""
    out = {k: _merge({}, v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = _merge({}, value) if isinstance(value, Mapping) else value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        return _plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, checking every key and value."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(data, Mapping):
        raise TsnError(f"config {where} must be a mapping of keys to values, got {data!r}")
    values = dict(data)
    if cls is ModelConfig:
        preset = values.pop("preset", None)
        if preset is not None:
            # asdict, not to_dict: keep the preset's channels of every dataset task, in case ``tasks`` changes.
            values = {**dataclasses.asdict(model_config(str(preset))), **values}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in values if key not in names]
    if unknown:
        extra = ", preset" if cls is ModelConfig else ""
        raise TsnError(f"unknown config key {prefix}{unknown[0]}; known keys here: {', '.join(names)}{extra}")
    built = cls(**{key: _check(value, hints[key], f"{prefix}{key}") for key, value in values.items()})
    # A model config is kept in its resolved form (channels of its own tasks only), as it is written out.
    return ModelConfig.from_dict(built.to_dict()) if cls is ModelConfig else built


def _check(value: Any, hint: Any, key: str) -> Any:
    """``value`` converted to type ``hint`` (int -> float, list -> tuple, str -> float for ``1e-4``), or an error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a hint is a class, never an instance
        return _build(hint, value, f"{key}.")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(value, option, key)
            except TsnError as error:
                errors.append(str(error))
        raise TsnError(errors[0] if len(errors) == 1 else f"config {key}: {value!r} matches none of {hint}")
    if origin is Literal:
        if value not in args:
            raise TsnError(f"config {key}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise TsnError(f"config {key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise TsnError(f"config {key}: expected {len(args)} values, got {len(value)}")
            return tuple(_check(v, a, key) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        checked = [_check(v, item, key) for v in value]
        return tuple(checked) if origin is not list else checked
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise TsnError(f"config {key}: expected a mapping, got {value!r}")
        value_hint = args[1] if args else Any
        return {str(k): _check(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    return _check_scalar(value, hint, key)


def _check_scalar(value: Any, hint: Any, key: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"config field {key} has unsupported type {hint}")
    raise TsnError(f"config {key}: expected {hint.__name__}, got {value!r}")
