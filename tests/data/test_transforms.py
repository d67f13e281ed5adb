"""Sample transforms: per-task flips, rotations, resizing, ignore marking, tensors, pipelines and RNG handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.utils.data import DataLoader, Dataset

from error_model import assert_close_float32
from tsn.data import collate
from tsn.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AddIgnoreRegions,
    Compose,
    FixedResize,
    RandomHorizontalFlip,
    ScaleNRotate,
    ToTensor,
    build_transforms,
    denormalize_image,
)
from tsn.errors import TsnError

TASK_NAMES = ("semseg", "human_parts", "edges", "normals", "saliency", "depth")


def make_sample(h: int = 24, w: int = 32, seed: int = 0) -> dict:
    """A raw sample of the shared contract with every task (as the synthetic scenes give)."""
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(h, w, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "semseg": rng.integers(0, 7, (h, w)).astype(np.float32),
        "human_parts": rng.integers(0, 7, (h, w)).astype(np.float32),
        "edges": rng.integers(0, 2, (h, w)).astype(np.float32),
        "normals": normals,
        "saliency": rng.integers(0, 2, (h, w)).astype(np.float32),
        "depth": rng.uniform(1, 10, (h, w)).astype(np.float32),
        "meta": {"id": "x", "size": (h, w), "dataset": "synthetic"},
    }


class FixedDraws:
    """A stand-in generator whose ``uniform`` always returns the low end (makes a random transform exact)."""

    def uniform(self, low: float, high: float, size: int | None = None) -> float | np.ndarray:
        return low if size is None else np.full(size, low)


# ------------------------------------------------------------------------------------------- flip
def test_flip_mirrors_everything_and_negates_normals_x() -> None:
    sample = make_sample()
    out = RandomHorizontalFlip(p=1.0)(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"], sample["image"][:, ::-1])
    np.testing.assert_array_equal(out["semseg"], sample["semseg"][:, ::-1])
    np.testing.assert_array_equal(out["normals"][..., 0], -sample["normals"][:, ::-1, 0])
    np.testing.assert_array_equal(out["normals"][..., 1:], sample["normals"][:, ::-1, 1:])
    assert out["meta"] == sample["meta"]
    assert RandomHorizontalFlip(p=0.0)(sample, np.random.default_rng(0)) is sample


@settings(max_examples=25, deadline=None)
@given(arrays(np.float32, (5, 7, 3), elements=st.floats(-1, 1, width=32)))
def test_flip_twice_is_identity_and_leaves_input_alone(normals: np.ndarray) -> None:
    sample = {"image": np.zeros((5, 7, 3), np.uint8), "normals": normals}
    kept = normals.copy()
    flip = RandomHorizontalFlip(["normals"], p=1.0)
    twice = flip(flip(sample, np.random.default_rng(0)), np.random.default_rng(0))
    np.testing.assert_array_equal(twice["normals"], normals)
    np.testing.assert_array_equal(sample["normals"], kept)


# ------------------------------------------------------------------------------------------- scale and rotate
@settings(max_examples=25, deadline=None)
@given(st.floats(-20, 20), st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1))
def test_rotation_turns_normals_as_the_reference_formula(angle: float, x: float, y: float, z: float) -> None:
    h, w = 21, 31
    normals = np.broadcast_to(np.float32([x, y, z]), (h, w, 3)).copy()
    out = ScaleNRotate(["normals"], rotation=(angle, angle), scale=(1.0, 1.0))(
        {"image": np.zeros((h, w, 3), np.uint8), "normals": normals}, np.random.default_rng(0))
    phi, r, theta = math.atan2(x, y), math.hypot(x, y), math.radians(angle)
    expected = [r * math.sin(phi + theta), r * math.cos(phi + theta), z]  # the reference's in-plane rotation
    # A bilinear warp of a constant field (4 weights summing to 1) and a 2 x 2 rotation, both in float32,
    # relative to the vector's size.
    assert_close_float32(out["normals"][h // 2, w // 2], expected, reduction=[4, 2], sides=1,
                         scale=max(r, abs(z), 1e-30))


def test_rotation_by_90_degrees_moves_pixels_and_vectors() -> None:
    h = w = 8
    semseg = np.zeros((h, w), np.float32)
    semseg[0, 4] = 3  # top centre
    normals = np.broadcast_to(np.float32([1, 0, 0]), (h, w, 3)).copy()
    out = ScaleNRotate(["semseg", "normals"], rotation=(90, 90), scale=(1, 1))(
        {"image": np.zeros((h, w, 3), np.uint8), "semseg": semseg, "normals": normals}, np.random.default_rng(0))
    # +90 deg is counter-clockwise on screen about (4, 4): the top-centre pixel lands at the left-centre.
    assert np.argwhere(out["semseg"] == 3).tolist() == [[4, 0]]
    assert_close_float32(out["normals"][4, 4], [0, -1, 0], reduction=[4, 2], sides=1)


def test_shrinking_fills_the_border_with_zero_and_keeps_depth_values() -> None:
    h, w = 20, 30
    sample = {"image": np.full((h, w, 3), 200, np.uint8), "semseg": np.full((h, w), 5, np.float32),
              "normals": np.broadcast_to(np.float32([0, 0, 1]), (h, w, 3)).copy(),
              "depth": np.full((h, w), 3.0, np.float32)}
    out = ScaleNRotate(["semseg", "normals", "depth"], rotation=(0, 0), scale=(0.5, 0.5))(
        sample, np.random.default_rng(0))
    assert out["semseg"][0, 0] == 0 and out["semseg"][h // 2, w // 2] == 5  # background, not 255
    assert (out["normals"][0, 0] == 0).all() and out["image"][0, 0].tolist() == [0, 0, 0]
    assert out["depth"][h // 2, w // 2] == 3.0 and out["depth"][0, 0] == 0  # depth is not divided by the scale
    ignored = AddIgnoreRegions()(out, np.random.default_rng(0))
    assert (ignored["normals"][0, 0] == 255).all() and ignored["depth"][0, 0] == 255


def test_shift_is_a_fraction_of_the_size() -> None:
    h, w = 10, 20
    semseg = np.arange(h * w, dtype=np.float32).reshape(h, w)
    out = ScaleNRotate(["semseg"], rotation=(0, 0), scale=(1, 1), shift=0.1)(
        {"image": np.zeros((h, w, 3), np.uint8), "semseg": semseg}, FixedDraws())
    # shift (-0.1 w, -0.1 h) = (-2, -1) pixels
    np.testing.assert_array_equal(out["semseg"][:-1, :-2], semseg[1:, 2:])
    assert not out["semseg"][-1].any() and not out["semseg"][:, -2:].any()


# ------------------------------------------------------------------------------------------- resize
def test_fixed_resize_per_task_interpolation_and_renormalisation() -> None:
    sample = make_sample(h=30, w=20)
    sample["normals"] = 2.0 * sample["normals"]  # not unit length
    sample["normals"][:10, :10] = 0  # an invalid block
    sample["extra"] = np.zeros(3)
    out = FixedResize(TASK_NAMES, size=(64, 48))(sample, np.random.default_rng(0))
    assert set(out) == set(sample) - {"extra"}  # unconfigured keys are dropped, meta kept
    assert out["image"].shape == (64, 48, 3) and out["image"].dtype == np.uint8
    assert out["normals"].shape == (64, 48, 3) and out["semseg"].shape == (64, 48)
    assert set(np.unique(out["semseg"])) <= set(np.unique(sample["semseg"]))  # nearest: no new class ids
    norms = np.linalg.norm(out["normals"], axis=-1)
    assert (out["normals"][:15, :15] == 0).all()  # the block's interior stays exactly zero
    # away from the block: unit length. Not a rounding bound: dividing by (norm + float32 eps) leaves 1 - |v| of
    # eps / |v| by design, so 1e-5 (84 eps) accepts resized vectors |v| >= 0.012 before renormalisation.
    np.testing.assert_allclose(norms[30:], 1.0, atol=1e-5)
    # at the block's rim bicubic ringing leaves tiny vectors; they are normalised too (up to the float32 eps)
    np.testing.assert_allclose(norms[norms > 0.5], 1.0, atol=1e-3)
    assert out["meta"] is sample["meta"]


# ------------------------------------------------------------------------------------------- ignore regions
def test_add_ignore_regions_rules() -> None:
    normals = np.ones((2, 3, 3), np.float32)
    normals[0, 1] = 0
    normals[1, 2] = [0, 0, 0.5]  # only all-zero vectors are invalid
    depth = np.float32([[0, 1, 2], [3, 0, 4]])
    sample = {"normals": normals, "depth": depth, "human_parts": np.zeros((2, 3), np.float32),
              "semseg": np.zeros((2, 3), np.float32), "edges": np.zeros((2, 3), np.float32)}
    out = AddIgnoreRegions()(sample, np.random.default_rng(0))
    assert out["normals"][0, 1].tolist() == [255, 255, 255] and out["normals"][1, 2].tolist() == [0, 0, 0.5]
    assert ((out["normals"] == 255).sum(axis=-1) > 0).sum() == 1
    np.testing.assert_array_equal(out["depth"], [[255, 1, 2], [3, 255, 4]])
    assert (out["human_parts"] == 255).all()  # no annotated person: the whole map is ignored
    assert not out["semseg"].any() and not out["edges"].any()  # an all-background image stays so
    assert not sample["human_parts"].any() and not (sample["normals"] == 255).any()  # inputs untouched
    kept = AddIgnoreRegions(empty_maps=False)(sample, np.random.default_rng(0))
    assert not kept["human_parts"].any()
    parts = np.zeros((2, 3), np.float32)
    parts[1, 1] = 2
    np.testing.assert_array_equal(AddIgnoreRegions()({"human_parts": parts}, None)["human_parts"], parts)


# ------------------------------------------------------------------------------------------- tensors
def test_to_tensor_layout_and_normalisation() -> None:
    sample = make_sample(h=4, w=5)
    sample["image"][0, 0] = (255, 0, 128)
    out = ToTensor()(sample, np.random.default_rng(0))
    assert out["image"].shape == (3, 4, 5) and out["image"].dtype == torch.float32
    expected = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                (128 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    assert_close_float32(out["image"][:, 0, 0], expected, reduction=1, depth=3, sides=1)  # (v / 255 - m) / s
    assert out["normals"].shape == (3, 4, 5) and out["semseg"].shape == (1, 4, 5)
    np.testing.assert_array_equal(out["normals"][:, 2, 3].numpy(), sample["normals"][2, 3])
    np.testing.assert_array_equal(out["depth"][0].numpy(), sample["depth"])  # labels are not scaled
    assert out["meta"] is sample["meta"]


@settings(max_examples=20, deadline=None)
@given(arrays(np.uint8, (3, 4, 3)))
def test_denormalize_inverts_to_tensor(image: np.ndarray) -> None:
    tensor = ToTensor()({"image": image}, np.random.default_rng(0))["image"]
    np.testing.assert_array_equal(denormalize_image(tensor), image)


# ------------------------------------------------------------------------------------------- pipelines
@pytest.mark.parametrize("kind", ["eval", "astmt_train", "tsns_train"])
def test_pipelines_on_a_small_sample(kind: str) -> None:
    transform = build_transforms(kind, size=(64, 64), seed=3)
    out = transform(make_sample(h=48, w=64))
    assert out["image"].shape == (3, 64, 64) and out["normals"].shape == (3, 64, 64)
    for task in ("semseg", "human_parts", "edges", "saliency", "depth"):
        assert out[task].shape == (1, 64, 64) and out[task].dtype == torch.float32
    again = build_transforms(kind, size=(64, 64), seed=3)(make_sample(h=48, w=64))
    assert all(torch.equal(out[k], again[k]) for k in out if k != "meta")  # same seed, same sample


def test_tsns_train_keeps_empty_parts_as_background_and_varies() -> None:
    sample = make_sample(h=32, w=32)
    sample["human_parts"][:] = 0
    tsns = build_transforms("tsns_train", size=(32, 32), tasks=["human_parts", "semseg"])
    first = tsns(sample, np.random.default_rng(1))
    assert set(first) == {"image", "human_parts", "semseg", "meta"}
    assert not first["human_parts"].any()  # TSNs trains it as background; ASTMT ignores it
    astmt = build_transforms("astmt_train", size=(32, 32), tasks=["human_parts"])(sample, np.random.default_rng(1))
    assert (astmt["human_parts"] == 255).all()
    second = tsns(sample, np.random.default_rng(2))
    assert not torch.equal(first["image"], second["image"])


def test_bad_pipeline_arguments() -> None:
    with pytest.raises(TsnError, match="unknown transform pipeline 'train'"):
        build_transforms("train")
    with pytest.raises(TsnError, match="two positive integers"):
        build_transforms("eval", size=(0, 64))
    with pytest.raises(TsnError, match="unknown task 'sky'"):
        build_transforms("eval", tasks=["sky"])


class _Draws(Dataset):
    """Four identical samples; the transform records the first number its generator draws."""

    def __init__(self, transform: Compose) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return self.transform({"draw": np.zeros(1)})


def _record(sample: dict, rng: np.random.Generator) -> dict:
    return {"draw": torch.tensor([rng.random()])}


def test_workers_draw_distinct_reproducible_streams() -> None:
    def draws() -> list[float]:
        torch.manual_seed(0)
        loader = DataLoader(_Draws(Compose([_record], seed=7)), batch_size=1, num_workers=2)
        return [batch["draw"].item() for batch in loader]

    first = draws()
    assert len(set(first)) == 4  # workers do not repeat each other's augmentations
    assert draws() == first  # reproducible under torch.manual_seed


def test_collate_keeps_meta_as_a_list() -> None:
    transform = build_transforms("eval", size=(16, 16))
    batch = collate([transform(make_sample(seed=s)) for s in range(3)])
    assert batch["image"].shape == (3, 3, 16, 16) and batch["normals"].shape == (3, 3, 16, 16)
    assert batch["meta"] == [{"id": "x", "size": (24, 32), "dataset": "synthetic"}] * 3


def test_transforms_serve_the_synthetic_scenes() -> None:
    synthetic = pytest.importorskip("tsn.data.synthetic")
    dataset = synthetic.SyntheticScenes("val", size=64, length=2, cache=False,
                                        transform=build_transforms("tsns_train", size=(64, 64), seed=0))
    sample = dataset[1]
    assert sample["image"].shape == (3, 64, 64) and sample["normals"].shape == (3, 64, 64)
    assert sample["depth"].shape == (1, 64, 64)
