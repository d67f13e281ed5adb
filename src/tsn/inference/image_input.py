"""Step 1 of the inference pipeline (:mod:`tsn.inference.pipeline`): an image as any caller holds it -> uint8 RGB
pixels and the image's full size, with one-line errors for everything that is not an image."""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from tsn.data.images import ImageSource, decode_image
from tsn.errors import TsnError

__all__ = ["ImageInput", "read_image"]

ImageInput = ImageSource | Image.Image | np.ndarray | torch.Tensor
"""An image as any caller holds it: a path, encoded bytes or a binary file, a PIL image, an array or a tensor."""


def _uint8_pixels(values: np.ndarray, what: str) -> np.ndarray:
    """uint8 as is; floating point in 0..1 rounded to 8 bits (as the image reader does for deeper data)."""
    if values.dtype == np.uint8:
        return values
    if not np.issubdtype(values.dtype, np.floating):
        raise TsnError(f"{what} has dtype {values.dtype}; give uint8 values or floating point values in 0..1")
    if values.size and (not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0):
        raise TsnError(f"{what} holds values outside 0..1 (or NaN); scale a float image to 0..1 or give uint8")
    return np.clip(np.rint(values.astype(np.float32) * np.float32(255.0)), 0, 255).astype(np.uint8)


def _rgb_from_array(array: np.ndarray, what: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3 or min(array.shape[:2]) < 1:
        raise TsnError(f"{what} has shape {tuple(array.shape)}; give H x W (grey) or H x W x 3 (RGB)")
    return np.ascontiguousarray(_uint8_pixels(array, what))


def _rgb_from_pil(image: Image.Image) -> np.ndarray:
    upright = ImageOps.exif_transpose(image)
    if upright.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in upright.info:
        rgba = upright.convert("RGBA")
        # Onto white, as the file reader composites transparency (a page's or a viewer's background).
        return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB"))
    return np.asarray(upright.convert("RGB"))


def _rgb_from_tensor(tensor: torch.Tensor) -> np.ndarray:
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise TsnError(
            f"the image tensor has shape {tuple(tensor.shape)}; give one RGB image 3 x H x W (or 1 x 3 x H x W)"
        )
    return _rgb_from_array(tensor.detach().cpu().permute(1, 2, 0).numpy(), "the image tensor")


def read_image(
    image: ImageInput,
    *,
    target_size: tuple[int, int] | None = None,
    max_pixels: int | Literal["default"] | None = "default",
    name: str | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 RGB pixels, the image's full (H, W))``; encoded images much larger than ``target_size`` are decoded
    reduced, images over ``max_pixels`` (stored) refused before decoding. One-line errors name ``name``."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)) or callable(getattr(image, "read", None)):
        decoded = decode_image(image, target_size=target_size, max_pixels=max_pixels, name=name)  # type: ignore[arg-type]
        return decoded.pixels, decoded.size
    if isinstance(image, Image.Image):
        pixels = _rgb_from_pil(image)
    elif isinstance(image, np.ndarray):
        pixels = _rgb_from_array(image, "the image array")
    elif isinstance(image, torch.Tensor):
        pixels = _rgb_from_tensor(image)
    else:
        raise TsnError(
            f"cannot predict on a {type(image).__name__}; give an image path or bytes, a PIL image, a numpy array "
            "H x W x 3 or a tensor 3 x H x W"
        )
    return pixels, (int(pixels.shape[0]), int(pixels.shape[1]))
