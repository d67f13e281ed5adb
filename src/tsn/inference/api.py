"""One call that predicts every task of one image: ``tsn.predict(model_or_checkpoint, image)``.

The image goes through the inference pipeline (:mod:`tsn.inference.pipeline`), the one that ``tsn predict``, the
page of ``tsn serve``, ``tsn evaluate`` and ``tsn analyze`` use: bicubic resize of the uint8 RGB image to the
network input ``size``, ImageNet normalisation, every requested task in one forward pass (the encoder once), then
per task ``TaskSpec.postprocess`` and ``TaskSpec.resize_prediction`` back to the image's own size. So
``tsn.predict(model, "photo.jpg")`` gives exactly the values ``tsn predict`` saves for that file.

Accepted images (one image per call):

* a path (``str`` / ``os.PathLike``), the file's bytes or a binary file object: decoded by
  :func:`tsn.data.images.decode_image` (every Pillow mode, 16-bit, EXIF orientation, transparency onto white);
* a ``PIL.Image.Image``: EXIF orientation applied, transparency composited onto white, converted to RGB;
* a ``numpy`` array ``H x W`` (grey) or ``H x W x 3`` (RGB): uint8, or floating point in 0..1;
* a ``torch`` tensor ``3 x H x W`` or ``1 x 3 x H x W`` (RGB, channels first, as torchvision): uint8, or floating
  point in 0..1. Not normalised: the normalisation is part of the pipeline.

An image over :data:`~tsn.inference.pipeline.PREDICTION_BUDGET` (16.8 megapixels, or 16384 pixels a side) is
predicted at the largest size within it, with the same aspect.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

from tsn.errors import TsnError
from tsn.inference.input_size import input_size
from tsn.inference.pipeline import ImageInput, Pipeline, Resize
from tsn.models.base import DensePredictionModel, TaskArg
from tsn.models.checkpoint import load_model

__all__ = ["ImageInput", "ModelInput", "load_model", "predict"]

ModelInput = Union[DensePredictionModel, str, "os.PathLike[str]"]
"""A model, or what :func:`tsn.load_model` loads (a checkpoint file, a ``tsn train`` run folder, a shared model)."""


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
    integer: a square; default 512, the paper's and ``tsn predict``'s), at least the model's minimum
    (:func:`tsn.inference.input_size.min_input_side`). Returns, per task name, the postprocessed prediction as a
    numpy array: ``H x W`` class indices (int64) for class maps, ``C x H x W`` float32 otherwise (probabilities,
    unit normals, depth). A model in training mode is run in eval mode and put back.
    """
    network_size = input_size(size, "predict size")  # the syntax first, before a checkpoint is loaded
    net = _model(model, device)
    return Pipeline(net, tasks=tasks, fit=Resize(network_size), what="predict size").predict(image)
