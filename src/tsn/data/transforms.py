"""Sample transforms: the ASTMT pipeline, the TSNs training augmentation, and the evaluation resize.

Every transform maps a sample of the shared contract (``image`` uint8 ``H x W x 3``, one label per task, ``meta``)
to a new sample, never modifying the arrays it was given (datasets may cache them). Per-task behaviour is read
from the task registry: ``label_interpolation`` (how a label is resampled), ``flip_negate_channels`` (which
channels change sign under a horizontal flip) and the output kind (:mod:`tsn.kinds`: ``unit_length``,
``zero_is_invalid``).

Random transforms take the :class:`numpy.random.Generator` to draw from; :class:`Compose` owns one per process,
so DataLoader workers draw distinct, reproducible streams instead of sharing the global numpy RNG.

Pipelines (``build_transforms``), as in ASTMT / TSNs (``datasets.md`` section 4):

* ``eval``: FixedResize -> AddIgnoreRegions -> ToTensor.
* ``astmt_train``: RandomHorizontalFlip -> ScaleNRotate (+-20 deg, x0.75-1.25) -> FixedResize -> AddIgnoreRegions
  -> ToTensor.
* ``tsns_train``: RandomHorizontalFlip -> ScaleNRotate (no rotation, x0.5-1.5, shift +-10 %) -> FixedResize ->
  TsnsPhotometric -> AddIgnoreRegions (without the empty-parts rule: TSNs trains an all-0 parts map as
  background) -> ToTensor.

TSNs applies albumentations' HorizontalFlip and ShiftScaleRotate to the image and one nearest-resampled mask.
Here the same draws (flip p=0.5; scale U[0.5, 1.5], shift U[-0.1, 0.1] per axis, no rotation, constant-0
border) go through :class:`RandomHorizontalFlip` and :class:`ScaleNRotate`, so that a multi-task sample keeps
one geometry for all its labels, each resampled with its registry interpolation and normals' x negated on a
flip (the reference trains normals through the ASTMT pipeline for that reason). The geometric warp runs before
the resize to 512 instead of after it; with no rotation the two orders give the same mapping. Albumentations
does the colour part (:class:`TsnsPhotometric`).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info

from tsn.data.readers import Sample
from tsn.errors import TsnError
from tsn.tasks import TASKS, TaskSpec, get_task

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SampleTransform",
    "RandomHorizontalFlip",
    "ScaleNRotate",
    "FixedResize",
    "AddIgnoreRegions",
    "TsnsPhotometric",
    "ToTensor",
    "Compose",
    "build_transforms",
    "denormalize_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_CV2_FLAGS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
_IMAGE_FLAG = cv2.INTER_CUBIC  # the reference resamples images bicubically everywhere
_EPS = float(np.finfo(np.float32).eps)


class SampleTransform(Protocol):
    """A transform of one sample, drawing any randomness from ``rng``."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


def _specs(tasks: Iterable[TaskSpec | str] | None) -> dict[str, TaskSpec]:
    """Task specs by canonical name; ``None`` = every registered task (a transform only touches present keys)."""
    if tasks is None:
        return dict(TASKS)
    specs = [t if isinstance(t, TaskSpec) else get_task(t) for t in tasks]
    return {spec.name: spec for spec in specs}


class _TaskTransform:
    """Base of the transforms that treat each configured task label according to its spec."""

    def __init__(self, tasks: Iterable[TaskSpec | str] | None = None) -> None:
        self.tasks = _specs(tasks)

    def _present(self, sample: Sample) -> list[TaskSpec]:
        return [spec for name, spec in self.tasks.items() if name in sample]


class RandomHorizontalFlip(_TaskTransform):
    """With probability ``p``, mirror the image and every label; negate each task's ``flip_negate_channels``."""

    def __init__(self, tasks: Iterable[TaskSpec | str] | None = None, p: float = 0.5) -> None:
        super().__init__(tasks)
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        out = {**sample, "image": cv2.flip(sample["image"], 1)}
        for spec in self._present(sample):
            label = cv2.flip(sample[spec.name], 1)
            if spec.flip_negate_channels:
                label[..., list(spec.flip_negate_channels)] *= -1
            out[spec.name] = label
        return out


def _rotate_in_plane(vectors: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate components (0, 1) of ``H x W x C`` vectors by the image rotation, as the reference does.

    The reference writes ``n0 = r sin(phi + t)``, ``n1 = r cos(phi + t)`` with ``phi = atan2(n0, n1)``; that is
    exactly this linear rotation, which also keeps zero (invalid) vectors at zero.
    """
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    out = vectors.copy()
    out[..., 0] = vectors[..., 0] * cos + vectors[..., 1] * sin
    out[..., 1] = vectors[..., 1] * cos - vectors[..., 0] * sin
    return out


class ScaleNRotate(_TaskTransform):
    """One random rotation, scale and shift per sample, about the centre, with a constant-0 border.

    The angle (degrees) and scale are uniform in ``rotation`` and ``scale``; the shift is uniform in
    ``[-shift, shift]`` times the width (height) per axis, as albumentations' ShiftScaleRotate. Each array is
    warped with its task's interpolation, so outside pixels become 0 (background, no edge, invalid normal or
    depth). Unit vectors have their in-plane components rotated first. Depth values are not rescaled (ASTMT).
    """

    def __init__(
        self,
        tasks: Iterable[TaskSpec | str] | None = None,
        rotation: tuple[float, float] = (-20.0, 20.0),
        scale: tuple[float, float] = (0.75, 1.25),
        shift: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        self.rotation, self.scale, self.shift = rotation, scale, shift

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        angle = float(rng.uniform(*self.rotation))
        scale = float(rng.uniform(*self.scale))
        dx, dy = (float(v) for v in rng.uniform(-self.shift, self.shift, size=2))

        def warp(array: np.ndarray, flag: int) -> np.ndarray:
            h, w = array.shape[:2]
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
            matrix[:, 2] += (dx * w, dy * h)
            return cv2.warpAffine(array, matrix, (w, h), flags=flag, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

        out = {**sample, "image": warp(sample["image"], _IMAGE_FLAG)}
        for spec in self._present(sample):
            label = sample[spec.name]
            if spec.kind.unit_length:
                label = _rotate_in_plane(label, angle)
            out[spec.name] = warp(label, _CV2_FLAGS[spec.label_interpolation])
        return out


class FixedResize(_TaskTransform):
    """Resize the image (bicubic) and every configured label (its interpolation) to ``size = (H, W)``.

    Unit vectors are divided by ``(norm + float32 eps)`` afterwards, so zero vectors stay zero. Keys other than
    the image, the configured tasks and ``meta`` are dropped, as in the reference.
    """

    def __init__(self, tasks: Iterable[TaskSpec | str] | None = None, size: tuple[int, int] = (512, 512)) -> None:
        super().__init__(tasks)
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        dsize = (self.size[1], self.size[0])
        out = {"image": cv2.resize(sample["image"], dsize, interpolation=_IMAGE_FLAG)}
        for spec in self._present(sample):
            label = cv2.resize(sample[spec.name], dsize, interpolation=_CV2_FLAGS[spec.label_interpolation])
            if spec.kind.unit_length:
                label = label / (np.linalg.norm(label, axis=-1, keepdims=True) + _EPS)
            out[spec.name] = label
        if "meta" in sample:
            out["meta"] = sample["meta"]
        return out


class AddIgnoreRegions(_TaskTransform):
    """Mark unlabelled pixels with the task's ``ignore_index`` (255 unless the task sets another): zero normals
    (all channels), zero depth, and - with ``empty_maps`` - whole all-0 maps of the tasks whose spec sets
    ``empty_label_ignored`` (images without annotated persons)."""

    def __init__(self, tasks: Iterable[TaskSpec | str] | None = None, empty_maps: bool = True) -> None:
        super().__init__(tasks)
        self.empty_maps = empty_maps

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out = dict(sample)
        for spec in self._present(sample):
            label = sample[spec.name]
            if spec.kind.zero_is_invalid:
                invalid = label == 0
                if label.ndim == 3:  # a vector is invalid when all its channels are 0; mark every channel
                    invalid = invalid.all(axis=-1, keepdims=True)
                label = np.where(invalid, spec.ignore_index, label)
            elif self.empty_maps and spec.empty_label_ignored and not label.any():
                label = np.full_like(label, spec.ignore_index)
            out[spec.name] = label.astype(np.float32, copy=False)
        return out


class TsnsPhotometric:
    """The TSNs training colour augmentation (albumentations), applied to the image only.

    Order and probabilities as the authors' pipeline: Gaussian noise p=0.2; one of CLAHE / brightness / gamma
    p=0.9; one of sharpen / blur 3 / motion blur 3 p=0.9; one of contrast / hue-saturation-value p=0.9.
    The authors' ``imgaug`` transforms are gone from albumentations; their equivalents:
    ``IAAAdditiveGaussianNoise`` (sigma uniform in 0.01-0.05 x 255, same for all channels) ->
    ``GaussNoise(std_range=(0.01, 0.05), per_channel=False)``; ``IAASharpen`` -> ``Sharpen`` (same alpha 0.2-0.5,
    lightness 0.5-1.0 kernel); the removed ``RandomBrightness`` / ``RandomContrast`` -> ``RandomBrightnessContrast``
    with the other limit at 0.
    """

    def __init__(self) -> None:
        import albumentations as A  # slow to import; only training needs it

        self.pipeline = A.Compose([
            A.GaussNoise(std_range=(0.01, 0.05), mean_range=(0.0, 0.0), per_channel=False, p=0.2),
            A.OneOf([A.CLAHE(), A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.0),
                     A.RandomGamma()], p=0.9),
            A.OneOf([A.Sharpen(), A.Blur(blur_limit=3), A.MotionBlur(blur_limit=3)], p=0.9),
            A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=0.2),
                     A.HueSaturationValue()], p=0.9),
        ])

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        # albumentations draws from the generators it is given: hand it ours so the result follows ``rng``.
        self.pipeline.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        return {**sample, "image": self.pipeline(image=sample["image"])["image"]}


class ToTensor:
    """Arrays -> float32 tensors: the image ``3 x H x W`` scaled to [0, 1] and ImageNet-normalised (TSNs),
    labels ``H x W`` -> ``1 x H x W`` and ``H x W x C`` -> ``C x H x W`` unscaled. ``meta`` is kept as is."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        out: Sample = {}
        for key, value in sample.items():
            if key == "meta":
                out[key] = value
                continue
            array = np.ascontiguousarray(value)
            tensor = torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())
            out[key] = (tensor.float() / 255.0 - self.mean) / self.std if key == "image" else tensor.float()
        return out


def denormalize_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Undo :class:`ToTensor` on an image: ``3 x H x W`` normalised -> ``H x W x 3`` uint8 RGB."""
    array = np.asarray(image, dtype=np.float32).transpose(1, 2, 0)
    return np.clip((array * IMAGENET_STD + np.asarray(IMAGENET_MEAN)) * 255.0 + 0.5, 0, 255).astype(np.uint8)


class Compose:
    """Apply transforms in order, drawing randomness from one generator per process.

    In the main process the generator is seeded with ``seed``; in a DataLoader worker with ``seed`` and the
    worker's torch seed, which differs per worker and per epoch and is reproducible under ``torch.manual_seed``.
    ``seed=None`` seeds the main process from the OS. An explicit ``rng`` overrides all of that.
    """

    def __init__(self, transforms: Sequence[SampleTransform], seed: int | None = None) -> None:
        self.transforms = list(transforms)
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._pid: int | None = None

    def rng(self) -> np.random.Generator:
        """This process's generator, created on first use in each process (so forked workers do not share one)."""
        if self._rng is None or self._pid != os.getpid():
            worker = get_worker_info()
            entropy = [] if self.seed is None else [self.seed]
            if worker is not None:
                entropy.append(worker.seed)
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy or None))
            self._pid = os.getpid()
        return self._rng

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else self.rng()
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose([{', '.join(type(t).__name__ for t in self.transforms)}], seed={self.seed})"


PipelineKind = Literal["astmt_train", "tsns_train", "eval"]


def build_transforms(
    kind: PipelineKind,
    size: tuple[int, int] = (512, 512),
    tasks: Sequence[TaskSpec | str] | None = None,
    seed: int | None = None,
) -> Compose:
    """The ``eval``, ``astmt_train`` or ``tsns_train`` pipeline to ``size = (H, W)`` for ``tasks``.

    ``tasks=None`` configures every registered task, so the pipeline serves any dataset (real or synthetic);
    a sample's keys that are not configured tasks are dropped.
    """
    specs = list(_specs(tasks).values())
    if len(size) != 2 or min(size) <= 0:
        raise TsnError(f"transform size must be two positive integers (H, W), got {size!r}")
    resize = FixedResize(specs, size)
    if kind == "eval":
        return Compose([resize, AddIgnoreRegions(specs), ToTensor()], seed=seed)
    if kind == "astmt_train":
        flip, affine = RandomHorizontalFlip(specs), ScaleNRotate(specs)
        return Compose([flip, affine, resize, AddIgnoreRegions(specs), ToTensor()], seed=seed)
    if kind == "tsns_train":
        flip = RandomHorizontalFlip(specs)
        affine = ScaleNRotate(specs, rotation=(0.0, 0.0), scale=(0.5, 1.5), shift=0.1)
        ignore = AddIgnoreRegions(specs, empty_maps=False)
        return Compose([flip, affine, resize, TsnsPhotometric(), ignore, ToTensor()], seed=seed)
    raise TsnError(f"unknown transform pipeline {kind!r}; choose one of: astmt_train, tsns_train, eval")
