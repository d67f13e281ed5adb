"""What the page shows, without the web: one model loaded once, predictions on an image, the task-space slider.

:class:`Showcase` is the whole server-side logic of ``tsn serve`` (the web layer in :mod:`tsn.serving.app` only
moves bytes). It works in memory: an upload's bytes are decoded by the inference pipeline
(:func:`tsn.inference.pipeline.read_image`: one-line errors for every bad file), every task is predicted by the
same pipeline as :func:`tsn.predict` and ``tsn predict`` (:class:`tsn.inference.pipeline.Pipeline`), each
prediction is drawn with its ``TaskSpec.render`` and saved as the authors' file bytes
(:func:`tsn.inference.pipeline.saved_files`); no temporary file or folder is opened. Synthetic scenes come from
:func:`tsn.data.synthetic.render_scene`; the task space is walked with
:meth:`tsn.models.tsn.TaskSwitchingNet.decode_mixtures`, each position restored by the pipeline.

The work of one request is bounded: uploads up to :data:`MAX_UPLOAD_BYTES` and :data:`MAX_UPLOAD_PIXELS` (stored,
checked before decoding), predictions within :data:`PAGE_BUDGET` (a larger or extremely elongated image is
predicted and shown at the largest size within it, same aspect), the slider's pictures within
:data:`MIX_OUTPUT_PIXELS`, and an answer of at most :data:`MAX_ANSWER_BYTES` (one-line refusal otherwise).

Concurrency: a :class:`Showcase` holds no per-request state. Every method takes its input and returns a fresh
result; the one shared object, the model, is only run under a lock, so concurrent requests never mix results.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tsn.data.transforms import build_transforms
from tsn.errors import TsnError
from tsn.inference.pipeline import Pipeline, PixelBudget, PreparedImage, Resize, read_image, saved_files
from tsn.models.base import DensePredictionModel
from tsn.models.checkpoint import load_model
from tsn.models.layers import pool_channels
from tsn.models.tsn import TaskSwitchingNet
from tsn.tasks import TaskSpec

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "PAGE_BUDGET",
    "MIX_OUTPUT_PIXELS",
    "MAX_ANSWER_BYTES",
    "MIX_STEPS",
    "SCENE_SEED",
    "SCENE_SPLIT",
    "SCENE_COUNT",
    "Picture",
    "TaskOutput",
    "Prediction",
    "MixFrame",
    "Mixing",
    "Showcase",
    "UploadTooLarge",
    "png_bytes",
    "data_url",
]

MAX_UPLOAD_BYTES = 32 * 1024 * 1024
"""Largest upload the page accepts (32 MiB): a large camera JPEG fits; anything larger is refused before it is
read whole."""
MAX_UPLOAD_PIXELS = 50_000_000
"""Largest image (stored pixels) the page decodes: a 50-megapixel camera picture; larger ones are refused before
any pixel is decoded (far below Pillow's decompression-bomb limit, which is meant for batch jobs, not a page)."""
PAGE_BUDGET = PixelBudget(pixels=2**21, side=4096)
"""Predictions on the page: at most 2.1 megapixels (1920 x 1080 fits) and 4096 pixels a side. A larger upload (after
the decoder's own reduction) is shown and predicted at the largest size within it, with the same aspect."""
MIX_OUTPUT_PIXELS = 2**23
"""Pixels of all the slider's pictures of one request together (two readings per position): 11 positions at up to
617 x 617, 101 at up to 204 x 204; the image is shown and mixed at the largest size within it."""
MAX_ANSWER_BYTES = 64 * 2**20
"""Largest answer (its pictures and files, before base64) a request may produce; the budgets above keep ordinary
answers far below it, so reaching it means an image that compresses as badly as noise: refused in one line."""
MIX_STEPS = 11
"""Positions of the task-space slider: ``a = 0, 0.1, ..., 1``, computed in one request so that the slider moves
without a round trip."""
MIX_PIXELS_PER_CALL = 4 * 512 * 512
"""Most output pixels (mixtures x height x width) one decoder call of the slider handles: the 11 positions at the
paper's 512 x 512 go in three calls (a few GB of float32 activations at most), at 64 x 64 in one."""
SCENE_SEED = 0
SCENE_SPLIT = "val"
"""The synthetic scenes the page offers: the demo's validation scenes (never trained on)."""
SCENE_COUNT = 300
"""Scene indices offered by the page (the validation split's default length)."""
SCENE_SIDES = (64, 256)
"""A scene is rendered at the network input side clipped to this range (ray casting a 512 x 512 scene takes
seconds; the network upsamples a smaller scene, as it does every small upload)."""


class UploadTooLarge(TsnError):
    """An upload over the page's size limit (the web layer answers it with status 413)."""


@dataclass(frozen=True)
class Picture:
    """A picture ready for the page: PNG bytes and its size."""

    png: bytes
    width: int
    height: int

    @property
    def url(self) -> str:
        return data_url(self.png, "image/png")


@dataclass(frozen=True)
class TaskOutput:
    """One task's prediction of one image: drawn (``picture``) and as the authors save it (``saved``, named
    ``filename``: a PNG, or a ``.mat`` file for scalar maps such as depth)."""

    task: str
    title: str
    picture: Picture
    saved: bytes
    filename: str

    @property
    def saved_media_type(self) -> str:
        return "image/png" if self.filename.endswith(".png") else "application/octet-stream"


@dataclass(frozen=True)
class Prediction:
    """Every task's output for one image, the image itself, and (synthetic scenes) the ground truth."""

    name: str
    image: Picture
    outputs: list[TaskOutput]
    truth: dict[str, Picture] = field(default_factory=dict)
    original_size: tuple[int, int] = (0, 0)
    """``(H, W)`` of the uploaded image (predictions are at ``image``'s size, see :meth:`Showcase.decode`)."""


@dataclass(frozen=True)
class MixFrame:
    """One slider position: the shared output layer's maps for ``(1 - alpha) * start + alpha * end``, read as the
    start task and as the end task."""

    alpha: float
    as_start: Picture
    as_end: Picture


@dataclass(frozen=True)
class Mixing:
    start: str
    end: str
    frames: list[MixFrame]


def png_bytes(picture: np.ndarray) -> bytes:
    """An ``H x W x 3`` (or ``H x W``) uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(payload: bytes, media_type: str) -> str:
    """``payload`` as a ``data:`` URL (pictures and downloads travel inside the JSON answer: no server state)."""
    return f"data:{media_type};base64,{base64.b64encode(payload).decode('ascii')}"


def _picture(array: np.ndarray) -> Picture:
    return Picture(png_bytes(array), int(array.shape[1]), int(array.shape[0]))


def _mib(count: int) -> str:
    return f"{count / 2**20:.0f} MiB" if count >= 2**20 else f"{count:,} bytes"


def _safe_stem(filename: str) -> str:
    """A download name from an upload's name: its stem, letters, digits, ``-`` and ``_`` only."""
    stem = Path(filename.replace("\\", "/")).stem
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:64].strip("_")
    return cleaned or "image"


class Showcase:
    """A model loaded once, and everything the page asks of it.

    ``model``: a checkpoint (file or ``tsn train`` run folder) or a model. ``size``: the network input ``(H, W)``
    (the size the model was trained at suits it best; default 512, ``tsn predict``'s). ``device``: where the model
    runs (a given model stays where it is unless set).
    """

    def __init__(
        self,
        model: DensePredictionModel | str | os.PathLike[str],
        *,
        size: tuple[int, int] = (512, 512),
        device: str | torch.device | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_pixels: int = MAX_UPLOAD_PIXELS,
        name: str | None = None,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            self.name = name or str(model)
            model = load_model(model, map_location=device or "cpu")
        elif isinstance(model, DensePredictionModel):
            self.name = name or f"{model.config.arch} model"
            model = model if device is None else model.to(device)
        else:
            raise TsnError(f"expected a tsn model or a checkpoint path, got a {type(model).__name__}")
        self.pipeline = Pipeline(model.eval(), fit=Resize((int(size[0]), int(size[1]))), budget=PAGE_BUDGET)
        fit = self.pipeline.fit
        assert isinstance(fit, Resize)
        self.size = fit.size
        self.model = model
        self.specs: dict[str, TaskSpec] = dict(model.task_specs)
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_pixels = int(max_pixels)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ facts
    @property
    def has_task_space(self) -> bool:
        """Only a TSN decodes any point between its tasks; multi-head and single-task models have none."""
        return isinstance(self.model, TaskSwitchingNet)

    def info(self) -> dict[str, Any]:
        """What the page needs to lay itself out (JSON-ready)."""
        arch = self.model.config.arch
        note = "" if self.has_task_space else (
            f"This checkpoint is a {arch.replace('_', '-')} model: only a Task Switching Network (one decoder steered "
            "by a task code) has a task space to slide through."
        )
        return {
            "checkpoint": self.name,
            "arch": arch,
            "backbone": self.model.config.backbone,
            "size": list(self.size),
            "tasks": [{"name": s.name, "title": s.title, "kind": s.output, "saved_suffix": s.saved_suffix}
                      for s in self.specs.values()],
            "task_space": self.has_task_space,
            "task_space_note": note,
            "mix_steps": MIX_STEPS,
            "scenes": SCENE_COUNT,
            "max_upload_bytes": self.max_upload_bytes,
        }

    # ------------------------------------------------------------------------------------------------ input
    def decode(self, payload: bytes, filename: str = "upload") -> tuple[np.ndarray, tuple[int, int]]:
        """An uploaded file's bytes -> (uint8 RGB pixels, the image's full ``(H, W)``), or a one-line
        :class:`TsnError` naming the upload. In memory: the bytes are never written to disk.

        The image is read as ``tsn predict`` reads files (an image at least twice the network input per side is
        decoded reduced), then reduced further to fit :data:`PAGE_BUDGET`: the pixels the page predicts and shows.
        """
        shown = filename or "upload"
        if not payload:
            raise TsnError(f"{shown}: the file is empty; choose an image file (PNG, JPEG, ...)")
        if len(payload) > self.max_upload_bytes:
            raise UploadTooLarge(self.too_large(shown))
        # Formats are told by their content; the client's name is only used in messages.
        pixels, original = read_image(payload, target_size=self.size, max_pixels=self.max_pixels, name=shown)
        return PAGE_BUDGET.shrink(pixels), original

    def too_large(self, filename: str) -> str:
        """The one-line refusal of an upload over :attr:`max_upload_bytes`."""
        return (f"{filename}: the file is too large; the page accepts files up to {_mib(self.max_upload_bytes)}: "
                "shrink or re-encode it")

    def scene(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Synthetic scene ``index`` (of the demo's validation split): its image and its sample (labels)."""
        from tsn.data.synthetic import render_scene

        if not 0 <= index < SCENE_COUNT:
            raise TsnError(f"scene {index} does not exist; pick a scene from 0 to {SCENE_COUNT - 1}")
        side = min(max(min(self.size), SCENE_SIDES[0]), SCENE_SIDES[1])
        sample = render_scene(SCENE_SEED, SCENE_SPLIT, index, side)
        return np.asarray(sample["image"]), sample

    # ------------------------------------------------------------------------------------------------ predict
    def predict(self, pixels: np.ndarray, name: str = "image", original_size: tuple[int, int] | None = None,
                labels: Mapping[str, Any] | None = None) -> Prediction:
        """Every task on ``pixels`` (``H x W x 3`` uint8), at their size, drawn and in the authors' files.

        ``labels``: a synthetic scene's sample; its labels of the model's tasks are drawn as ground truth.
        """
        pixels = PAGE_BUDGET.shrink(np.asarray(pixels))
        with self._lock:
            maps = self.pipeline.predict(pixels)
        stem = _safe_stem(name)
        outputs = [self._output(self.specs[task], prediction, stem) for task, prediction in maps.items()]
        del maps
        truth = self._truth(labels, pixels.shape[:2]) if labels is not None else {}
        height, width = pixels.shape[:2]
        prediction = Prediction(stem, _picture(pixels), outputs, truth, original_size or (int(height), int(width)))
        _check_answer(stem, [prediction.image, *(o.picture for o in outputs), *truth.values()],
                      sum(len(o.saved) for o in outputs))
        return prediction

    def _output(self, spec: TaskSpec, prediction: np.ndarray, stem: str) -> TaskOutput:
        # The authors' convention, in memory: the bytes `tsn predict --save-format authors` writes.
        saved = saved_files(spec, prediction, "authors")[spec.saved_suffix]
        filename = f"{stem}_{spec.name}{spec.saved_suffix}"
        return TaskOutput(spec.name, spec.title, _picture(spec.render(prediction)), saved, filename)

    def _truth(self, sample: Mapping[str, Any], size: Sequence[int]) -> dict[str, Picture]:
        """The scene's labels of the model's tasks, transformed as for evaluation and drawn as labels."""
        specs = [spec for name, spec in self.specs.items() if name in sample]
        if not specs:
            return {}
        transform = build_transforms("eval", (int(size[0]), int(size[1])), tasks=specs, seed=0)
        labels = transform({key: sample[key] for key in ("image", *(s.name for s in specs))})
        return {s.name: _picture(s.render(labels[s.name].numpy(), is_label=True)) for s in specs}

    # ------------------------------------------------------------------------------------------------ slider
    def mix(self, pixels: np.ndarray, start: str, end: str, steps: int = MIX_STEPS) -> Mixing:
        """The task-space path from ``start`` to ``end``: for ``a`` in ``steps`` even positions of 0..1, the
        shared output layer's maps for the task code ``(1 - a) * code(start) + a * code(end)``.

        A mixed output belongs to no task, so each position is read both ways: as the start task (its channels
        pooled, its postprocessing) and as the end task. At ``a = 0`` the start reading is the start task's own
        prediction, at ``a = 1`` the end reading the end task's.
        """
        if not self.has_task_space:
            raise TsnError(self.info()["task_space_note"])
        first, last = self.model.task_names([start, end])
        if not 2 <= steps <= 101:
            raise TsnError(f"the slider has 2 to 101 positions, got {steps}")
        alphas = [index / (steps - 1) for index in range(steps)]
        mixtures = [{first: 1.0 - alpha, last: alpha} if first != last else {first: 1.0} for alpha in alphas]
        per_picture = MIX_OUTPUT_PIXELS // (2 * steps)
        pixels = PixelBudget(per_picture, PAGE_BUDGET.side).shrink(PAGE_BUDGET.shrink(np.asarray(pixels)))
        item = self.pipeline.preparer.prepare_pixels(pixels)
        raw = self._decode_mixtures(item.tensor, mixtures)
        frames = []
        for alpha, maps in zip(alphas, raw, strict=True):
            readings = [self._read_as(self.specs[task], maps, item) for task in (first, last)]
            frames.append(MixFrame(alpha, *readings))
        _check_answer("the slider", [p for frame in frames for p in (frame.as_start, frame.as_end)], 0)
        return Mixing(first, last, frames)

    def _decode_mixtures(self, tensor: torch.Tensor, mixtures: list[dict[str, float]]) -> torch.Tensor:
        """Raw maps ``K x 1 x C x h x w`` (CPU), decoded :data:`MIX_PIXELS_PER_CALL` output pixels at a time."""
        model = self.model
        assert isinstance(model, TaskSwitchingNet)
        per_call = max(1, MIX_PIXELS_PER_CALL // (self.size[0] * self.size[1]))
        chunks = []
        with self._lock, torch.inference_mode():
            batch = tensor[None].to(model.head.weight.device)
            for first in range(0, len(mixtures), per_call):
                chunks.append(model.decode_mixtures(batch, mixtures[first : first + per_call]).float().cpu())
        return torch.cat(chunks)

    def _read_as(self, spec: TaskSpec, maps: torch.Tensor, item: PreparedImage) -> Picture:
        """Raw shared-layer maps (``1 x C x h x w``) read as ``spec``: its channels, restored by the pipeline like
        any prediction, drawn by its ``render``."""
        return _picture(spec.render(self.pipeline.restore(spec, pool_channels(maps, spec.channels), item)))


def _check_answer(what: str, pictures: Sequence[Picture], extra_bytes: int) -> None:
    """A one-line refusal when an answer's pictures and files exceed :data:`MAX_ANSWER_BYTES`."""
    total = extra_bytes + sum(len(picture.png) for picture in pictures)
    if total > MAX_ANSWER_BYTES:
        raise TsnError(f"{what}: the answer would be {_mib(total)}, over the page's {_mib(MAX_ANSWER_BYTES)}; "
                       "upload a smaller image (or choose fewer slider positions)")
