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
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tsn.errors import TsnError
from tsn.models import DensePredictionModel, ModelConfig, build_model
from tsn.models.checkpoint_checks import check_stored_payload, check_weights_fit_config
from tsn.utils.checks import one_line
from tsn.utils.io import atomic_torch_save, atomic_write
from tsn.utils.parsing import parse_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "save_checkpoint",
    "read_checkpoint",
    "load_model",
    "ModelSource",
    "register_model_source",
    "is_registered_source",
    "check_model_source",
    "load_state_dict_checked",
    "describe_file",
]

FORMAT = "tsn-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    model: DensePredictionModel | torch.nn.Module,
    extra: Mapping[str, Any] | None = None,
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


_EXPECTED = "expected a tsn checkpoint (.pt / .safetensors written by tsn train or tsn convert, or a run folder)"
_SIGNATURES = (  # leading bytes of common files that are mistaken for checkpoints; images are told by Pillow
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras / h5py model?)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "a gzip-compressed file (extract it first)"),
    (b"%PDF", "a PDF document"),
    (b"ONNX", "an ONNX model"),
)


def _looks_like_text(head: bytes) -> bool:
    if any(byte < 32 and byte not in b"\t\n\r\f" for byte in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:  # a multi-byte character cut at the end of the sample is still text
        return error.start >= len(head) - 3
    return True


def describe_file(path: str | os.PathLike[str]) -> str:
    """What a file that is not a checkpoint is, as far as its first bytes tell: "an empty file", "a PNG image"..."""
    path = Path(path)
    if path.is_dir():
        return "a folder"
    if not path.exists():
        return "a missing path"
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        return f"an unreadable file ({one_line(error.strerror or error)})"
    if not head:
        return "an empty file"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("data.pkl") for name in names):
            return "a torch file that could not be read (truncated or corrupt?)"
        return f"a zip archive that is not a torch file ({len(names)} member(s), e.g. {names[0] if names else '-'})"
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated zip / torch file"
    if path.suffix == ".onnx":
        return "an ONNX model"
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return f"a {image.format} image"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass
    if _looks_like_text(head):
        first = head.lstrip()[:1]
        if first in (b"{", b"["):
            return "a text file (JSON?)"
        return "a text file"
    if head[:1] == b"\x80":
        return "a legacy (non-zip) torch / pickle file that could not be read safely"
    return "a binary file of unknown format"


def _describe_payload(payload: Any) -> str:
    """What a torch file holds when it is not a tsn checkpoint, and what to do about it."""
    if isinstance(payload, torch.Tensor):
        return f"a torch file holding a single tensor of shape {tuple(payload.shape)}, not a model checkpoint"
    if isinstance(payload, Mapping):
        if "model_state" in payload:
            return "an authors' TSNs checkpoint; convert it first with `tsn convert`"
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            return (f"a raw state dict of {len(payload)} tensors without tsn metadata; if it holds the authors' "
                    "weights, convert it with `tsn convert`")
        if "state_dict" in payload:
            return ("a torch checkpoint without tsn metadata (a 'state_dict' but no model config); if it holds the "
                    "authors' weights, convert it with `tsn convert`")
        keys = ", ".join(repr(str(k)) for k in list(payload)[:4]) or "none"
        return f"a torch file holding a dict without tsn metadata (keys {keys})"
    return f"a torch file holding a {type(payload).__name__}, not a model checkpoint"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a project checkpoint into a dict (``config``, ``state_dict``, ...) with one-line errors for bad files.

    A file that is not a tsn checkpoint is refused with what it is (an empty file, a PNG image, a text file, a
    zip archive, a raw state dict, an authors' checkpoint...) and what was expected.
    """
    from tsn.run_folder import resolve_checkpoint

    path = resolve_checkpoint(path)  # a run folder stands for its checkpoint (tsn.run_folder: the layout)
    if not path.is_file():
        raise TsnError(f"checkpoint {path} is not a regular file; {_EXPECTED}")
    if path.stat().st_size == 0:
        raise TsnError(f"checkpoint {path} is an empty file; {_EXPECTED}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise TsnError(
                f"checkpoint {path} is not a readable safetensors file ({describe_file(path)}: "
                f"{one_line(error, 120)}); {_EXPECTED}"
            ) from None
        if metadata.get("format") != FORMAT or "config" not in metadata:
            raise TsnError(
                f"checkpoint {path} is a safetensors file without tsn metadata; if it holds the authors' weights, "
                "convert it with `tsn convert`"
            )
        config = parse_json(metadata["config"], f"checkpoint {path}: the model config in its metadata")
        payload = {
            "format": FORMAT,
            "format_version": int(metadata.get("format_version", 0) or 0),
            "config": config,
            "state_dict": state,
        }
    else:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt or truncated file, not a torch file, or a pickle with arbitrary objects
            raise TsnError(f"cannot read checkpoint {path}: it is {describe_file(path)}; {_EXPECTED}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict) and "model_state" in payload:
            raise TsnError(f"{path} is an authors' TSNs checkpoint; convert it first: tsn convert {path} -o OUT.pt")
        description = _describe_payload(payload)
        fix = "" if "tsn convert" in description else f"; {_EXPECTED}"
        raise TsnError(f"cannot use checkpoint {path}: it is {description}{fix}")
    if not isinstance(payload.get("config"), Mapping) or not isinstance(payload.get("state_dict"), Mapping):
        raise TsnError(f"checkpoint {path} is marked as a tsn checkpoint but lacks its model config or weights; "
                       "the file is damaged: re-save or re-convert it")
    try:
        version = int(payload.get("format_version", 0))
    except (TypeError, ValueError):
        raise TsnError(f"checkpoint {path} has an unreadable format_version; the file is damaged") from None
    if version > FORMAT_VERSION:
        raise TsnError(
            f"{path} has checkpoint format version {payload['format_version']}, newer than this tsn "
            f"({FORMAT_VERSION}); upgrade tsn"
        )
    check_stored_payload(payload["config"], payload["state_dict"], path)  # ranges, finite weights: one line
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
    """The one loader of a model, in eval mode on ``map_location``, from any of:

    * a shared pretrained model (``hf-hub:ORG/NAME[@REV]``, or a local folder holding ``config.json`` and
      ``model.safetensors``), read by :func:`tsn.hub.load_pretrained` (asked first, through
      :func:`tsn.hub.is_pretrained_source`), or another source added with :func:`register_model_source`;
    * a checkpoint file (``.pt`` / ``.safetensors``) or a ``tsn train`` run folder (its best checkpoint, else its
      last: :func:`tsn.run_folder.resolve_checkpoint`), rebuilt from the config the checkpoint holds.

    Every command and the Python API load models through this function; bad sources are one-line errors.
    """
    pretrained = _load_pretrained(path, map_location)
    if pretrained is not None:
        return pretrained
    payload = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, ValueError, KeyError) as error:  # a config dict edited or damaged by hand
        raise TsnError(
            f"checkpoint {payload['path']} holds a model config this tsn cannot build ({one_line(error, 160)}); "
            "re-save or re-convert it"
        ) from None
    check_weights_fit_config(config, payload["state_dict"], payload["path"])  # on meta: before any allocation
    model = build_model(config.replace(pretrained=False, pretrained_file=None))  # weights: the checkpoint's
    load_state_dict_checked(model, payload["state_dict"], str(payload["path"]))
    return model.to(map_location).eval()


# ------------------------------------------------------------------------------------------------ model sources


@dataclass(frozen=True)
class ModelSource:
    """A kind of model source the loader hands over before reading checkpoints: ``claims(source)`` says whether
    ``source`` is one, ``load(source, map_location=...)`` returns its model."""

    name: str
    claims: Callable[[str | os.PathLike[str]], bool]
    load: Callable[..., DensePredictionModel]


_MODEL_SOURCES: dict[str, ModelSource] = {}
_BUILTIN_SOURCES: dict[str, tuple[str, str, str]] = {
    # Shared pretrained models (hf-hub:ORG/NAME, or a folder with config.json + model.safetensors). tsn.hub is a
    # room above the models (it builds and saves them), so it plugs in by name, resolved when first needed.
    "pretrained": ("tsn.hub", "is_pretrained_source", "load_pretrained"),
}


def register_model_source(
    name: str, claims: Callable[[str | os.PathLike[str]], bool], load: Callable[..., DensePredictionModel]
) -> ModelSource:
    """Teach :func:`load_model` (and every command) a new kind of model source, tried before checkpoint files
    and run folders: e.g. a lab's own model zoo. A name already registered is refused in one line."""
    if name in _MODEL_SOURCES or name in _BUILTIN_SOURCES:
        raise TsnError(f"a model source named {name!r} is already registered; choose another name")
    _MODEL_SOURCES[name] = source = ModelSource(name, claims, load)
    return source


def _model_sources() -> list[ModelSource]:
    import importlib

    for name, (module_name, claims, load) in _BUILTIN_SOURCES.items():
        if name not in _MODEL_SOURCES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # a build without that room (e.g. no sharing module): checkpoints still load
                continue
            _MODEL_SOURCES[name] = ModelSource(name, getattr(module, claims), getattr(module, load))
    return list(_MODEL_SOURCES.values())


def _source_for(source: str | os.PathLike[str]) -> ModelSource | None:
    return next((kind for kind in _model_sources() if kind.claims(source)), None)


def is_registered_source(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a registered kind of model source (a pretrained folder, an ``hf-hub:`` name...)."""
    return _source_for(source) is not None


def check_model_source(source: str | os.PathLike[str]) -> None:
    """The loader's one-line refusal of a missing checkpoint or a folder without one, for commands that check
    their inputs before loading anything (``tsn serve``); registered sources (a shared model) pass."""
    from tsn.run_folder import resolve_checkpoint

    if _source_for(source) is None:
        resolve_checkpoint(source)


def _load_pretrained(
    source: str | os.PathLike[str], map_location: str | torch.device
) -> DensePredictionModel | None:
    """The model of a registered source (a shared pretrained model first), or None when ``source`` is none."""
    kind = _source_for(source)
    if kind is None:
        return None
    model: DensePredictionModel = kind.load(source, map_location=map_location)
    return model.eval()


def _unwrap(model: torch.nn.Module) -> DensePredictionModel:
    """The model inside DistributedDataParallel / torch.compile wrappers."""
    while not isinstance(model, DensePredictionModel):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"not a tsn model: {type(model).__name__}")
        model = inner
    return model
