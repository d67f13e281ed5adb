"""The TSNs authors' parity fixture: its folder and the rule that rebuilds its weights (reference-model.md, 3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

FIXTURE = Path(__file__).resolve().parent / "data" / "tsns_reference"
AUTHORS_TASK_NAMES = {"seg": "semseg", "parts": "human_parts", "edges": "edges", "normals": "normals",
                      "saliency": "saliency"}


def reference_weights(keys_file: str) -> dict[str, torch.Tensor]:
    """Tensor ``i`` of the key list, rebuilt by the fixture's rule (reference-model.md, section 3)."""
    state = {}
    for i, (name, shape, dtype) in enumerate(json.loads((FIXTURE / keys_file).read_text())):
        g = torch.Generator().manual_seed(1000 + i)
        if dtype == "int64":
            value = torch.zeros(shape, dtype=torch.int64)
        elif "running_var" in name:
            value = 0.5 + torch.rand(shape, generator=g)
        elif "running_mean" in name:
            value = 0.1 * torch.randn(shape, generator=g)
        elif "weight_orig" in name:
            value = torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            value = 0.1 * torch.randn(shape, generator=g)
            if "style" in name and name.endswith("bias"):
                value[: shape[0] // 2] += 1.0
        state[name] = value
    return state
