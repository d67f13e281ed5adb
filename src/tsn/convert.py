"""Load the authors' published checkpoints (``tsns_model.pth``, ``single_task_<task>.pth``) into this project.

Both files are ``{"model_state": state_dict}`` with the authors' module names. This module maps those names onto
the project's modules (a fixed table of prefix rules, below), infers the architecture from the tensors, and checks
that every weight finds its place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Mapping

import torch

from tsn.checkpoint import load_state_dict_checked, save_checkpoint
from tsn.errors import TsnError
from tsn.models import DensePredictionModel, ModelConfig, build_model
from tsn.tasks import DATASET_TASKS, PAPER_TASK_ORDER, get_task

__all__ = ["convert_official_state_dict", "load_official_checkpoint", "convert_official_checkpoint"]

_Rule = tuple[str, "str | Callable[[re.Match[str]], str]"]

# Authors' prefix -> project prefix. The authors' encoder is torchvision's ResNet split into stages
# (layer0 = conv1+bn1+relu, layer1 = maxpool+layer1); ours is timm's features_only ResNet with the same tensors.
_PREFIX_RULES: tuple[_Rule, ...] = (
    (r"^fcs\.mapping\.(\d+)\.linear\.", r"task_embedding.layers.\1."),
    (r"^layer0\.0\.", "encoder.conv1."),
    (r"^layer0\.1\.", "encoder.bn1."),
    (r"^layer1\.1\.", "encoder.layer1."),
    (r"^layer([234])\.", r"encoder.layer\1."),
    (r"^layer(\d)_1x1\.", r"decoder.laterals.\1."),
    (r"^conv_up(\d)\.", lambda m: f"decoder.fuse.{3 - int(m[1])}."),  # conv_up3 is the deepest fusion block
    (r"^conv_original_size2\.", "decoder.final."),
    (r"^conv_last\.0\.", "head."),
)
# Inside a decoder block: the authors' conv1 / bn1 / style1.transform.linear are our conv / norm / style.
_BLOCK_RULES: tuple[tuple[str, str], ...] = (
    (r"\.style1\.transform\.linear\.", ".style."),
    (r"\.conv1\.", ".conv."),
    (r"\.bn1\.", ".norm."),
)

_RESNET_DEPTHS = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}


def _rename(key: str) -> str:
    for pattern, replacement in _PREFIX_RULES:
        new, count = re.subn(pattern, replacement, key)  # type: ignore[arg-type]
        if count:
            if new.startswith("decoder."):
                head, _, tail = new.rpartition(".")
                for block_pattern, block_replacement in _BLOCK_RULES:
                    head = re.sub(block_pattern, block_replacement, head + ".").rstrip(".")
                new = f"{head}.{tail}"
            return new
    raise TsnError(f"unexpected weight {key!r}: not a key of the authors' TSN or single-task checkpoints")


def _backbone(state: Mapping[str, torch.Tensor]) -> str:
    """The timm name of the authors' torchvision ResNet, from the number of residual blocks per stage."""
    if any(k.endswith("conv3.weight") for k in state):
        raise TsnError("this checkpoint uses a bottleneck ResNet; only the published ResNet-18/34 layouts load")
    # Stage 1 is Sequential(maxpool, layer1), so its blocks sit under "layer1.1.<i>".
    patterns = [r"^layer1\.1\.(\d+)\."] + [rf"^layer{s}\.(\d+)\." for s in (2, 3, 4)]
    blocks = tuple(len({m[1] for k in state if (m := re.match(p, k))}) for p in patterns)
    if blocks not in _RESNET_DEPTHS:
        raise TsnError(f"unrecognised encoder layout (blocks per stage {blocks}); expected the authors' ResNet-18")
    return f"{_RESNET_DEPTHS[blocks]}.tv_in1k"


def _infer_config(state: Mapping[str, torch.Tensor], task: str | None, source: str) -> ModelConfig:
    if "conv_last.0.weight" not in state or "layer0.0.weight" not in state:
        raise TsnError(f"{source}: not an authors' TSNs checkpoint (no 'conv_last.0.weight' / 'layer0.0.weight')")
    out_channels = int(state["conv_last.0.weight"].shape[0])
    backbone = _backbone(state)
    mapping = sorted(int(k.split(".")[2]) for k in state if k.startswith("fcs.mapping.") and k.endswith("weight_orig"))
    if mapping:  # the TSN
        code_length = int(state[f"fcs.mapping.{mapping[0]}.linear.weight_orig"].shape[1])
        latent = int(state[f"fcs.mapping.{mapping[-1]}.linear.weight_orig"].shape[0])
        tasks = PAPER_TASK_ORDER
        if code_length % len(tasks):
            raise TsnError(f"{source}: task code of length {code_length} does not fit the 5 PASCAL tasks")
        return ModelConfig(
            arch="tsn", tasks=tasks, task_channels=DATASET_TASKS["pascal_context"], backbone=backbone,
            n_ones=code_length // len(tasks), n_fc=len(mapping), latent_dim=latent, output_channels=out_channels,
        )
    by_channels = {spec_channels: name for name, spec_channels in DATASET_TASKS["pascal_context"].items()}
    if task is None:
        if out_channels == 1:
            raise TsnError(f"{source}: a 1-channel single-task network is edges or saliency; pass --task")
        if out_channels not in by_channels:
            raise TsnError(f"{source}: no PASCAL task has {out_channels} output channels; pass --task")
        task = by_channels[out_channels]
    name = get_task(task).name
    return ModelConfig(arch="single_task", tasks=(name,), task_channels={name: out_channels}, backbone=backbone)


def _task_from_filename(path: Path) -> str | None:
    match = re.match(r"single_task_([a-z_]+)\.pth?$", path.name)
    return match[1] if match else None


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor], task: str | None = None, source: str = "checkpoint"
) -> DensePredictionModel:
    """Build the project model matching an authors' state_dict and load it (eval mode)."""
    config = _infer_config(state, task, source)
    model = build_model(config)
    renamed = {_rename(k): v for k, v in state.items()}
    load_state_dict_checked(model, renamed, source)
    return model.eval()


def load_official_checkpoint(path: str | os.PathLike[str], task: str | None = None) -> DensePredictionModel:
    """Read ``tsns_model.pth`` / ``single_task_<task>.pth`` (``{"model_state": ...}``) as a project model."""
    path = Path(path)
    if not path.is_file():
        raise TsnError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise TsnError(f"cannot read {path}: {first}") from None
    if isinstance(payload, dict) and payload.get("format") == "tsn-checkpoint":
        raise TsnError(f"{path} is already a tsn checkpoint; no conversion needed")
    state = payload.get("model_state", payload) if isinstance(payload, dict) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TsnError(f"{path}: expected the authors' layout {{'model_state': state_dict}}")
    return convert_official_state_dict(state, task or _task_from_filename(path), str(path))


def convert_official_checkpoint(
    path: str | os.PathLike[str], output: str | os.PathLike[str], task: str | None = None
) -> Path:
    """``tsn convert``: authors' checkpoint in, project checkpoint (``.pt`` or ``.safetensors``) out."""
    model = load_official_checkpoint(path, task)
    extra = None if Path(output).suffix == ".safetensors" else {"converted_from": Path(path).name}
    return save_checkpoint(output, model, extra=extra)
