"""What a pretrained-model source names: a local folder in the Hub layout, or ``hf-hub:ORG/NAME[@REVISION]``.

Cheap on purpose (no torch, no huggingface_hub): the one model loader asks :func:`is_pretrained_source` about every
path it is given before it reads anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tsn.errors import TsnError

__all__ = [
    "HUB_PREFIX",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "CARD_FILE",
    "EVALUATION_FILE",
    "HubSource",
    "parse_hub_source",
    "is_pretrained_source",
]

HUB_PREFIX = "hf-hub:"
"""The prefix of a model on the Hugging Face Hub, as timm spells it: ``hf-hub:ORG/NAME[@REVISION]``."""

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
EVALUATION_FILE = "evaluation.json"
"""The files of a pretrained folder: the config, the weights, the model card and (when there was one) the
``tsn evaluate`` record whose numbers the card quotes."""

# The Hub's own rule for repository names (huggingface_hub.utils.validate_repo_id): letters, digits, '-', '_', '.',
# at most 96 characters, no '--' or '..', not starting or ending with '-' or '.'.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")


@dataclass(frozen=True)
class HubSource:
    """``hf-hub:ORG/NAME@REVISION`` taken apart (``revision`` None: the repository's default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_source(source: str | os.PathLike[str]) -> HubSource | None:
    """``"hf-hub:org/name@v1"`` -> ``HubSource("org/name", "v1")``; anything without the prefix -> None.

    A source with the prefix but a malformed repository id or revision is refused in one line.
    """
    text = os.fspath(source)
    if not isinstance(text, str) or not text.startswith(HUB_PREFIX):
        return None
    repo_id, at, revision = text[len(HUB_PREFIX):].partition("@")
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise TsnError(f"{text!r} is not a Hub model name; write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION "
                       "(letters, digits, '-', '_' and '.', e.g. hf-hub:my-lab/tsn_r18_pascal)")
    if at and (not _REVISION.match(revision) or ".." in revision):
        raise TsnError(f"{text!r}: {revision!r} is not a revision; give a branch, a tag or a commit hash after '@'")
    return HubSource(repo_id, revision or None)


def is_pretrained_source(source: str | os.PathLike[str]) -> bool:
    """True for ``hf-hub:ORG/NAME[@REVISION]`` and for a local folder holding ``config.json`` and
    ``model.safetensors`` (the layout :func:`tsn.save_pretrained` writes); False for anything else, which the
    loader then reads as a checkpoint file or a run folder."""
    try:
        text = os.fspath(source)
    except TypeError:
        return False
    if not isinstance(text, str):
        return False
    if text.startswith(HUB_PREFIX):
        return True
    folder = Path(text).expanduser()
    return folder.is_dir() and (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()
