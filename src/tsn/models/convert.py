"""Load the authors' published checkpoints (``tsns_model.pth``, ``single_task_<task>.pth``) into this project.

Both files are ``{"model_state": state_dict}`` with the authors' module names. The authors' architecture is fixed
(``../shared/specs/reference-model.md``): the paper's TSN (ResNet encoder, 8 mapping layers, 100-d task code and
embedding, 21 output channels) or a single-task network with its PASCAL-Context task's channel count. This module
builds that model, derives the authors' name of every one of its weights (a fixed table of prefix rules, below)
and refuses any file that does not match the layout exactly (missing or unexpected weights, wrong shapes, a
channel count that does not fit the task), because anything else would be converted into a different network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from tsn.dataset_catalog import get_dataset
from tsn.errors import TsnError
from tsn.models import DensePredictionModel, ModelConfig, build_model, model_config
from tsn.models.checkpoint import describe_file, save_checkpoint
from tsn.tasks import get_task

__all__ = ["convert_official_state_dict", "load_official_checkpoint", "convert_official_checkpoint"]

Notes = Callable[[str], None]
_Rule = tuple[str, "str | Callable[[re.Match[str]], str]"]

# Project prefix -> authors' prefix. The authors' encoder is torchvision's ResNet split into stages
# (layer0 = conv1+bn1+relu, layer1 = maxpool+layer1); ours is timm's features_only ResNet with the same tensors.
_TO_AUTHORS_PREFIX: tuple[_Rule, ...] = (
    (r"^task_embedding\.layers\.(\d+)\.", r"fcs.mapping.\1.linear."),
    (r"^encoder\.conv1\.", "layer0.0."),
    (r"^encoder\.bn1\.", "layer0.1."),
    (r"^encoder\.layer1\.", "layer1.1."),
    (r"^encoder\.layer([234])\.", r"layer\1."),
    (r"^decoder\.laterals\.(\d)\.", r"layer\1_1x1."),
    (r"^decoder\.fuse\.(\d)\.", lambda m: f"conv_up{3 - int(m[1])}."),  # conv_up3 is the deepest fusion block
    (r"^decoder\.final\.", "conv_original_size2."),
    (r"^head\.", "conv_last.0."),
)
# Inside a decoder block: our conv / norm / style are the authors' conv1 / bn1 / style1.transform.linear.
_TO_AUTHORS_BLOCK: tuple[tuple[str, str], ...] = (
    (r"^style\.", "style1.transform.linear."),
    (r"^conv\.", "conv1."),
    (r"^norm\.", "bn1."),
)
# Wrappers some training scripts add around a state_dict: DataParallel / DDP ("module.") and a Lightning-style
# "model." attribute. Stripped only when every key carries them, so a genuine key is never renamed.
_WRAPPER_PREFIXES = ("module.", "model.")
_NESTING_KEYS = ("model_state", "state_dict")  # the authors' wrapping first, then the common torch one

_RESNET_DEPTHS: dict[tuple[int, ...], str] = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}
_PASCAL_CHANNELS = get_dataset("pascal_context").tasks  # the authors released PASCAL-Context models only
_SHOWN = 3  # names quoted in a message about missing / unexpected weights


def _authors_name(key: str) -> str:
    """The authors' state_dict name of the project weight ``key``."""
    for pattern, replacement in _TO_AUTHORS_PREFIX:
        match = re.match(pattern, key)
        if match:
            prefix = replacement(match) if callable(replacement) else match.expand(replacement)
            rest = key[match.end():]
            if key.startswith("decoder."):
                for block_pattern, block_replacement in _TO_AUTHORS_BLOCK:
                    rest = re.sub(block_pattern, block_replacement, rest)
            return prefix + rest
    raise AssertionError(f"no authors' name for the project weight {key!r}; extend _TO_AUTHORS_PREFIX")


def _backbone(state: Mapping[str, torch.Tensor]) -> str:
    """The timm name of the authors' torchvision ResNet, from the number of residual blocks per stage.

    A block count that is neither ResNet-18 nor -34 is compared against ResNet-18, so the layout check names the
    extra or missing blocks.
    """
    if any(k.endswith("conv3.weight") for k in state):
        raise TsnError("this checkpoint uses a bottleneck ResNet; only the published ResNet-18/34 layouts load")
    # Stage 1 is Sequential(maxpool, layer1), so its blocks sit under "layer1.1.<i>".
    patterns = [r"^layer1\.1\.(\d+)\."] + [rf"^layer{s}\.(\d+)\." for s in (2, 3, 4)]
    blocks = tuple(len({m[1] for k in state if (m := re.match(p, k))}) for p in patterns)
    return f"{_RESNET_DEPTHS.get(blocks, 'resnet18')}.tv_in1k"


def _describe_channels(channels: int) -> str:
    names = [name for name, count in _PASCAL_CHANNELS.items() if count == channels]
    if not names:
        counts = ", ".join(f"{name} {count}" for name, count in _PASCAL_CHANNELS.items())
        return f"no PASCAL-Context task has {channels} output channels (the tasks have: {counts})"
    return f"{channels} channel{'s' if channels > 1 else ''} is {' or '.join(names)}"


def _single_task_name(out_channels: int, task: str | None, task_origin: str, source: str) -> str:
    """The task of a single-task network, checked against its output channels (the task registry's count)."""
    if task is None:
        candidates = [name for name, count in _PASCAL_CHANNELS.items() if count == out_channels]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise TsnError(
                f"{source}: a {out_channels}-channel single-task network is {' or '.join(candidates)}; "
                f"pass --task {candidates[0]} or --task {candidates[1]}"
            )
        raise TsnError(f"{source}: {_describe_channels(out_channels)}; this is not an authors' single-task network")
    name = get_task(task).name
    if name not in _PASCAL_CHANNELS:
        raise TsnError(
            f"{source}: the authors published PASCAL-Context single-task networks only "
            f"({', '.join(_PASCAL_CHANNELS)}), not {name}; pass one of those with --task"
        )
    expected = _PASCAL_CHANNELS[name]
    if out_channels != expected:
        suggestion = [n for n, count in _PASCAL_CHANNELS.items() if count == out_channels]
        fix = (
            f"pass --task {' or --task '.join(suggestion)}" if suggestion
            else "this is not an authors' single-task network"
        )
        raise TsnError(
            f"{source}: {task_origin} {name}, which has {expected} channel{'s' if expected > 1 else ''}, but the "
            f"network has {out_channels} output channels ({_describe_channels(out_channels)}); {fix}"
        )
    return name


def _expected_config(
    state: Mapping[str, torch.Tensor], task: str | None, task_origin: str, source: str
) -> ModelConfig:
    """The authors' architecture this state_dict claims to be: the paper's TSN or a single-task network."""
    if "conv_last.0.weight" not in state or "layer0.0.weight" not in state:
        raise TsnError(f"{source}: not an authors' TSNs checkpoint (no 'conv_last.0.weight' / 'layer0.0.weight')")
    backbone = _backbone(state)
    if any(k.startswith("fcs.mapping.") for k in state):  # the TSN: every size is the paper's, checked per key
        if task is not None and task_origin == "--task says":
            raise TsnError(f"{source}: a TSN checkpoint serves every task; --task is for single-task networks only")
        return model_config("tsn_r18_pascal", backbone=backbone)
    out_channels = int(state["conv_last.0.weight"].shape[0])
    name = _single_task_name(out_channels, task, task_origin, source)
    return ModelConfig(arch="single_task", tasks=(name,), task_channels={name: out_channels}, backbone=backbone)


def _quote(names: list[str], mapping: Mapping[str, str] | None = None) -> str:
    shown = [f"{n!r} (ours: {mapping[n]})" if mapping else repr(n) for n in names[:_SHOWN]]
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(shown) + more


def _check_layout(
    state: Mapping[str, torch.Tensor], layout: Mapping[str, str], expected: Mapping[str, torch.Tensor], source: str
) -> None:
    """Refuse unless ``state`` has exactly the authors' keys (``layout``: authors' -> ours) with the right shapes."""
    missing = [k for k in layout if k not in state]
    unexpected = [k for k in state if k not in layout]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} weight(s) of the authors' layout: {_quote(missing, layout)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weight(s) not in the authors' layout: {_quote(unexpected)}")
    if problems:
        raise TsnError(
            f"{source}: {'; '.join(problems)}; this is not the authors' published architecture (a network of "
            "another architecture cannot be converted faithfully)"
        )
    wrong = [k for k in layout if tuple(state[k].shape) != tuple(expected[layout[k]].shape)]
    if wrong:
        key = wrong[0]
        others = f" (and {len(wrong) - 1} other weight(s) of the wrong shape)" if len(wrong) > 1 else ""
        raise TsnError(
            f"{source}: weight {key!r} -> {layout[key]!r} has shape {tuple(state[key].shape)}, the authors' "
            f"architecture has {tuple(expected[layout[key]].shape)}{others}; this is not the published model"
        )
    not_float = [k for k, v in state.items() if not v.is_floating_point() and not k.endswith("num_batches_tracked")]
    if not_float:
        key = not_float[0]
        raise TsnError(f"{source}: weight {key!r} holds {state[key].dtype} values, not floating point; a corrupt file?")


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor], task: str | None = None, source: str = "checkpoint",
    task_origin: str = "--task says",
) -> DensePredictionModel:
    """Build the project model matching an authors' state_dict and load it (eval mode).

    ``task`` names the task of a single-task network (``task_origin`` says where it came from, for messages).
    Anything but the authors' exact layout is refused with a one-line :class:`TsnError`.
    """
    config = _expected_config(state, task, task_origin, source)
    model = build_model(config)
    expected = model.state_dict()
    layout = {_authors_name(key): key for key in expected}
    _check_layout(state, layout, expected, source)
    model.load_state_dict({layout[k]: v for k, v in state.items()}, strict=True)
    return model.eval()


def _unwrap_state(payload: object, source: str, notes: Notes) -> Mapping[str, torch.Tensor]:
    """The state_dict inside ``payload``: ``{"model_state": sd}`` (the authors'), ``{"state_dict": sd}`` or ``sd``,
    without a DataParallel ``module.`` / ``model.`` prefix."""
    if not isinstance(payload, Mapping):
        raise TsnError(
            f"{source}: expected the authors' layout {{'model_state': state_dict}}, got a {type(payload).__name__}"
        )
    state: object = payload
    for key in _NESTING_KEYS:
        if isinstance(payload.get(key), Mapping):
            state = payload[key]
            if key != "model_state":
                notes(f"{source}: reading the weights under {key!r} (the authors' files use 'model_state')")
            break
    assert isinstance(state, Mapping)
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise TsnError(f"{source}: expected the authors' layout {{'model_state': state_dict}}; no state_dict found")
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                notes(f"{source}: stripped the {prefix!r} prefix from every weight name (saved through a wrapper)")
                stripped = True
    return state


def _task_from_filename(path: Path) -> str | None:
    match = re.match(r"single_task_([a-z_]+)\.pth?$", path.name)
    return match[1] if match else None


def load_official_checkpoint(
    path: str | os.PathLike[str], task: str | None = None, notes: Notes | None = None
) -> DensePredictionModel:
    """Read ``tsns_model.pth`` / ``single_task_<task>.pth`` (``{"model_state": ...}``) as a project model.

    ``notes`` receives one line per adjustment made while reading (a stripped ``module.`` prefix, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise TsnError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # what the file is says more than the unpickler's message ("101", "pop from empty list")
        raise TsnError(f"cannot read {path}: it is {describe_file(path)}; expected an authors' TSNs checkpoint "
                       "(tsns_model.pth, single_task_<task>.pth)") from None
    if isinstance(payload, dict) and payload.get("format") == "tsn-checkpoint":
        raise TsnError(f"{path} is already a tsn checkpoint; no conversion needed")
    state = _unwrap_state(payload, str(path), notes or (lambda _line: None))
    origin = "--task says"
    if task is None and (task := _task_from_filename(path)) is not None:
        origin = "the file name says"
    return convert_official_state_dict(state, task, str(path), task_origin=origin)


def convert_official_checkpoint(
    path: str | os.PathLike[str], output: str | os.PathLike[str], task: str | None = None,
    notes: Notes | None = None,
) -> Path:
    """``tsn convert``: authors' checkpoint in, project checkpoint (``.pt`` or ``.safetensors``) out."""
    model = load_official_checkpoint(path, task, notes)
    extra = None if Path(output).suffix == ".safetensors" else {"converted_from": Path(path).name}
    return save_checkpoint(output, model, extra=extra)
