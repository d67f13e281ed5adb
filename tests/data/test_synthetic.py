"""Tests of the procedural synthetic scenes: label geometry, determinism, the split cache and the dataset API."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from tsn.data import synthetic
from tsn.data.synthetic import (
    DEFAULT_LENGTHS,
    PART_CLASSES,
    SEMSEG_CLASSES,
    SyntheticScenes,
    render_scene,
    scene_rng,
)
from tsn.data.synthetic_render import Rendering, Scene, instance_edges, render, sample_scene
from tsn.datasets import get_dataset
from tsn.errors import TsnError

TASKS = tuple(get_dataset("synthetic").tasks)
SIZE = 32


def scene_and_rendering(seed: int, split: str, index: int, size: int = SIZE) -> tuple[Scene, Rendering]:
    scene = sample_scene(scene_rng(seed, split, index))
    return scene, render(scene, size)


def camera_rays(scene: Scene, size: int) -> np.ndarray:
    """``H x W x 3`` camera-space ray directions with unit forward component (``z = -1``)."""
    centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    half = math.tan(scene.camera.fov / 2)
    u, v = np.meshgrid(centres * half, -centres * half)
    return np.stack([u, v, -np.ones_like(u)], axis=-1)


scenes = st.tuples(st.integers(0, 2**32), st.sampled_from(["train", "val", "test"]), st.integers(0, 10**6))


# ------------------------------------------------------------------------------------------------ label geometry
@settings(max_examples=40, deadline=None)
@given(scenes)
def test_labels_are_consistent(key: tuple[int, str, int]) -> None:
    _, r = scene_and_rendering(*key)
    sky = r.instance == 0
    assert r.image.dtype == np.uint8 and r.image.shape == (SIZE, SIZE, 3)
    # Depth: exactly 0 on the sky, positive and bounded elsewhere.
    assert np.all(r.depth[sky] == 0) and np.all(r.depth[~sky] > 0) and r.depth.max() <= 30.0
    # Normals: zero vector on the sky, unit length elsewhere.
    norm = np.linalg.norm(r.normals, axis=-1)
    assert np.all(r.normals[sky] == 0)
    np.testing.assert_allclose(norm[~sky], 1.0, atol=1e-5)
    # Saliency is exactly the object pixels; the figure is exactly the pixels with a part.
    np.testing.assert_array_equal(r.saliency, (r.semseg >= SEMSEG_CLASSES.index("sphere")).astype(np.float32))
    np.testing.assert_array_equal(r.saliency, (r.instance >= 3).astype(np.float32))
    np.testing.assert_array_equal(r.human_parts > 0, r.semseg == SEMSEG_CLASSES.index("figure"))
    assert set(np.unique(r.semseg)) <= set(range(len(SEMSEG_CLASSES)))
    assert set(np.unique(r.human_parts)) <= set(range(len(PART_CLASSES)))
    # Background (class 0) is the sky or the wall, ground is instance 1.
    np.testing.assert_array_equal(r.semseg == 0, (r.instance == 0) | (r.instance == 2))
    np.testing.assert_array_equal(r.semseg == 1, r.instance == 1)
    # Edges: binary, on the lower/right side of an instance change.
    assert set(np.unique(r.edges)) <= {0.0, 1.0}
    changed = np.zeros((SIZE, SIZE), dtype=bool)
    changed[1:] |= r.instance[1:] != r.instance[:-1]
    changed[:, 1:] |= r.instance[:, 1:] != r.instance[:, :-1]
    assert np.all(changed[r.edges == 1])


@settings(max_examples=25, deadline=None)
@given(scenes)
def test_normals_face_the_camera(key: tuple[int, str, int]) -> None:
    scene, r = scene_and_rendering(*key)
    towards_camera = -camera_rays(scene, SIZE)
    valid = r.instance > 0
    assert np.all((r.normals * towards_camera).sum(axis=-1)[valid] > 0)


def test_ground_depth_and_normal_match_the_camera_geometry() -> None:
    """Golden values: a pixel at height v (tangent units) sees the ground at Z = h / (sin p - v cos p)."""
    for index in range(5):
        scene, r = scene_and_rendering(0, "train", index, size=64)
        camera = scene.camera
        rays = camera_rays(scene, 64)
        ground = r.instance == 1
        expected = camera.height / (math.sin(camera.pitch) - rays[..., 1] * math.cos(camera.pitch))
        np.testing.assert_allclose(r.depth[ground], expected[ground], rtol=1e-4)
        normal = np.array([0.0, math.cos(camera.pitch), math.sin(camera.pitch)])
        np.testing.assert_allclose(r.normals[ground], np.broadcast_to(normal, r.normals[ground].shape), atol=1e-6)


def _finite_difference_normals(scene: Scene, depth: np.ndarray) -> np.ndarray:
    """Unit normals of the back-projected depth map from central differences (zero on the border)."""
    points = camera_rays(scene, depth.shape[0]) * depth[..., None].astype(np.float64)
    d_row, d_col = np.zeros_like(points), np.zeros_like(points)
    d_row[1:-1] = points[2:] - points[:-2]
    d_col[:, 1:-1] = points[:, 2:] - points[:, :-2]
    normals = np.cross(d_row, d_col)  # rows go down and columns right, so this faces the camera
    return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-30)


def test_normals_agree_with_finite_differences_of_depth() -> None:
    plane_checked = sphere_checked = 0
    for index in range(12):
        scene, r = scene_and_rendering(1, "val", index, size=64)
        estimate = _finite_difference_normals(scene, r.depth)
        for instance in np.unique(r.instance[r.instance > 0]):
            interior = ndimage.binary_erosion(r.instance == instance, np.ones((3, 3)), border_value=0)
            label = scene.label[np.flatnonzero(scene.instance == instance)[0]]
            angle = np.degrees(np.arccos(np.clip((estimate * r.normals)[interior].sum(-1), -1.0, 1.0)))
            if instance in (1, 2):  # ground and wall: planes, so differences are exact up to rounding
                assert angle.size == 0 or angle.max() < 0.1
                plane_checked += angle.size
            elif label == SEMSEG_CLASSES.index("sphere"):  # smooth: only curvature separates the two
                assert angle.size == 0 or (np.median(angle) < 2.0 and angle.max() < 8.0)
                sphere_checked += angle.size
    assert plane_checked > 10_000 and sphere_checked > 100


def test_instance_edges_golden() -> None:
    instance = np.zeros((6, 6), dtype=np.int32)
    instance[2:5, 1:4] = 7
    expected = np.zeros((6, 6), dtype=bool)
    expected[2, 1:4] = True  # top side: the object's first row
    expected[2:5, 1] = True  # left side: the object's first column
    expected[2:5, 4] = True  # right side: the background column after the object
    expected[5, 1:4] = True  # bottom side: the background row below it
    # Thinning drops the corners (2, 1), (2, 4) and (5, 1): each joins two runs that also touch diagonally.
    expected[2, 1] = expected[2, 4] = expected[5, 1] = False
    np.testing.assert_array_equal(instance_edges(instance), expected)


def test_edges_are_thin_and_cover_every_boundary() -> None:
    blocks = edge_pixels = 0
    for index in range(20):
        _, r = scene_and_rendering(2, "train", index, size=64)
        edges = r.edges.astype(bool)
        # One pixel thin: a full 2x2 block survives only where topology needs it (junctions, sharp tips).
        blocks += (edges[:-1, :-1] & edges[1:, :-1] & edges[:-1, 1:] & edges[1:, 1:]).sum()
        edge_pixels += edges.sum()
        changed = np.zeros_like(edges)
        changed[1:] |= r.instance[1:] != r.instance[:-1]
        changed[:, 1:] |= r.instance[:, 1:] != r.instance[:, :-1]
        near_edge = ndimage.binary_dilation(edges, np.ones((3, 3)))
        assert np.all(near_edge[changed])  # thinning only drops pixels next to a kept one
    assert blocks <= 1e-3 * edge_pixels


def test_scenes_are_multi_task() -> None:
    """Over 60 scenes every class and part occurs, figures are common but not everywhere, walls too."""
    classes, parts, with_figure = set(), set(), 0
    for index in range(60):
        sample = render_scene(0, "train", index, SIZE)
        classes |= set(np.unique(sample["semseg"]).astype(int))
        parts |= set(np.unique(sample["human_parts"]).astype(int))
        has_figure = bool((sample["semseg"] == SEMSEG_CLASSES.index("figure")).any())
        with_figure += has_figure
        if not has_figure:
            assert not sample["human_parts"].any()
    assert classes == set(range(len(SEMSEG_CLASSES))) and parts == set(range(len(PART_CLASSES)))
    assert 20 <= with_figure <= 55


# ------------------------------------------------------------------------------------------------ determinism
def test_render_scene_is_deterministic_and_keyed() -> None:
    first, again = render_scene(5, "train", 3, SIZE), render_scene(5, "train", 3, SIZE)
    for key in ("image", *TASKS):
        assert first[key].tobytes() == again[key].tobytes()
    assert first["meta"] == {"id": "train_000003", "size": (SIZE, SIZE), "dataset": "synthetic"}
    for seed, split, index in ((5, "train", 4), (5, "val", 3), (6, "train", 3)):
        assert render_scene(seed, split, index, SIZE)["image"].tobytes() != first["image"].tobytes()


def test_render_scene_golden_digest() -> None:
    """Byte-identical across runs and machines. If this fails after a deliberate change to the generator, bump
    ``GENERATOR_VERSION`` (stale caches must not be reused) and update the digest."""
    sample = render_scene(7, "val", 11, SIZE)
    digest = hashlib.sha256()
    for key in ("image", *TASKS):
        digest.update(sample[key].tobytes())
    assert synthetic.GENERATOR_VERSION == 1
    assert digest.hexdigest() == "22e5bf7cdfe4419e299197d99b4739f5648de203c80e81509c9682c9e21b86e5"


def test_render_scene_contract() -> None:
    sample = render_scene(0, "test", 0, SIZE)
    assert set(sample) == {"image", *TASKS, "meta"}
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (SIZE, SIZE, 3)
    for task in TASKS:
        expected = (SIZE, SIZE, 3) if task == "normals" else (SIZE, SIZE)
        assert sample[task].dtype == np.float32 and sample[task].shape == expected, task


@pytest.mark.parametrize("args", [(-1, "train", 0), (0, "train", -2), (0, "training", 0)])
def test_scene_rng_rejects_bad_keys(args: tuple[int, str, int]) -> None:
    with pytest.raises(TsnError):
        scene_rng(*args)


# ------------------------------------------------------------------------------------------------ dataset & cache
def assert_same_sample(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a["meta"] == b["meta"]
    for key in a.keys() - {"meta"}:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def test_dataset_cache_round_trip(tmp_path, monkeypatch) -> None:
    dataset = SyntheticScenes("val", size=SIZE, length=5, seed=2, cache_root=tmp_path)
    assert len(dataset) == 5 and dataset.cache_path is not None and dataset.cache_path.is_file()
    assert dataset.cache_path.parent == tmp_path and dataset.cache_path.suffix == ".npz"
    for index in range(5):
        assert_same_sample(dataset[index], render_scene(2, "val", index, SIZE))

    def no_rendering(*args, **kwargs):
        raise AssertionError("the cached split was rendered again")

    monkeypatch.setattr(synthetic, "_render_split", no_rendering)
    reloaded = SyntheticScenes("val", size=SIZE, length=5, seed=2, cache_root=tmp_path)
    assert_same_sample(reloaded[4], dataset[4])
    assert sorted(p.name for p in tmp_path.iterdir()) == [dataset.cache_path.name]  # no temporary left over


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_length"])
def test_dataset_regenerates_a_damaged_cache(tmp_path, damage: str) -> None:
    dataset = SyntheticScenes("test", size=SIZE, length=3, cache_root=tmp_path)
    path = dataset.cache_path
    assert path is not None
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file")
    else:  # a complete file of the wrong layout under this name, e.g. written by another version
        shorter = SyntheticScenes("test", size=SIZE, length=2, cache_root=tmp_path)
        assert shorter.cache_path is not None
        path.write_bytes(shorter.cache_path.read_bytes())
    again = SyntheticScenes("test", size=SIZE, length=3, cache_root=tmp_path)
    assert_same_sample(again[2], render_scene(0, "test", 2, SIZE))
    assert synthetic._load_arrays(path, 3, SIZE) is not None  # rewritten


def test_dataset_parallel_rendering_matches_serial(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(synthetic, "_CHUNK", 2)
    parallel = SyntheticScenes("train", size=SIZE, length=5, cache_root=tmp_path / "a", workers=2)
    serial = SyntheticScenes("train", size=SIZE, length=5, cache_root=tmp_path / "b", workers=1)
    for index in range(5):
        assert_same_sample(parallel[index], serial[index])


def test_dataset_tasks_subset_transform_and_uncached(tmp_path) -> None:
    dataset = SyntheticScenes("val", size=SIZE, length=2, tasks=["seg", "parts", "depth"],
                              transform=lambda s: {**s, "seen": True}, cache=False)
    assert dataset.cache_path is None and dataset.tasks == ("semseg", "human_parts", "depth")
    sample = dataset[1]
    assert set(sample) == {"image", "semseg", "human_parts", "depth", "meta", "seen"}
    cached = SyntheticScenes("val", size=SIZE, length=2, tasks=["semseg", "human_parts", "depth"],
                             cache_root=tmp_path)
    assert_same_sample({k: v for k, v in sample.items() if k != "seen"}, cached[1])
    with pytest.raises(IndexError):
        dataset[2]


def test_dataset_items_are_copies(tmp_path) -> None:
    dataset = SyntheticScenes("val", size=SIZE, length=1, cache_root=tmp_path)
    sample = dataset[0]
    sample["image"][:] = 0
    sample["normals"][:] = 0
    assert dataset[0]["image"].any() and dataset[0]["normals"].any()


def test_dataset_defaults() -> None:
    assert DEFAULT_LENGTHS == {"train": 2000, "val": 300, "test": 300}
    assert len(SEMSEG_CLASSES) == get_dataset("synthetic").tasks["semseg"]
    assert len(PART_CLASSES) == get_dataset("synthetic").tasks["human_parts"]
    dataset = SyntheticScenes("test", size=SIZE, cache=False)
    assert len(dataset) == 300 and dataset.tasks == TASKS


@pytest.mark.parametrize("kwargs", [{"split": "holdout"}, {"size": 48}, {"size": 0}, {"length": 0},
                                    {"seed": -1}, {"tasks": ["edges", "bogus"]}, {"tasks": ["saliency", "sal"]}])
def test_dataset_rejects_bad_options(kwargs: dict) -> None:
    with pytest.raises(TsnError):
        SyntheticScenes(**{"cache": False, **kwargs})
