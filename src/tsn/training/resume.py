"""Never lose work: the run directory, resumable training checkpoints and their safety checks.

The run directory's layout (``config.yaml``, ``train.log``, ``checkpoints/last.pt`` and ``best.pt``...) is defined
once, in :mod:`tsn.run_folder` (:class:`~tsn.run_folder.RunPaths`, re-exported here).

Checkpoints use the project format (:func:`tsn.models.checkpoint.save_checkpoint`, written atomically: a crash leaves
the previous file intact) with a ``training`` entry holding the optimizer, scheduler, gradient scaler, RNG states
and the :class:`TrainState` (epoch, step, position in the epoch's task schedule, best value, history). Every
entry is plain containers and tensors, so the file loads with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tsn.errors import TsnError
from tsn.models import DensePredictionModel
from tsn.models.checkpoint import load_state_dict_checked, read_checkpoint, save_checkpoint
from tsn.run_folder import RunPaths  # the run-folder layout is defined once, in tsn.run_folder
from tsn.utils.checks import one_line
from tsn.utils.io import remove_stale_temp_files

if TYPE_CHECKING:
    from tsn.training.train_config import TrainConfig

__all__ = [
    "TrainState",
    "RunPaths",
    "rng_state",
    "set_rng_state",
    "estimate_checkpoint_bytes",
    "check_run_dir",
    "prepare_run_dir",
    "training_payload",
    "save_training_checkpoint",
    "load_training_checkpoint",
    "Restored",
    "restore_training",
]


@dataclass
class TrainState:
    """Where training stands; restored exactly on resume."""

    epoch: int = 0
    """The current epoch (0-based); after an epoch ends it is the next one."""
    position: int = 0
    """Steps of the current epoch's plan already done."""
    step: int = 0
    """Optimizer steps done since the start of the run."""
    best_value: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per validation."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainState:
        return cls(**dict(data))


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as tensors and plain values (``weights_only``-safe)."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 (the global RNG that libraries draw from)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (restores the global RNG captured above)
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def estimate_checkpoint_bytes(model: torch.nn.Module, optimizer_slots: int = 2) -> int:
    """Size of a training checkpoint: weights and buffers, plus ``optimizer_slots`` copies of the weights (Adam)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    return weights * (1 + optimizer_slots) + buffers


def check_run_dir(root: str | os.PathLike[str], *, resume: bool) -> RunPaths:
    """The run directory's verdict that needs no writing: a new run refuses a directory that already holds a
    run, a resumed one needs its ``checkpoints/last.pt``. Nothing is created."""
    paths = RunPaths(Path(root).expanduser())
    if resume and not paths.last.is_file():
        raise TsnError(f"{paths.root} has no checkpoints/last.pt to resume from; start a new run with --out")
    if not resume and paths.last.is_file():
        raise TsnError(
            f"{paths.root} already holds a run (checkpoints/last.pt); resume it with --resume {paths.root} "
            "or choose another --out"
        )
    return paths


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def prepare_run_dir(root: str | os.PathLike[str], *, resume: bool, checkpoint_bytes: int) -> RunPaths:
    """Create (or reopen, to resume) a run directory and check it can hold the checkpoints, before training.

    On top of :func:`check_run_dir`, every run refuses an unwritable directory and one whose disk cannot hold two
    more checkpoints (an atomic save writes the new file beside the old one). A refused run leaves no folder
    behind. Temporary files left by a run killed while saving (``kill -9`` during a checkpoint write) are removed
    first, so they neither pile up nor count against the free space; they are listed in ``removed_temp_files``.
    """
    paths = check_run_dir(root, resume=resume)
    # Only stale temporaries go (a missing folder has none); they must not count against the free space.
    removed = [p for folder in (paths.root, paths.checkpoints) for p in remove_stale_temp_files(folder)]
    ancestor = _nearest_existing(paths.checkpoints)
    created = [paths.checkpoints, *paths.checkpoints.parents]
    created = created[: created.index(ancestor)] if ancestor in created else []  # the folders mkdir will make
    try:
        free = shutil.disk_usage(ancestor).free  # before creating anything: a refusal leaves nothing behind
        needed = 2 * checkpoint_bytes
        if free < needed:
            raise TsnError(
                f"only {free / 2**20:.0f} MiB free on the disk of {paths.root}, but checkpoints need about "
                f"{needed / 2**20:.0f} MiB; free some space or choose another --out"
            )
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        probe = paths.checkpoints / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        _remove_empty(created)
        raise TsnError(
            f"cannot write to the run directory {paths.root} ({error.strerror or error}); choose a writable --out"
        ) from None
    except TsnError:
        _remove_empty(created)
        raise
    return RunPaths(paths.root, removed_temp_files=tuple(removed))


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a refused run created (deepest first), leaving any that something else filled."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def save_training_checkpoint(
    path: Path, model: DensePredictionModel | torch.nn.Module, training: Mapping[str, Any]
) -> None:
    """Write model + training state atomically; a full disk becomes a one-line error (the old file survives)."""
    try:
        save_checkpoint(path, model, extra={"training": dict(training)})
    except OSError as error:
        hint = "free some disk space" if error.errno == errno.ENOSPC else "check the run directory"
        raise TsnError(
            f"cannot write checkpoint {path} ({error.strerror or error}); the previous checkpoint is intact: "
            f"{hint}, then resume with --resume {path.parent.parent}"
        ) from None


def training_payload(
    config: TrainConfig, state: TrainState, optimizer: torch.optim.Optimizer, scheduler: Any,
    scaler: torch.amp.GradScaler | None, world_size: int,
) -> dict[str, Any]:
    """Everything besides the weights that resuming needs: the ``training`` entry of a checkpoint."""
    return {
        "config": config.to_dict(),
        "state": state.to_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler else None,
        "rng": rng_state(),
        "world_size": world_size,
    }


@dataclass(frozen=True)
class Restored:
    """What :func:`restore_training` gives back besides the objects it loaded into."""

    state: TrainState
    rng: Mapping[str, Any]
    """The RNG states to restore (:func:`set_rng_state`) just before the first step."""
    config_changed: bool
    """The run's config differs from the one the checkpoint was written with (``--set`` on resume)."""


def restore_training(
    path: Path, payload: Mapping[str, Any], config: TrainConfig, model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler | None,
) -> Restored:
    """Load a checkpoint's weights and training entry (:func:`training_payload`) into a run's objects.

    What does not fit (weights of another model, the optimizer state of other parameter groups) is a one-line
    error naming ``path``; nothing is written.
    """
    training = payload["training"]
    load_state_dict_checked(model, payload["state_dict"], str(path))
    try:
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        if scaler is not None and training.get("scaler"):
            scaler.load_state_dict(training["scaler"])
        state = TrainState.from_dict(training["state"])
    except (KeyError, TypeError, ValueError) as error:
        raise TsnError(f"{path}: its optimizer, schedule or state does not fit this config ({one_line(error)}); "
                       "resume without changing optim.* or scheduler.*") from None
    return Restored(state, training["rng"], training["config"] != config.to_dict())


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_training_checkpoint` (``state_dict`` and ``training``)."""
    payload = read_checkpoint(path)
    if "training" not in payload:
        raise TsnError(f"{path} holds no training state (a weights-only checkpoint); it cannot be resumed")
    return payload
