"""The layout of a run folder, in one place: what ``tsn train`` (and ``tsn demo``, ``tsn reproduce``) write, and
where every other command looks for a run's checkpoint and config.

Run folder layout::

    RUN_DIR/config.yaml            the fully resolved training config
    RUN_DIR/train.log              plain-text log
    RUN_DIR/history.json           every validation (losses, metrics, learning rates)
    RUN_DIR/result.json            the summary of the finished (or interrupted) run
    RUN_DIR/checkpoints/last.pt    the latest training state (every ``checkpoint_every`` steps and each epoch end)
    RUN_DIR/checkpoints/best.pt    the training state at the best validation
    RUN_DIR/tensorboard/           TensorBoard scalars
    RUN_DIR/evaluation.json        the ``tsn evaluate`` record of the run (``tsn reproduce``'s cache)
    RUN_DIR/metrics.json           the demo's scores (``tsn demo``: a finished demo run)

A folder given where a model is expected (``tsn predict --checkpoint RUN_DIR``, ``tsn.load_model(RUN_DIR)``...)
stands for its best checkpoint, else its last, else a ``model.pt`` beside nothing else (a folder holding one
exported model): :func:`checkpoint_in`.

This module imports nothing heavy (no torch) and nothing of the package but its errors, so the loader
(:func:`tsn.models.checkpoint.load_model`) and every command can resolve paths before loading anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tsn.errors import TsnError

__all__ = ["RunPaths", "MODEL_FILE", "checkpoint_in", "resolve_checkpoint", "config_of"]

MODEL_FILE = "model.pt"
"""A folder's single model file, used when the folder is not a training run."""


@dataclass(frozen=True)
class RunPaths:
    """The files of a run folder."""

    root: Path
    removed_temp_files: tuple[Path, ...] = field(default=(), compare=False)
    """Temporary files of interrupted atomic saves (a killed run) that the trainer removed when it reopened it."""

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.json"

    @property
    def demo_metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def model_candidates(self) -> tuple[Path, ...]:
        """Where the folder's model is looked for, in order: best, last, a lone ``model.pt``."""
        return (self.best, self.last, self.root / MODEL_FILE)


def checkpoint_in(folder: str | os.PathLike[str]) -> Path | None:
    """The checkpoint a folder stands for (:attr:`RunPaths.model_candidates`), or None when it holds none."""
    return next((path for path in RunPaths(Path(folder)).model_candidates if path.is_file()), None)


def resolve_checkpoint(source: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or the checkpoint of a run folder; a one-line :class:`TsnError` when there is none.

    The one place that says what a missing checkpoint or an empty folder is, for every command and the API.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        found = checkpoint_in(path)
        if found is None:
            raise TsnError(
                f"checkpoint {path} is a folder without checkpoints/best.pt, checkpoints/last.pt or {MODEL_FILE}; "
                "give a checkpoint file or a tsn train run folder"
            )
        return found
    if not path.exists():
        raise TsnError(f"checkpoint {path} does not exist; give a checkpoint file or a tsn train run folder")
    return path


def config_of(source: str | os.PathLike[str]) -> Path | None:
    """The ``config.yaml`` of the run a folder or checkpoint belongs to (the folder itself, or the run holding
    ``checkpoints/<file>``), or None outside a run."""
    path = Path(source).expanduser()
    for folder in (path, path.parent, path.parent.parent):
        config = RunPaths(folder).config
        if config.is_file():
            return config
    return None
