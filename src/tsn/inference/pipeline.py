"""The one path from an image to every requested task's prediction, and from a prediction to its saved form.

Every caller goes through here: :func:`tsn.predict`, ``tsn predict``, the page of ``tsn serve``, ``tsn evaluate``
and ``tsn analyze``. The steps:

1. **read** (:func:`read_image`): a path, the file's bytes or a binary file object (decoded by
   :func:`tsn.data.images.decode_image`: every Pillow mode, 16-bit, EXIF orientation, transparency onto white;
   an image far larger than the network input decoded reduced), a ``PIL`` image, a numpy array ``H x W [x 3]`` or
   a tensor ``[1 x] 3 x H x W`` (uint8, or floating point in 0..1) -> uint8 RGB and the image's full size;
2. **bound** (:class:`PixelBudget`): predictions are made at the image's own size, unless it exceeds the caller's
   pixel budget (pixels, longest side); then at the largest size within the budget with the same aspect, so
   that no buffer the size of a huge (or a 1 x 40 million) image is ever allocated per task;
3. **bring to the network** (:class:`Resize`, :class:`PadToMultiple` or :class:`PadToSize`, the caller's or
   protocol's choice): bicubic resize of the uint8 image to a fixed size (the paper's); or the image at its own
   size, zero-padded (after ImageNet normalisation: the mean colour) at the bottom and right up to a multiple and
   to the model's minimum side; or the image at its own size placed in the centre of a fixed size, zero-padded
   around it (the InvPT family's test-time ``PadImage``); a padded output is cropped back exactly; every fit
   applies ImageNet normalisation;
4. **run** every requested task in one forward pass (the encoder once);
5. **restore**: per task ``TaskSpec.postprocess`` at the network resolution, then ``TaskSpec.resize_prediction``
   back to the prediction size (:func:`restore_predictions`, one task at a time when memory matters);
6. **save** (:func:`saved_files`, :func:`save_prediction`): ``TaskSpec.to_saved`` in the authors' conventions,
   as bytes (the page) or as atomically written files (``tsn predict``, ``tsn evaluate --save-predictions``).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tsn.errors import TsnError
from tsn.inference.image_input import ImageInput, read_image
from tsn.inference.input_size import MAX_INPUT_SIDE, SizeArg, check_input_size, input_size, min_input_side
from tsn.models.base import DensePredictionModel, TaskArg
from tsn.tasks import TaskSpec, color_palette
from tsn.utils.io import atomic_write

__all__ = [
    "ImageInput",
    "SaveFormat",
    "SAVE_FORMATS",
    "PixelBudget",
    "PREDICTION_BUDGET",
    "Resize",
    "PadToMultiple",
    "PadToSize",
    "InputFit",
    "FITS",
    "make_fit",
    "PreparedImage",
    "read_image",
    "Preparer",
    "Pipeline",
    "restore_predictions",
    "saved_files",
    "save_prediction",
]

SaveFormat = Literal["visual", "authors"]
SAVE_FORMATS: tuple[str, ...] = ("visual", "authors")

_PALETTE = color_palette().tobytes()


# ------------------------------------------------------------------------------------------------ budgets


@dataclass(frozen=True)
class PixelBudget:
    """The most pixels (and the longest side) one image's predictions may have."""

    pixels: int
    side: int

    def fit(self, size: tuple[int, int]) -> tuple[int, int]:
        """``size`` itself when within the budget, else the largest size within it with about the same aspect
        (a side never below 1 pixel)."""
        height, width = size
        scale = min(1.0, math.sqrt(self.pixels / max(1, height * width)), self.side / max(height, width))
        if scale >= 1.0:
            return (height, width)
        return (max(1, min(self.side, int(height * scale))), max(1, min(self.side, int(width * scale))))

    def shrink(self, pixels: np.ndarray) -> np.ndarray:
        """``H x W x C`` ``pixels`` reduced to :meth:`fit` their size (themselves when within the budget)."""
        return _shrink(pixels, self.fit((int(pixels.shape[0]), int(pixels.shape[1]))))


PREDICTION_BUDGET = PixelBudget(pixels=4096 * 4096, side=16384)
"""``tsn predict`` and :func:`tsn.predict`: predictions up to 16.8 megapixels (a 4096 x 4096 depth map is a 64 MB
``.mat`` file) and 16384 pixels a side; larger images are predicted at the largest size within it."""


# ------------------------------------------------------------------------------------------------ fits


@dataclass(frozen=True)
class Resize:
    """Bring every image to ``size = (H, W)`` (bicubic on uint8, as the paper's evaluation), predictions resized
    back."""

    size: tuple[int, int]
    name = "resize"

    def check(self, model: DensePredictionModel, what: str) -> Resize:
        return Resize(check_input_size(model, self.size, what))

    def decode_target(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.size


@dataclass(frozen=True)
class PadToMultiple:
    """Run each image at its own size, zero-padded at the bottom and right up to a multiple of ``multiple`` and to
    ``minimum`` per side, and crop the output back. Images with a side over ``max_side`` are first reduced to
    fit (aspect kept): the network's work is bounded like a resize's."""

    multiple: int = 1
    minimum: int = 1
    max_side: int = MAX_INPUT_SIDE
    name = "pad"

    def check(self, model: DensePredictionModel, what: str) -> PadToMultiple:
        if isinstance(self.multiple, bool) or not isinstance(self.multiple, int) or not 1 <= self.multiple <= 1024:
            raise TsnError(f"{what}: the pad multiple must be a whole number from 1 to 1024, got {self.multiple!r}")
        input_size(self.max_side, f"{what} (largest side)")
        return PadToMultiple(self.multiple, max(self.minimum, min_input_side(model)), self.max_side)

    def decode_target(self, size: tuple[int, int]) -> tuple[int, int]:
        return PixelBudget(self.max_side * self.max_side, self.max_side).fit(size)


@dataclass(frozen=True)
class PadToSize:
    """Run each image at its own size inside a fixed network input ``size = (H, W)``, zero-padded around it (after
    ImageNet normalisation: the mean colour), and crop the output back: the InvPT / TaskPrompter test-time
    ``PadImage`` (PASCAL-Context 512 x 512, NYUD 448 x 576).

    ``centred`` (their choice) puts ``(H - h) // 2`` rows above the image and ``(W - w) // 2`` columns left of it,
    so an odd difference leaves the extra row at the bottom and the extra column at the right; otherwise the image
    sits at the top left. An image larger than ``size`` on either side is refused in one line (:meth:`placement`):
    their ``PadImage`` leaves such a side unpadded and their ViT, built for exactly ``size``, then fails on its
    position embedding, so no number of theirs exists for it.
    """

    size: tuple[int, int]
    centred: bool = True
    name = "pad-to-size"

    def check(self, model: DensePredictionModel, what: str) -> PadToSize:
        return PadToSize(check_input_size(model, self.size, what), bool(self.centred))

    def decode_target(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.size

    def placement(self, size: tuple[int, int], name: str | None = None) -> tuple[int, int]:
        """The ``(top, left)`` offset of an image of ``size = (h, w)`` in the padded input; a one-line
        :class:`TsnError` naming ``name`` when it does not fit."""
        height, width = size
        if height > self.size[0] or width > self.size[1]:
            shown = f"{name} is" if name else "the image is"
            raise TsnError(
                f"{shown} {height}x{width}, larger than the fixed network input {self.size[0]}x{self.size[1]} "
                "that it is padded to (the InvPT family's PadImage; their network runs only at that size); choose "
                "a larger --size or a protocol that resizes (e.g. astmt)"
            )
        if not self.centred:
            return (0, 0)
        return ((self.size[0] - height) // 2, (self.size[1] - width) // 2)


InputFit = Resize | PadToMultiple | PadToSize
"""How an image is brought to the network: a protocol or a caller chooses (:func:`make_fit`)."""
FITS = ("resize", "pad", "pad-to-size")


def make_fit(name: str, *, size: SizeArg = 512, multiple: int = 32) -> InputFit:
    """The fit called ``name`` (:data:`FITS`): ``resize`` to ``size``, ``pad`` to a ``multiple``, or
    ``pad-to-size``: centred in ``size``."""
    if name == "resize":
        return Resize(input_size(size))
    if name == "pad":
        return PadToMultiple(multiple)
    if name == "pad-to-size":
        return PadToSize(input_size(size))
    raise TsnError(f"unknown input fit {name!r}; choose one of: {', '.join(FITS)}")


def _shrink(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``pixels`` at ``size`` when that is smaller (area averaging: every source pixel counts once)."""
    if pixels.shape[:2] == tuple(size):
        return pixels
    return cv2.resize(pixels, (size[1], size[0]), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class PreparedImage:
    """One image brought to the network."""

    pixels: np.ndarray
    """uint8 RGB as read (decoded reduced for a huge file; reduced to fit a pad fit's largest side)."""
    tensor: torch.Tensor
    """The network input ``3 x h x w``, normalised (and padded for a pad fit)."""
    size: tuple[int, int]
    """``(H, W)`` the predictions are restored to: the full image size, or its reduction within the budget."""
    original_size: tuple[int, int]
    """``(H, W)`` of the full image."""
    crop: tuple[int, int] | None = None
    """Pad fits: the ``(h, w)`` of the network output, from :attr:`offset`, that holds the image; None for a resize
    fit."""
    offset: tuple[int, int] = (0, 0)
    """Pad fits: the ``(top, left)`` of the image in the network input (non-zero for a centred fit)."""


# ------------------------------------------------------------------------------------------------ restoring


def _restore_one(
    spec: TaskSpec, raw: torch.Tensor, size: tuple[int, int], crop: tuple[int, int] | None,
    offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """One image's raw output ``1 x C x h x w`` -> the postprocessed prediction at ``size`` (numpy, CPU); a padded
    output is cropped to the ``crop`` pixels at ``offset`` first."""
    if crop is None:
        return spec.resize_prediction(spec.postprocess(raw), size)[0].cpu().numpy()
    top, left = offset
    prediction = spec.postprocess(raw[..., top : top + crop[0], left : left + crop[1]])
    if tuple(crop) != tuple(size):
        prediction = spec.resize_prediction(prediction, size)
    return prediction[0].cpu().numpy()


def restore_predictions(
    raw: Mapping[str, torch.Tensor], specs: Mapping[str, TaskSpec], sizes: Sequence[tuple[int, int]]
) -> list[dict[str, np.ndarray]]:
    """Raw outputs of a batch resized from the network input (``N x C x h x w`` per task) -> per image, per task,
    the postprocessed prediction at that image's ``size = (H, W)`` (``H x W`` class indices, ``C x H x W``
    otherwise), on the CPU.

    Postprocessing happens before the resize, as in the reference (probabilities and unit vectors are
    interpolated, not logits).
    """
    restored: list[dict[str, np.ndarray]] = [{} for _ in sizes]
    for name, output in raw.items():
        spec = specs[name]
        prediction = spec.postprocess(output)
        for index, (height, width) in enumerate(sizes):
            resized = spec.resize_prediction(prediction[index : index + 1], (height, width))
            restored[index][name] = resized[0].cpu().numpy()
    return restored


# ------------------------------------------------------------------------------------------------ the pipeline


class Preparer:
    """Steps 1 to 3 without the model (so that data-loader workers can run them): read an image, bound its
    prediction size by ``budget`` (None: the full size) and bring it to the network by ``fit`` (already checked
    against the model, see :class:`Pipeline`)."""

    def __init__(self, fit: InputFit, budget: PixelBudget | None = PREDICTION_BUDGET) -> None:
        from tsn.data.transforms import build_transforms

        self.fit, self.budget = fit, budget
        self._transform = build_transforms("eval", fit.size, tasks=(), seed=0) if isinstance(fit, Resize) else None

    def prepare(
        self, image: ImageInput, *, name: str | None = None, max_pixels: int | Literal["default"] | None = "default"
    ) -> PreparedImage:
        """Read ``image`` and bring it to the network (steps 1 to 3 of the module docstring)."""
        if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8 and image.shape[-1] == 3:
            pixels, original = np.ascontiguousarray(image), (int(image.shape[0]), int(image.shape[1]))
        else:
            # A much larger file is decoded reduced, keeping twice this per side (tsn.data.images.REDUCE_MARGIN).
            fit = self.fit
            target = (fit.max_side // 2,) * 2 if isinstance(fit, PadToMultiple) else fit.size
            pixels, original = read_image(image, target_size=target, max_pixels=max_pixels, name=name)
        return self.prepare_pixels(pixels, original, name=name)

    def prepare_pixels(
        self, pixels: np.ndarray, original: tuple[int, int] | None = None, *, name: str | None = None
    ) -> PreparedImage:
        """Bring uint8 RGB ``pixels`` (maybe decoded reduced from an image of ``original`` size) to the network;
        ``name`` names the image in a one-line refusal (an image larger than a :class:`PadToSize`)."""
        original = original or (int(pixels.shape[0]), int(pixels.shape[1]))
        size = self.budget.fit(original) if self.budget is not None else original
        if self._transform is not None:
            return PreparedImage(pixels, self._transform({"image": pixels})["image"], size, original)
        from tsn.data.transforms import build_transforms

        fit = self.fit
        if isinstance(fit, PadToSize):
            return self._pad_to_size(fit, pixels, original, size, name)
        assert isinstance(fit, PadToMultiple)
        pixels = _shrink(pixels, fit.decode_target((int(pixels.shape[0]), int(pixels.shape[1]))))
        height, width = int(pixels.shape[0]), int(pixels.shape[1])
        tensor = build_transforms("eval", (height, width), tasks=(), seed=0)({"image": pixels})["image"]
        padded = [-(-max(side, fit.minimum) // fit.multiple) * fit.multiple for side in (height, width)]
        if padded != [height, width]:
            tensor = F.pad(tensor, (0, padded[1] - width, 0, padded[0] - height))
        if size == original and (height, width) != original:
            size = (height, width)  # reduced to fit the network: predictions at the reduced size
        return PreparedImage(pixels, tensor, size, original, crop=(height, width))

    @staticmethod
    def _pad_to_size(
        fit: PadToSize, pixels: np.ndarray, original: tuple[int, int], size: tuple[int, int], name: str | None
    ) -> PreparedImage:
        from tsn.data.transforms import build_transforms

        top, left = fit.placement(original, name)  # the full size: a file decoded reduced was larger than this
        height, width = int(pixels.shape[0]), int(pixels.shape[1])
        tensor = build_transforms("eval", (height, width), tasks=(), seed=0)({"image": pixels})["image"]
        # Zero after normalisation, as PadImage fills the normalised image with 0.
        tensor = F.pad(tensor, (left, fit.size[1] - width - left, top, fit.size[0] - height - top))
        return PreparedImage(pixels, tensor, size, original, crop=(height, width), offset=(top, left))


class Pipeline:
    """A model, the tasks to run, how images reach it (``fit``, default a resize to 512 x 512) and the prediction
    budget (None: predictions at every image's full size, e.g. for scoring against full-size labels).

    The fit's size is checked against the model's minimum (:func:`tsn.inference.input_size.check_input_size`)
    here, in one line, before any image is read. ``what`` names the size in that message (``--size``).
    """

    def __init__(
        self,
        model: DensePredictionModel,
        *,
        tasks: TaskArg = None,
        fit: InputFit | None = None,
        budget: PixelBudget | None = PREDICTION_BUDGET,
        what: str = "--size",
    ) -> None:
        self.model = model
        self.tasks: list[str] = list(model.task_names(tasks))
        self.specs: dict[str, TaskSpec] = {name: model.task_specs[name] for name in self.tasks}
        self.preparer = Preparer((fit or Resize((512, 512))).check(model, what), budget)

    @property
    def fit(self) -> InputFit:
        return self.preparer.fit

    def prepare(
        self, image: ImageInput, *, name: str | None = None, max_pixels: int | Literal["default"] | None = "default"
    ) -> PreparedImage:
        """:meth:`Preparer.prepare`."""
        return self.preparer.prepare(image, name=name, max_pixels=max_pixels)

    # ---------------------------------------------------------------------------------------- input -> outputs
    def forward(self, batch: Sequence[PreparedImage], tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs of the requested tasks for prepared images of one network size (inference mode)."""
        parameter = next(self.model.parameters())
        inputs = torch.stack([item.tensor for item in batch]).to(parameter.device)
        with torch.inference_mode():
            return dict(self.model(inputs, list(tasks or self.tasks)))

    def restore(self, spec: TaskSpec, raw: torch.Tensor, item: PreparedImage) -> np.ndarray:
        """One image's raw output for ``spec`` (``1 x C x h x w``, e.g. a batch slice or a task-space mixture
        read as ``spec``) -> its postprocessed prediction at ``item.size``."""
        return _restore_one(spec, raw, item.size, item.crop, item.offset)

    def predictions(
        self, raw: Mapping[str, torch.Tensor], index: int, item: PreparedImage
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Sample ``index`` of a batch's raw outputs, restored one task at a time (so that a caller saving each
        map before asking for the next never holds every task at full size)."""
        for task, output in raw.items():
            yield task, self.restore(self.specs[task], output[index : index + 1], item)

    def predict(self, image: ImageInput, *, name: str | None = None) -> dict[str, np.ndarray]:
        """Every task's prediction of one image at its prediction size (:class:`PreparedImage`)."""
        item = self.prepare(image, name=name)
        was_training = self.model.training
        self.model.eval()
        try:
            raw = self.forward([item])
            return dict(self.predictions(raw, 0, item))
        finally:
            self.model.train(was_training)


# ------------------------------------------------------------------------------------------------ saving


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def saved_files(spec: TaskSpec, prediction: np.ndarray, save_format: SaveFormat = "authors") -> dict[str, bytes]:
    """One image's postprocessed ``prediction`` for ``spec`` in its saved form: ``{suffix: file bytes}``.

    ``spec.saved_suffix`` holds ``spec.to_saved(prediction)``: a PNG (grey, or RGB for unit vectors) or a ``.mat``
    file with the array under the task's name (``depth``, the authors' key). The ``visual`` format stores class
    maps as palette PNGs (the same indices) and adds a grey ``.png`` picture of ``.mat`` predictions.
    """
    if save_format not in SAVE_FORMATS:
        raise TsnError(f"unknown save format {save_format!r}; choose one of: {', '.join(SAVE_FORMATS)}")
    saved = spec.to_saved(prediction)
    if spec.saved_suffix == ".mat":
        import scipy.io

        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {spec.name: saved})
        files = {".mat": buffer.getvalue()}
        if save_format == "visual":
            files[".png"] = _png(Image.fromarray(spec.render(prediction)[..., 0]))
        return files
    image = Image.fromarray(saved)
    if save_format == "visual" and spec.kind.indexed_png:
        image.putpalette(_PALETTE)  # mode L -> P: the pixels stay the class indices, viewers show VOC colours
    return {spec.saved_suffix: _png(image)}


def save_prediction(
    spec: TaskSpec, prediction: np.ndarray, folder: str | os.PathLike[str], name: str,
    save_format: SaveFormat = "authors",
) -> None:
    """Write :func:`saved_files` as ``folder/<name><suffix>``, each atomically."""
    for suffix, payload in saved_files(spec, prediction, save_format).items():
        with atomic_write(Path(folder) / f"{name}{suffix}") as handle:
            handle.write(payload)
