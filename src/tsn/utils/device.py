"""The device a command runs on, named by the user and checked once."""

from __future__ import annotations

import torch

from tsn.errors import TsnError

__all__ = ["resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (the GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TsnError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TsnError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu")
    return device
