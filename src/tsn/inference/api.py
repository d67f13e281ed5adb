"""One call that predicts every task of one image: ``tsn.predict(model_or_checkpoint, image)``.

The image goes through the pipeline of ``tsn predict`` (:mod:`tsn.inference.predict`): bicubic resize of the uint8
RGB image to the network input ``size``, ImageNet normalisation, every requested task in one forward pass (the
encoder once), then per task ``TaskSpec.postprocess`` and ``TaskSpec.resize_prediction`` back to the image's own
size. So ``tsn.predict(model, "photo.jpg")`` gives exactly the values ``tsn predict`` saves for that file.

Accepted images (one image per call):

* a path (``str`` / ``os.PathLike``): read by :func:`tsn.data.images.decode_image` (every Pillow mode, 16-bit,
  EXIF orientation, transparency onto white);
* a ``PIL.Image.Image``: EXIF orientation applied, transparency composited onto white, converted to RGB;
* a ``numpy`` array ``H x W`` (grey) or ``H x W x 3`` (RGB): uint8, or floating point in 0..1;
* a ``torch`` tensor ``3 x H x W`` or ``1 x 3 x H x W`` (RGB, channels first, as torchvision): uint8, or floating
  point in 0..1. Not normalised: the normalisation is part of the pipeline.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps

from tsn.data.images import decode_image
from tsn.data.transforms import build_transforms
from tsn.errors import TsnError
from tsn.inference.predict import restore_predictions
from tsn.models.base import DensePredictionModel, TaskArg
from tsn.models.checkpoint import load_model
from tsn.utils.checks import require_int

__all__ = ["ImageInput", "ModelInput", "load_model", "predict"]

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, torch.Tensor]
"""What :func:`predict` accepts as the image (see the module docstring for layouts and value ranges)."""
ModelInput = Union[DensePredictionModel, str, "os.PathLike[str]"]
"""A model, or a checkpoint (file or ``tsn train`` run folder) to load."""

MIN_SIDE = 64
"""The smallest network input side: twice the encoder's stride of 32, so that the deepest feature map has more
than one pixel per channel (instance normalisation needs at least two)."""


def _network_size(size: int | tuple[int, int]) -> tuple[int, int]:
    try:
        sides = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    except TypeError:
        sides = ()
    if len(sides) != 2:
        raise TsnError(f"predict size must be one integer or (H, W), got {size!r}")
    for side in sides:
        require_int("predict size", int(side) if isinstance(side, np.integer) else side, minimum=MIN_SIDE)
    return (int(sides[0]), int(sides[1]))


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
    array = tensor.detach().cpu().permute(1, 2, 0).numpy()
    return _rgb_from_array(array, "the image tensor")


def _read_image(image: ImageInput, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """(uint8 RGB pixels, maybe decoded reduced; the image's full ``(H, W)``)."""
    if isinstance(image, (str, os.PathLike)):
        decoded = decode_image(image, target_size=size)
        return decoded.pixels, decoded.size
    if isinstance(image, Image.Image):
        pixels = _rgb_from_pil(image)
    elif isinstance(image, np.ndarray):
        pixels = _rgb_from_array(image, "the image array")
    elif isinstance(image, torch.Tensor):
        pixels = _rgb_from_tensor(image)
    else:
        raise TsnError(
            f"cannot predict on a {type(image).__name__}; give an image path, a PIL image, a numpy array "
            "H x W x 3 or a tensor 3 x H x W"
        )
    return pixels, (int(pixels.shape[0]), int(pixels.shape[1]))


def _model(model: ModelInput, device: str | torch.device | None) -> DensePredictionModel:
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, map_location=device or "cpu")
    if not isinstance(model, DensePredictionModel):
        raise TsnError(
            f"expected a tsn model or a checkpoint path, got a {type(model).__name__}; build one with "
            "tsn.create_model or load one with tsn.load_model"
        )
    return model if device is None else model.to(device)


def predict(
    model: ModelInput,
    image: ImageInput,
    *,
    tasks: TaskArg = None,
    size: int | tuple[int, int] = 512,
    device: str | torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Predict ``tasks`` (None: every task of the model) on one image, at the image's own size.

    ``model``: a tsn model, or a checkpoint file / ``tsn train`` run folder (loaded onto ``device``, default the
    CPU; a given model runs where it is unless ``device`` is set). ``size`` is the network input ``(H, W)`` (one
    integer: a square; default 512, the paper's and ``tsn predict``'s). Returns, per task name, the postprocessed
    prediction as a numpy array: ``H x W`` class indices (int64) for class maps, ``C x H x W`` float32 otherwise
    (probabilities, unit normals, depth). A model in training mode is run in eval mode and put back.
    """
    network_size = _network_size(size)
    net = _model(model, device)
    names = net.task_names(tasks)
    pixels, original_size = _read_image(image, network_size)
    transform = build_transforms("eval", network_size, tasks=(), seed=0)
    batch = transform({"image": pixels})["image"][None]
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            raw = net(batch.to(next(net.parameters()).device), names)
            specs = {name: net.task_specs[name] for name in names}
            return restore_predictions(raw, specs, [original_size])[0]
    finally:
        net.train(was_training)
