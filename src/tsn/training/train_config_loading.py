"""Loading a training configuration: YAML presets with inheritance, ``--set key=value`` overrides, type checks.

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
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

from tsn.errors import TsnError
from tsn.models import ModelConfig, model_config
from tsn.training.train_config import TrainConfig
from tsn.utils.checks import escaped
from tsn.utils.parsing import MAX_DEPTH, parse_yaml, read_text_file

__all__ = [
    "list_presets",
    "RENAMED_PRESETS",
    "load_config_dict",
    "apply_overrides",
    "config_from_dict",
    "load_config",
]

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
        if not path.exists():  # a folder, a pipe or a device: read_text_file says what it is
            raise TsnError(
                f"config {text_source!r} is neither a preset nor a YAML file; presets: {_preset_list_text()}"
            )
        text, where, folder = read_text_file(path, "config"), escaped(path), path.resolve().parent
    data = parse_yaml(text, where) or {}  # bounded depth and size, one-line errors
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
        value = parse_yaml(text, f"--set {escaped(key.strip())}")  # bounded depth and size, one-line errors
        node = result
        parts = key.strip().split(".")
        if len(parts) > MAX_DEPTH or not all(parts):
            raise TsnError(f"--set {escaped(key)[:60]}: expected a dotted key such as optim.lr, at most {MAX_DEPTH} "
                           "deep")
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
