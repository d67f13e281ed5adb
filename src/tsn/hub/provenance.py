"""Where a converted checkpoint comes from, and the evidence that its weights are the authors', unchanged.

The evidence is computed, not asserted: the digest of every tensor of the authors' file is compared with the digest
of every tensor of the converted model (as multisets, so the renaming of the weights plays no part). Equal
multisets mean that nothing was changed, dropped or added on the way.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tsn.errors import TsnError
from tsn.utils.io import file_sha256

__all__ = [
    "tensor_digests", "conversion_provenance", "save_converted_pretrained", "CONVERTED_LICENSE_NOTE",
]

_NESTING_KEYS = ("model_state", "state_dict")  # the authors' {"model_state": ...}, then the common torch wrapping



def tensor_digests(state: Mapping[str, torch.Tensor]) -> Counter[str]:
    """The multiset of the tensors' digests (dtype, shape and bytes), whatever their names."""
    digests: Counter[str] = Counter()
    for tensor in state.values():
        value = tensor.detach().cpu().contiguous()
        digest = hashlib.sha256(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        digests[digest.hexdigest()] += 1
    return digests


def _authors_state(payload: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(payload, Mapping):
        for key in _NESTING_KEYS:
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise TsnError("the authors' file holds no state dict of tensors; it cannot be the origin of this model")
    return payload


def conversion_provenance(official: str | os.PathLike[str], model: torch.nn.Module) -> dict[str, Any]:
    """The origin of ``model``, converted from the authors' file ``official``, with the evidence for the card.

    Returns ``file``, ``bytes``, ``sha256``, ``tsn_version``, ``tensors`` (how many) and ``evidence`` (sentences).
    Refuses in one line when the model's weights are not exactly the file's.
    """
    from tsn import __version__

    path = Path(official)
    state = _authors_state(torch.load(path, map_location="cpu", weights_only=True))
    ours = model.state_dict()
    theirs_digests, our_digests = tensor_digests(state), tensor_digests(ours)
    if theirs_digests != our_digests:
        differing = sum((theirs_digests - our_digests).values())
        raise TsnError(f"{path}: {differing} of its {len(state)} tensors are not among the converted model's; the "
                       "model was not converted from this file (or was changed since)")
    parameters = sum(t.numel() for t in ours.values() if t.is_floating_point())
    evidence = [
        f"layout: the file's {len(state)} tensors map one to one onto this model's {len(ours)} weights, names and "
        "shapes exactly as in the authors' architecture (`tsn convert` refuses any other layout)",
        f"values: the sha256 of each of the {len(state)} tensors of the file (dtype, shape and bytes; "
        f"{parameters:,} floating-point values) equals that of one tensor of `model.safetensors`: nothing was "
        "changed, dropped or added",
        f"architecture: tsn {__version__} reproduces the outputs of the authors' own code on their reference fixture "
        "for every task (the project's parity tests, `tests/models/test_parity.py`: float32 within the float32 "
        "error model, float64 within the fixture's own rounding)",
    ]
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "tsn_version": __version__,
        "tensors": len(state),
        "evidence": evidence,
    }


CONVERTED_LICENSE_NOTE = (
    "The weights are the paper's authors' (Sun et al., ICCV 2021), converted unchanged. Their repository has no "
    "licence file, so this card grants no licence for them: ask the authors before any use beyond research. The "
    "code that converted them (tsn) is MIT-licensed."
)


def save_converted_pretrained(
    official: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    task: str | None = None,
    name: str | None = None,
    notes: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """``tsn convert --save-pretrained``: the authors' file -> a pretrained folder whose card states its origin and
    the evidence that the weights are unchanged (licence ``unknown``: the authors published none)."""
    from tsn.hub.folder import check_output, save_pretrained
    from tsn.models.convert import load_official_checkpoint

    check_output(Path(directory).expanduser(), overwrite, (Path(official),))
    model = load_official_checkpoint(official, task, notes)
    return save_pretrained(model, directory, name=name, provenance=conversion_provenance(official, model),
                           license="unknown", license_note=CONVERTED_LICENSE_NOTE, overwrite=overwrite)
