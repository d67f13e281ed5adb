"""Checks of what a checkpoint holds, run by the checkpoint reader before a model is built from it.

A checkpoint is input like any other: it may be damaged, edited by hand or made by someone hostile. Three checks,
each failing with a one-line :class:`~tsn.errors.TsnError` that names the file:

* :func:`check_stored_config`: the stored model config has the types and ranges a model can have (no negative
  widths, no latent size of a billion), read from the plain dict before anything is built from it;
* :func:`check_finite_weights`: every floating-point weight is finite (a NaN checkpoint would otherwise give
  all-zero predictions, plausible scores and a "verified" export);
* :func:`check_weights_fit_config`: the model the config describes is built on PyTorch's ``meta`` device (shapes
  only, no memory) and its weights' names and shapes are compared with the file's, so that a config whose model
  would need more memory than its weights hold is refused before any allocation it sizes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from tsn.errors import TsnError
from tsn.models import ModelConfig, build_model
from tsn.utils.checks import escaped

__all__ = [
    "CONFIG_BOUNDS",
    "check_finite_weights",
    "check_stored_config",
    "check_stored_payload",
    "check_weights_fit_config",
]

CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "n_ones": (1, 1024),
    "n_fc": (1, 64),
    "latent_dim": (1, 8192),
    "output_channels": (1, 4096),
    "decoder_channels": (1, 16384),
    "task_channels": (1, 4096),
}
"""Inclusive ranges of the stored config's integers; far beyond every published model, far below what would
exhaust a machine."""
_MAX_TASKS = 64
_MAX_LEVELS = 16
_MAX_NAME = 300


def _where(source: str | os.PathLike[str]) -> str:
    return f"checkpoint {escaped(source)}"


def _check_int(source: str | os.PathLike[str], field: str, value: Any, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise TsnError(f"{_where(source)}: its model config has {field} = {escaped(repr(value))[:80]}, not an "
                       "integer; the file is damaged or was edited: re-save or re-convert it")
    if not low <= value <= high:
        raise TsnError(f"{_where(source)}: its model config has {field} = {value}, outside {low}..{high}; the file is "
                       "damaged or was edited: re-save or re-convert it")


def check_stored_config(config: Mapping[str, Any], source: str | os.PathLike[str]) -> None:
    """Types and ranges of a stored model config (a plain dict), before a :class:`ModelConfig` is made of it."""
    for field in ("n_ones", "n_fc", "latent_dim"):
        if field in config:
            _check_int(source, field, config[field], CONFIG_BOUNDS[field])
    if config.get("output_channels") is not None:
        _check_int(source, "output_channels", config["output_channels"], CONFIG_BOUNDS["output_channels"])
    widths = config.get("decoder_channels")
    if widths is not None:
        if not isinstance(widths, (list, tuple)) or not 1 <= len(widths) <= _MAX_LEVELS:
            raise TsnError(f"{_where(source)}: its model config has decoder_channels = {escaped(repr(widths))[:80]}, "
                           f"not a list of 1 to {_MAX_LEVELS} widths; re-save or re-convert it")
        for index, width in enumerate(widths):
            _check_int(source, f"decoder_channels[{index}]", width, CONFIG_BOUNDS["decoder_channels"])
    tasks = config.get("tasks", ())
    if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) and len(t) <= _MAX_NAME for t in tasks) \
            or len(tasks) > _MAX_TASKS:
        raise TsnError(f"{_where(source)}: its model config's tasks are not a list of at most {_MAX_TASKS} task "
                       "names; re-save or re-convert it")
    channels = config.get("task_channels", {})
    if not isinstance(channels, Mapping):
        raise TsnError(f"{_where(source)}: its model config's task_channels is not a mapping; re-save or re-convert it")
    for name, count in channels.items():
        _check_int(source, f"task_channels[{escaped(repr(name))[:40]}]", count, CONFIG_BOUNDS["task_channels"])
    for field in ("backbone", "arch", "norm"):
        value = config.get(field, "")
        if not isinstance(value, str) or len(value) > _MAX_NAME:
            raise TsnError(f"{_where(source)}: its model config's {field} is not a name; re-save or re-convert it")


def check_finite_weights(state: Mapping[str, Any], source: str | os.PathLike[str]) -> None:
    """Every tensor of ``state`` is a tensor, and every floating-point one is finite (no NaN, no infinity)."""
    bad = []
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TsnError(f"{_where(source)}: weight {escaped(name)!s} is a {type(tensor).__name__}, not a tensor; "
                           "the file is damaged: re-save or re-convert it")
        if (tensor.is_floating_point() or tensor.is_complex()) and tensor.numel() and \
                not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    if bad:
        raise TsnError(f"{_where(source)}: {len(bad)} weight tensor(s) hold NaN or infinite values, first "
                       f"{escaped(bad[0])}; the model diverged or the file is damaged: use an earlier checkpoint")


def check_weights_fit_config(config: ModelConfig, state: Mapping[str, Any], source: str | os.PathLike[str]) -> None:
    """Build the model ``config`` describes on the ``meta`` device (shapes, no memory) and compare its weights with
    ``state``: names and shapes must agree; the first difference is refused in one line, before the real model,
    whose size the config sets, is allocated."""
    try:
        with torch.device("meta"):
            model = build_model(config.replace(pretrained=False, pretrained_file=None))
    except TsnError:
        raise
    except Exception:  # a layer that cannot be built on meta: the real build checks it instead
        return
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    missing = [name for name in expected if name not in state]
    if missing:
        raise TsnError(f"{_where(source)}: its model config describes {len(expected)} weights, the file lacks "
                       f"{len(missing)} of them, first {escaped(missing[0])}; the config or the weights were "
                       "changed: re-save or re-convert it")
    for name, shape in expected.items():
        stored = tuple(state[name].shape)
        if stored != shape:
            raise TsnError(f"{_where(source)}: weight {escaped(name)} has shape {stored}, its model config asks "
                           f"for {shape}; the config or the weights were changed: re-save or re-convert it")


def check_stored_payload(config: Mapping[str, Any], state: Mapping[str, Any], source: str | os.PathLike[str]) -> None:
    """What the checkpoint reader runs on every file it reads: :func:`check_stored_config` then
    :func:`check_finite_weights`."""
    check_stored_config(config, source)
    check_finite_weights(state, source)
