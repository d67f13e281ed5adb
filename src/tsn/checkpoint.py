"""The project's self-describing checkpoint format.

A checkpoint holds ``format`` (``"tsn-checkpoint"``), ``format_version``, the model ``config`` (a plain dict, see
:class:`~tsn.models.ModelConfig`), the ``tasks`` list and the ``state_dict``, and optionally training state
(optimizer, scheduler, RNG, epoch...). Two encodings:

* ``*.pt`` / ``*.pth``: a torch file of plain containers and tensors, always read with ``weights_only=True``
  (nothing arbitrary is ever unpickled);
* ``*.safetensors``: the weights, with format, version and config as JSON in the safetensors metadata.

Every ``tsn`` command rebuilds the model from the checkpoint alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from tsn.errors import TsnError
from tsn.models import DensePredictionModel, ModelConfig, build_model
from tsn.utils.io import atomic_torch_save, atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "save_checkpoint",
    "read_checkpoint",
    "load_model",
    "load_state_dict_checked",
]

FORMAT = "tsn-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str], model: DensePredictionModel, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` (and optional training state ``extra``) atomically; the suffix picks the encoding."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    config = _unwrap(model).config.to_dict()
    if path.suffix == ".safetensors":
        if extra:
            raise TsnError("training state cannot be stored in a .safetensors checkpoint; use a .pt file")
        from safetensors.torch import save

        metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": json.dumps(config)}
        with atomic_write(path, "wb") as handle:
            handle.write(save(state, metadata=metadata))
        return path
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "tasks": list(config["tasks"]),
        "state_dict": state,
    }
    payload.update(extra or {})
    atomic_torch_save(payload, path)
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a project checkpoint into a dict (``config``, ``state_dict``, ...) with one-line errors for bad files."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt", path / "model.pt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise TsnError(f"{path} is a folder without checkpoints/best.pt, checkpoints/last.pt or model.pt")
        path = found
    if not path.is_file():
        raise TsnError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            state = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise TsnError(f"{path} is not a readable safetensors file ({error})") from None
        if metadata.get("format") != FORMAT:
            raise TsnError(f"{path} is a safetensors file without tsn metadata; convert it with `tsn convert`")
        payload = {
            "format": FORMAT,
            "format_version": int(metadata.get("format_version", 0)),
            "config": json.loads(metadata["config"]),
            "state_dict": state,
        }
    else:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # corrupt file, truncated file, or a pickle with arbitrary objects
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TsnError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and "model_state" in payload:
            raise TsnError(f"{path} is an authors' TSNs checkpoint; convert it first: tsn convert {path} -o OUT.pt")
        raise TsnError(f"{path} is not a tsn checkpoint (no format marker); convert it with `tsn convert`")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise TsnError(
            f"{path} has checkpoint format version {payload['format_version']}, newer than this tsn "
            f"({FORMAT_VERSION}); upgrade tsn"
        )
    payload["path"] = str(path)
    return payload


def load_state_dict_checked(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, turning missing / unexpected keys and shape mismatches into one-line errors."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise TsnError(f"{source}: missing {len(missing)} weight(s), first {missing[0]!r}; wrong model or layout?")
    if unexpected:
        raise TsnError(f"{source}: {len(unexpected)} unexpected weight(s), first {unexpected[0]!r}; wrong layout?")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise TsnError(
                f"{source}: weight {key!r} has shape {tuple(state[key].shape)}, the model expects {tuple(value.shape)}"
            )
    model.load_state_dict(state, strict=True)


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> DensePredictionModel:
    """Rebuild the model a checkpoint describes and load its weights (in eval mode)."""
    payload = read_checkpoint(path)
    config = ModelConfig.from_dict(payload["config"])
    model = build_model(config.replace(pretrained=False))  # the weights come from the checkpoint
    load_state_dict_checked(model, payload["state_dict"], str(payload["path"]))
    return model.to(map_location).eval()


def _unwrap(model: torch.nn.Module) -> DensePredictionModel:
    """The model inside DistributedDataParallel / torch.compile wrappers."""
    while not isinstance(model, DensePredictionModel):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"not a tsn model: {type(model).__name__}")
        model = inner
    return model
