"""The one rule for network input sizes, used by every command (predict, evaluate, analyze, export, serve), the
Python API and the page.

* Syntax and the upper bound (:func:`input_size`): one side ``N`` (a square) or ``H x W``, each side a whole
  number from 1 to :data:`MAX_INPUT_SIDE`. Checked before anything is loaded; light (no torch import), so the
  command-line parsers use it too.
* The lower bound comes from the model (:func:`min_input_side`): twice the encoder's largest stride, so that its
  coarsest feature map keeps more than one pixel a side (instance normalisation needs more than one value per
  channel), and at least the patch grid of a backbone that needs whole patches. :func:`check_input_size` applies
  both, in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tsn.errors import TsnError

if TYPE_CHECKING:
    from tsn.models.base import DensePredictionModel

__all__ = ["MAX_INPUT_SIDE", "SizeArg", "input_size", "parse_size_text", "min_input_side", "check_input_size"]

MAX_INPUT_SIDE = 2048
"""Largest network input side: 2048 holds Cityscapes at full resolution (1024 x 2048). The paper's model needs about
2 GB per image for its five tasks at 512 x 512, so 2048 x 2048 (16 times the pixels) is already a large GPU's
worth; a larger ``--size`` is refused in one line instead of ending in an out-of-memory error."""

SizeArg = int | str | Sequence[int]
"""A size as callers give it: one side, ``"N"`` / ``"HxW"`` text, or ``(H, W)``."""


def _sides(value: SizeArg) -> tuple[object, ...] | None:
    if isinstance(value, str):
        parts = value.strip().lower().split("x")
        try:
            return tuple(int(part) for part in parts)
        except ValueError:
            return None
    if isinstance(value, Sequence):
        return tuple(value)
    return (value,)


def input_size(value: SizeArg, what: str = "--size") -> tuple[int, int]:
    """``(H, W)`` from one side or two (``512``, ``"480x640"``, ``(480, 640)``): whole numbers from 1 to
    :data:`MAX_INPUT_SIDE`, else a one-line :class:`TsnError` naming ``what``."""
    sides = _sides(value)
    shown = value if isinstance(value, str) else "x".join(map(str, value)) if isinstance(value, Sequence) else value
    if sides is None or len(sides) not in (1, 2):
        raise TsnError(f"{what} {shown!s}: give one integer or (H, W), e.g. 512 or 480x640")
    checked = []
    for side in sides:
        if isinstance(side, bool) or not hasattr(side, "__index__"):
            raise TsnError(f"{what} {shown!s}: the sides must be whole numbers, e.g. 512 or 480x640")
        number = int(side)  # type: ignore[call-overload,unused-ignore]  # numpy integers too (__index__)
        if not 1 <= number <= MAX_INPUT_SIDE:
            raise TsnError(f"{what} {shown!s}: each side must be from 1 to {MAX_INPUT_SIDE} pixels, e.g. 512")
        checked.append(number)
    return (checked[0], checked[-1])


def parse_size_text(text: str) -> tuple[int, int]:
    """An ``argparse`` type for ``--size N|HxW`` (:func:`input_size`; the model's own minimum is checked once it is
    loaded)."""
    import argparse

    try:
        return input_size(text, "size")
    except TsnError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def min_input_side(model: DensePredictionModel) -> int:
    """The smallest network input side ``model`` runs at: twice its encoder's largest stride (the coarsest feature
    map keeps two pixels a side), and at least the patch grid of an encoder that needs whole patches; 1 for a model
    without a timm encoder."""
    from tsn.models.backbone import encoder_feature_info

    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "feature_info"):
        return 1  # a model without a timm encoder (a user's own, a test double) states no minimum
    stride = max(int(r) for r in encoder_feature_info(encoder).reduction())
    multiple = tuple(int(m) for m in getattr(model, "input_multiple", (1, 1)))
    return max(2 * stride, *multiple)


def check_input_size(model: DensePredictionModel, value: SizeArg, what: str = "--size") -> tuple[int, int]:
    """``(H, W)`` of :func:`input_size`, refused in one line when a side is under :func:`min_input_side`."""
    height, width = input_size(value, what)
    smallest = min_input_side(model)
    if min(height, width) < smallest:
        raise TsnError(
            f"{what} must be at least {smallest} x {smallest} for this model (twice its encoder's largest stride, "
            f"so that the coarsest features keep more than one pixel), got {height}x{width}"
        )
    return (height, width)
