"""Reading user images of any kind as upright RGB arrays, at reduced size when the network input is small.

:func:`read_rgb_image` / :func:`decode_image` accept every image Pillow opens, plus 16-bit colour PNG and TIFF
(which Pillow can only truncate to 8 bits; OpenCV reads them with their full depth). The value conventions:

* 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) convert to RGB as Pillow does;
  palette images are looked up in their palette.
* 16-bit grey (``I;16``, ``I;16B``, ``I;16L``) and 16-bit colour: value / 65535 (the full 0..65535 range; a
  16-bit image is never clipped to 255).
* ``I`` (32-bit integers): value / 65535 when every value lies in 0..65535 (Pillow and many tools store 16-bit
  data this way), otherwise min-max scaled to 0..1.
* ``F`` (32-bit float): taken as is when every value lies in 0..1, otherwise min-max scaled to 0..1.
* Transparency (``LA``, ``PA``, ``RGBA``, palette transparency): composited onto **white**, as a page or a
  viewer's default background shows a transparent picture; fully transparent pixels become white whatever colour
  they happen to store.
* Multi-frame files (GIF, TIFF, APNG, ...): the first frame.
* The EXIF orientation is applied, so the array is upright as viewers show it; ``size`` is the upright size.

Large images: with ``target_size`` (the network input, H x W) an image at least twice as large per side is
decoded reduced, keeping each side at least twice the target (the following bicubic resize still shrinks it):
JPEGs in the DCT domain (Pillow's draft mode: 1/2, 1/4 or 1/8 scale, never materialised at full size), other
formats decoded once at their native depth and box-reduced before any conversion or copy. Smaller images are
decoded exactly as they are, so the usual inputs give the same pixels as a plain decode.

Sources: a path, the file's bytes (``bytes``, ``bytearray``, ``memoryview``) or a binary file object (read whole),
so a server decodes an upload without writing it to disk; ``name`` is what one-line errors call the image.

Decompression bombs: an image whose stored size exceeds ``max_pixels`` (default: the size at which Pillow itself
refuses, ``2 * PIL.Image.MAX_IMAGE_PIXELS``, read at call time, so a program's own setting is honoured) is a
one-line :class:`~tsn.errors.TsnError`, raised before any pixel is decoded. Pillow's global is never changed.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from tsn.errors import TsnError

__all__ = ["ImageSource", "DecodedImage", "decode_image", "read_rgb_image", "default_max_pixels", "REDUCE_MARGIN"]

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]
"""An encoded image: a path, the file's bytes, or a binary file object."""

REDUCE_MARGIN = 2
"""A reduced decode keeps each side at least this many times the target side."""

_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_UINT16_MAX = 65535.0

OutputDtype = Literal["uint8", "float32"]


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image, possibly decoded at reduced size, and the upright size of the full image."""

    pixels: np.ndarray
    """``h x w x 3`` RGB: uint8, or float32 in 0..1."""
    size: tuple[int, int]
    """``(H, W)`` of the full upright image (equal to ``pixels.shape[:2]`` unless decoded reduced)."""


def default_max_pixels() -> int | None:
    """The largest image decoded by default: where Pillow's own decompression-bomb error starts (None: no limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def read_rgb_image(
    source: ImageSource,
    *,
    target_size: Sequence[int] | None = None,
    dtype: OutputDtype = "uint8",
    max_pixels: int | Literal["default"] | None = "default",
    name: str | None = None,
) -> np.ndarray:
    """The pixels of :func:`decode_image` (``h x w x 3`` RGB, upright)."""
    return decode_image(source, target_size=target_size, dtype=dtype, max_pixels=max_pixels, name=name).pixels


def _open_source(source: ImageSource, name: str | None) -> tuple[Path | io.BytesIO, str]:
    """What Pillow opens (a path, or the bytes in memory) and the name errors use."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path, name or str(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), name or "the image bytes"
    if callable(getattr(source, "read", None)):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TsnError(f"{name or 'the image file object'}: opened in text mode; open it with 'rb'")
        return io.BytesIO(bytes(data)), name or str(getattr(source, "name", "") or "the image file object")
    raise TsnError(f"cannot decode a {type(source).__name__} as an image; give a path, bytes or a binary file")


def decode_image(
    source: ImageSource,
    *,
    target_size: Sequence[int] | None = None,
    dtype: OutputDtype = "uint8",
    max_pixels: int | Literal["default"] | None = "default",
    name: str | None = None,
) -> DecodedImage:
    """Read an encoded image (a path, bytes or a binary file object) as upright RGB (see the module docstring).

    ``target_size = (H, W)``: the size the image will be resized to; much larger images are decoded reduced.
    ``dtype``: ``uint8`` (16-bit and float data rounded to 8 bits) or ``float32`` in 0..1 (full precision).
    A missing file, a file that is not an image, a corrupt or truncated one, an unsupported format or mode and an
    image over ``max_pixels`` raise a one-line :class:`TsnError` naming the image (``name``, else the path).
    """
    if dtype not in ("uint8", "float32"):
        raise TsnError(f"image dtype must be uint8 or float32, got {dtype!r}")
    opened, shown = _open_source(source, name)
    limit = default_max_pixels() if max_pixels == "default" else max_pixels
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces Pillow's warning; its hard error is still caught and reported.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(opened) as image:
                decoded = _decode_opened(image, opened, shown, target_size, limit)
    except TsnError:
        raise
    except FileNotFoundError:
        raise TsnError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise TsnError(f"{shown}: is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise TsnError(f"{shown}: not an image (unrecognised file format)") from None
    except Image.DecompressionBombError as error:
        raise TsnError(
            f"{shown}: {_one_line(error).rstrip('.')} (Pillow's decompression-bomb guard); shrink the image first"
        ) from None
    except Exception as error:  # Pillow and OpenCV report damage as OSError, SyntaxError, ValueError, zlib.error...
        raise TsnError(
            f"{shown}: unreadable image ({_one_line(error)}); the file may be corrupt or truncated"
        ) from None
    pixels, size = decoded
    return DecodedImage(_to_dtype(pixels, dtype), size)


# ------------------------------------------------------------------------------------------------ decoding


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _decode_opened(
    image: Image.Image, source: Path | io.BytesIO, shown: str, target_size: Sequence[int] | None, limit: int | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """(RGB pixels as uint8 or float32 in 0..1, upright, maybe reduced; upright full size)."""
    width, height = image.size
    if limit is not None and width * height > limit:
        raise TsnError(
            f"{shown}: {width} x {height} = {width * height:,} pixels is over the decompression-bomb limit of "
            f"{limit:,} pixels; shrink the image before using it"
        )
    deep = _is_deep_colour(image)  # before anything makes Pillow decode (and so forget how deep the data is)
    orientation = _orientation(image, may_decode=not deep)
    upright = (width, height) if orientation not in _TRANSPOSED_ORIENTATIONS else (height, width)
    needed = _needed_stored_size(target_size, orientation)
    pixels = _read_deep_colour(source, shown, needed) if deep else _read_with_pillow(image, needed)
    return _orient(pixels, orientation), (upright[1], upright[0])


def _orientation(image: Image.Image, may_decode: bool) -> int:
    """The EXIF orientation (1 when absent). Pillow's PNG reader decodes the whole image to find an eXIf chunk
    stored after the pixels; where that decode is unwanted (OpenCV reads the pixels) only a chunk before the
    pixels (the recommended place) is used."""
    try:
        if may_decode or image.format != "PNG":
            value = image.getexif().get(_ORIENTATION_TAG, 1)
        elif "exif" in image.info:
            exif = Image.Exif()
            exif.load(image.info["exif"])
            value = exif.get(_ORIENTATION_TAG, 1)
        else:
            return 1
    except Exception:  # an unreadable EXIF block does not make the picture unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _needed_stored_size(target_size: Sequence[int] | None, orientation: int) -> tuple[int, int] | None:
    """(width, height) in the file's stored orientation that a reduced decode must keep, or None."""
    if target_size is None:
        return None
    target_h, target_w = (int(side) for side in target_size)
    if orientation in _TRANSPOSED_ORIENTATIONS:
        target_h, target_w = target_w, target_h
    return (max(1, REDUCE_MARGIN * target_w), max(1, REDUCE_MARGIN * target_h))


def _reduction(size: tuple[int, int], needed: tuple[int, int] | None) -> int:
    """The integer factor that shrinks ``size`` (W, H) as much as possible while keeping ``needed``."""
    if needed is None:
        return 1
    return max(1, min(size[0] // needed[0], size[1] // needed[1]))


def _is_deep_colour(image: Image.Image) -> bool:
    """A 16-bit colour (or grey + alpha) PNG/TIFF, which Pillow would truncate to 8 bits."""
    if image.mode.startswith("I") or image.mode == "F":
        return False  # grey 16/32-bit: Pillow keeps the full values
    return any(";16" in str(tile.args) for tile in getattr(image, "tile", ()))


def _read_deep_colour(source: Path | io.BytesIO, shown: str, needed: tuple[int, int] | None) -> np.ndarray:
    """A 16-bit colour image with OpenCV at its full depth -> float32 RGB in 0..1 (alpha composited)."""
    if isinstance(source, Path):  # imdecode: paths of any spelling, no separate existence race
        data = np.fromfile(source, dtype=np.uint8)
    else:
        data = np.frombuffer(source.getbuffer(), dtype=np.uint8)
    raw: np.ndarray | None = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    del data
    if raw is None:
        raise TsnError(f"{shown}: unreadable 16-bit image; the file may be corrupt or truncated")
    factor = _reduction((raw.shape[1], raw.shape[0]), needed)
    if factor > 1:  # box average over factor x factor blocks (INTER_AREA at an integer factor)
        raw = cv2.resize(raw, (raw.shape[1] // factor, raw.shape[0] // factor), interpolation=cv2.INTER_AREA)
    scale = float(np.iinfo(raw.dtype).max) if raw.dtype.kind in "ui" else 1.0
    values = raw.astype(np.float32) / np.float32(scale)
    if values.ndim == 2:
        values = values[..., None]
    channels = values.shape[-1]
    if channels == 1:
        return np.repeat(values, 3, axis=-1)
    if channels == 2:  # grey + alpha
        return _composite(np.repeat(values[..., :1], 3, axis=-1), values[..., 1:])
    rgb = values[..., 2::-1]  # OpenCV's BGR(A) -> RGB
    return _composite(rgb, values[..., 3:4]) if channels == 4 else np.ascontiguousarray(rgb)


def _read_with_pillow(image: Image.Image, needed: tuple[int, int] | None) -> np.ndarray:
    """Every Pillow mode -> RGB, uint8 for 8-bit data, float32 in 0..1 for deeper data."""
    factor = _reduction(image.size, needed)
    if factor > 1 and image.format == "JPEG":
        # DCT-domain scaling: the decoder never builds the full-size picture.
        image.draft(None, (image.size[0] // factor, image.size[1] // factor))
    image.load()
    factor = _reduction(image.size, needed)
    if factor > 1:
        image = _reducible(image).reduce(factor)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _grey_to_rgb(np.asarray(image).astype(np.float32) / np.float32(_UINT16_MAX))
    if mode == "I":
        values = np.asarray(image)
        if values.size and values.min() >= 0 and values.max() <= _UINT16_MAX:
            return _grey_to_rgb(values.astype(np.float32) / np.float32(_UINT16_MAX))
        return _grey_to_rgb(_min_max(values))
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ValueError("the float image holds NaN or infinite values")
        inside = values.size == 0 or (values.min() >= 0.0 and values.max() <= 1.0)
        return _grey_to_rgb(values if inside else _min_max(values))
    if _has_alpha(image):
        rgba = np.asarray(image.convert("RGBA"))
        return _composite_uint8(rgba[..., :3], rgba[..., 3:])
    if mode in ("1", "L"):
        return _grey_to_rgb(np.asarray(image.convert("L")))
    return np.asarray(image.convert("RGB"))


def _reducible(image: Image.Image) -> Image.Image:
    """``image`` in a mode that ``Image.reduce`` supports (1-bit -> L, palette -> RGB(A), 16-bit grey -> I)."""
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P":
        return image.convert("RGBA" if _has_alpha(image) else "RGB")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("LA", "PA", "La", "RGBA", "RGBa") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _min_max(values: np.ndarray) -> np.ndarray:
    """float32 in 0..1 by the image's own range (a constant image gives zeros)."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """float32 RGB over a white background."""
    return (rgb * alpha + (1.0 - alpha)).astype(np.float32)


def _composite_uint8(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 RGB over a white background, exactly rounded: ``(c * a + 255 * (255 - a)) / 255``."""
    a = alpha.astype(np.uint32)
    blended = rgb.astype(np.uint32) * a + 255 * (255 - a)
    return ((blended + 127) // 255).astype(np.uint8)


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an ``H x W x C`` array, as ``PIL.ImageOps.exif_transpose`` does."""
    if orientation == 2:
        pixels = pixels[:, ::-1]
    elif orientation == 3:
        pixels = pixels[::-1, ::-1]
    elif orientation == 4:
        pixels = pixels[::-1]
    elif orientation == 5:
        pixels = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        pixels = np.rot90(pixels, -1)
    elif orientation == 7:
        pixels = pixels[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        pixels = np.rot90(pixels, 1)
    return np.ascontiguousarray(pixels)


def _to_dtype(pixels: np.ndarray, dtype: OutputDtype) -> np.ndarray:
    if dtype == "uint8":
        if pixels.dtype == np.uint8:
            return pixels
        return np.clip(np.rint(pixels * np.float32(255.0)), 0, 255).astype(np.uint8)
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    return pixels.astype(np.float32, copy=False)
