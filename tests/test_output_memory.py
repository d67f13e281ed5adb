"""The lean per-task output code of :mod:`tsn.kinds` gives exactly the former results, with bounded temporaries.

``to_saved``, ``render`` and the nearest resize of class maps used to convert whole full-size maps to float
(float64 for ``render``), which cost several GB on a 10000 x 10000 image. They now work in row bands and gather
class indices without a float detour. The former formulas are kept below, verbatim, as the reference: every
output must be equal bit for bit, on random inputs and on the boundary values of each formula.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tsn.kinds
from tsn.dataset_catalog import dataset_tasks
from tsn.tasks import IGNORE_INDEX, TaskSpec, color_palette

SPECS = {spec.output: spec for spec in dataset_tasks("synthetic")}
"""One task of each output kind: classes, binary, unit_vector, scalar."""


# ------------------------------------------------------------------------------ the former formulas, verbatim


def old_resize_classes(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(pred[:, None].float(), size=size, mode="nearest")[:, 0].long()


def old_to_saved(spec: TaskSpec, pred: np.ndarray) -> np.ndarray:
    pred = np.asarray(pred)
    if spec.output == "classes":
        return pred.astype(np.uint8)
    if spec.output == "binary":
        return np.clip(255.0 * pred.reshape(pred.shape[-2:]), 0, 255).astype(np.uint8)
    if spec.output == "unit_vector":
        return np.clip((pred.transpose(1, 2, 0) + 1.0) * 255.0 / 2.0, 0, 255).astype(np.uint8)
    return pred.reshape(pred.shape[-2:]).astype(np.float32)


def old_render(spec: TaskSpec, value: np.ndarray, *, is_label: bool = False) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if spec.output == "classes":
        index = value.reshape(value.shape[-2:]).astype(np.int64)
        return color_palette()[np.clip(index, 0, 255)]
    if spec.output == "unit_vector":
        vec = value.reshape((-1,) + value.shape[-2:]).transpose(1, 2, 0)
        invalid = np.all(vec == spec.ignore_index, axis=-1) | np.all(vec == 0, axis=-1)
        img = np.clip((vec + 1.0) * 127.5, 0, 255).astype(np.uint8)
        img[invalid] = 0
        return img
    grey = value.reshape(value.shape[-2:])
    invalid = grey == spec.ignore_index if is_label else np.zeros(grey.shape, dtype=bool)
    if spec.output == "scalar":
        valid = ~invalid & (grey > 0)
        lo, hi = (float(grey[valid].min()), float(grey[valid].max())) if valid.any() else (0.0, 1.0)
        grey = (grey - lo) / max(hi - lo, 1e-8)
    grey = np.where(invalid, 0.0, np.clip(grey, 0.0, 1.0))
    return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)


# ------------------------------------------------------------------------------------------------ inputs


@pytest.fixture(autouse=True)
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of 7 values: small test maps are still cut into many bands, the last one shorter."""
    monkeypatch.setattr(tsn.kinds, "ROW_CHUNK_ELEMENTS", 7)


def with_boundaries(values: np.ndarray, boundaries: list[float], rng: np.random.Generator) -> np.ndarray:
    """``values`` with a third of its entries replaced by the given boundary values, at random places."""
    flat = values.reshape(-1).copy()
    places = rng.choice(flat.size, size=flat.size // 3, replace=False)
    flat[places] = rng.choice(np.asarray(boundaries, dtype=flat.dtype), size=places.size)
    return flat.reshape(values.shape)


def probability_boundaries(dtype: type) -> list[float]:
    """0, 1, just inside and outside them, exact multiples of 1/255 and their neighbours (where 255 p truncates
    to the next integer), out-of-range and infinite values."""
    eps = float(np.finfo(dtype).eps)
    steps = [k / 255.0 for k in (1, 2, 127, 128, 254)]
    near = [float(np.nextafter(dtype(s), dtype(direction))) for s in steps for direction in (0.0, 1.0)]
    return [0.0, -0.0, 1.0, eps, -eps, 1.0 - eps, 1.0 + eps, *steps, *near, -1.0, 2.0, np.inf, -np.inf]


def vector_boundaries(dtype: type) -> list[float]:
    """-1, 0, 1 and their neighbours, values where (n + 1) * 255 / 2 lands on or next to an integer, the
    ignore value, out-of-range and infinite values."""
    on_integers = [2.0 * k / 255.0 - 1.0 for k in (1, 100, 127, 128, 254)]
    near = [float(np.nextafter(dtype(v), dtype(d))) for v in (-1.0, 0.0, 1.0, *on_integers) for d in (-2.0, 2.0)]
    return [-1.0, 0.0, -0.0, 1.0, *on_integers, *near, float(IGNORE_INDEX), -3.0, 3.0, np.inf, -np.inf]


SHAPES = [(1, 1), (1, 9), (5, 3), (13, 17), (31, 8)]


def assert_identical(new: np.ndarray, old: np.ndarray) -> None:
    assert new.dtype == old.dtype and new.shape == old.shape
    assert np.array_equal(new.view(np.uint8), old.view(np.uint8)) if new.dtype == np.float32 else \
        np.array_equal(new, old)


# ------------------------------------------------------------------------------------------------ to_saved


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_saved_binary_and_unit_vectors_equal_the_former_formulas(dtype: type, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    probability = with_boundaries(rng.uniform(-0.1, 1.1, (1, *shape)).astype(dtype), probability_boundaries(dtype), rng)
    assert_identical(SPECS["binary"].to_saved(probability), old_to_saved(SPECS["binary"], probability))
    raw = torch.from_numpy(rng.normal(size=(1, 3, *shape)).astype(dtype))
    normals = F.normalize(raw, dim=1)[0].numpy()
    for vectors in (normals, with_boundaries(normals, vector_boundaries(dtype), rng)):
        assert_identical(SPECS["unit_vector"].to_saved(vectors), old_to_saved(SPECS["unit_vector"], vectors))
    depth = rng.normal(size=shape).astype(dtype)
    assert_identical(SPECS["scalar"].to_saved(depth), old_to_saved(SPECS["scalar"], depth))
    classes = rng.integers(-300, 600, shape)
    assert_identical(SPECS["classes"].to_saved(classes), old_to_saved(SPECS["classes"], classes))


def test_saved_values_of_integer_and_empty_inputs_equal_the_former_formulas() -> None:
    rng = np.random.default_rng(1)
    for spec, value in (
        (SPECS["binary"], rng.integers(-2, 3, (1, 6, 5))),
        (SPECS["binary"], np.zeros((0, 4), np.float32)),
        (SPECS["unit_vector"], rng.integers(-2, 3, (3, 6, 5))),
        (SPECS["unit_vector"], np.zeros((3, 0, 4), np.float32)),
    ):
        assert_identical(spec.to_saved(value), old_to_saved(spec, value))


# ------------------------------------------------------------------------------------------------ render


@pytest.mark.parametrize("is_label", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_pictures_equal_the_former_formulas(shape: tuple[int, int], is_label: bool) -> None:
    rng = np.random.default_rng(shape[0] * 7 + shape[1] + is_label)
    grey_boundaries = [0.0, -0.0, 1.0, 1e-9, -1e-9, 0.5, 2.0, -2.0, float(IGNORE_INDEX), 254.0, 256.0]
    cases = {
        "classes": [
            rng.integers(0, 21, shape),
            with_boundaries(rng.integers(-3, 300, shape), [0, 255, 256, -1, 2**31, 2**53 + 1], rng),
            with_boundaries(rng.integers(0, 256, shape).astype(np.uint8), [0, 255], rng),
            with_boundaries(rng.uniform(-2, 300, shape), [-0.5, 0.5, 254.9, 255.5, 1e6, -1e6], rng),
        ],
        "binary": [
            rng.uniform(0, 1, (1, *shape)).astype(np.float32),
            with_boundaries(rng.uniform(-0.5, 1.5, shape), grey_boundaries, rng),
            rng.integers(0, 2, shape).astype(np.uint8) * np.uint8(IGNORE_INDEX),
        ],
        "unit_vector": [
            F.normalize(torch.randn(3, *shape, generator=torch.Generator().manual_seed(2)), dim=0).numpy(),
            with_boundaries(rng.uniform(-1.5, 1.5, (3, *shape)), vector_boundaries(np.float64)[:-2], rng),
            np.full((3, *shape), float(IGNORE_INDEX)),
            rng.uniform(-1, 1, (1, *shape)).astype(np.float32),
        ],
        "scalar": [
            rng.uniform(0.5, 10, (1, *shape)).astype(np.float32),
            with_boundaries(rng.uniform(-3, 10, shape), grey_boundaries, rng),
            np.full(shape, 3.0),  # constant: a zero range
            np.full(shape, float(IGNORE_INDEX)),  # nothing valid when it is a label
            -rng.uniform(0, 1, shape),  # nothing positive
        ],
    }
    for kind, values in cases.items():
        for value in values:
            new = SPECS[kind].render(value, is_label=is_label)
            assert_identical(new, old_render(SPECS[kind], value, is_label=is_label))
            assert new.flags.c_contiguous and new.flags.writeable


# ------------------------------------------------------------------------------------------------ resize


RESIZES = [
    ((8, 8), (16, 16)),  # exactly 2x (PyTorch's shortcut)
    ((8, 8), (8, 8)),  # unchanged
    ((8, 8), (8, 21)),  # one side unchanged
    ((16, 16), (5, 7)),  # down
    ((64, 64), (997, 1001)),  # up by odd ratios
    ((7, 13), (100, 3)),  # up one side, down the other
    ((3, 5), (1, 1)),
    ((1, 1), (9, 4)),
]


@pytest.mark.parametrize("source, size", RESIZES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_resized_class_maps_equal_the_former_float_interpolation(source, size, dtype) -> None:
    generator = torch.Generator().manual_seed(source[0] * 31 + size[1])
    high = 2 if dtype == torch.bool else 41
    indices = torch.randint(0, high, (2, *source), generator=generator).to(dtype)
    new = SPECS["classes"].resize_prediction(indices, size)
    old = indices if tuple(source) == tuple(size) else old_resize_classes(indices, size)
    assert new.dtype == old.dtype and torch.equal(new, old)


@pytest.mark.parametrize("values", [
    [-(2**24), 2**24, 0, 5],  # the extremes still exact in float32: gathered
    [2**24 + 1, 2**31 - 1, -(2**24) - 1, 7],  # beyond: the float32 detour rounds them, and is kept
])
def test_resized_class_maps_with_extreme_integers_equal_the_former_results(values: list[int]) -> None:
    indices = torch.tensor(values, dtype=torch.int64).view(1, 2, 2)
    assert torch.equal(SPECS["classes"].resize_prediction(indices, (5, 3)), old_resize_classes(indices, (5, 3)))


def test_resized_float_class_maps_keep_the_former_float_interpolation() -> None:
    indices = torch.tensor([[[0.4, 2.6], [-1.5, 3.0]]])
    assert torch.equal(SPECS["classes"].resize_prediction(indices, (3, 5)), old_resize_classes(indices, (3, 5)))


# ------------------------------------------------------------------------------------------------ memory


def traced_peak(function, *args) -> int:
    """Peak bytes NumPy allocated (NumPy reports its buffers to tracemalloc) while ``function(*args)`` ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_full_size_conversions_allocate_little_beyond_their_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 1000 x 1000 the former code allocated 2-10 times its uint8 result in float temporaries."""
    monkeypatch.setattr(tsn.kinds, "ROW_CHUNK_ELEMENTS", 1 << 14)
    band = 8 * 3 * (1 << 14) * 3  # a few float64 band temporaries
    side = 1000
    rng = np.random.default_rng(0)
    normals = F.normalize(torch.from_numpy(rng.normal(size=(3, side, side)).astype(np.float32)), dim=0).numpy()
    probability = rng.uniform(0, 1, (1, side, side)).astype(np.float32)
    depth = rng.uniform(0.5, 10, (1, side, side)).astype(np.float32)
    checks = [
        (SPECS["unit_vector"].to_saved, normals, 3 * side * side),
        (SPECS["binary"].to_saved, probability, side * side),
        (SPECS["scalar"].render, depth, 3 * side * side),
        (SPECS["binary"].render, probability, 3 * side * side),
        (SPECS["unit_vector"].render, normals, 3 * side * side),
    ]
    for function, value, result_bytes in checks:
        assert traced_peak(function, value) <= result_bytes + band, function
