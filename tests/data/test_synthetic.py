"""Tests of the procedural synthetic scenes: label geometry, determinism, the split cache and the dataset API."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from tsn.data import synthetic, synthetic_render
from tsn.data.synthetic import (
    DEFAULT_LENGTHS,
    PART_CLASSES,
    SEMSEG_CLASSES,
    SyntheticScenes,
    SyntheticScenesFull,
    render_scene,
    scene_rng,
)
from tsn.data.synthetic_render import (
    EXTRA_LABELS,
    LUMA,
    Rendering,
    boundary_distance,
    instance_contours,
    instance_edges,
    render,
)
from tsn.data.synthetic_scene import PATTERNS, Scene, _bounding_spheres, sample_scene
from tsn.data.transforms import RandomHorizontalFlip
from tsn.dataset_catalog import dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.tasks import get_task
from tsn.training.losses import task_loss

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


# ------------------------------------------------------------------------------------------------ extra labels
EXTRA = EXTRA_LABELS
FULL_TASKS = tuple(get_dataset("synthetic_full").tasks)
LUMA_WEIGHTS = np.array(LUMA)


def full_rendering(seed: int, split: str, index: int, size: int = SIZE) -> tuple[Scene, Rendering]:
    scene = sample_scene(scene_rng(seed, split, index))
    return scene, render(scene, size, EXTRA)


def light_in_camera(scene: Scene) -> np.ndarray:
    return np.array([np.dot(scene.light, axis) for axis in scene.camera.basis()])


def brute_force_distance(instance: np.ndarray) -> np.ndarray:
    """float64 distance from every pixel to the nearest pixel of another instance, by trying every pair."""
    rows, columns = np.indices(instance.shape)
    points = np.stack([rows.ravel(), columns.ravel()], axis=1).astype(np.float64)
    apart = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    other = instance.ravel()[:, None] != instance.ravel()[None, :]
    distance = np.where(other, apart, np.inf).min(axis=1)
    return np.where(np.isfinite(distance), distance, math.hypot(*instance.shape)).reshape(instance.shape)


def test_the_default_dataset_keeps_six_tasks_and_the_full_one_has_thirteen() -> None:
    assert TASKS == ("semseg", "human_parts", "edges", "normals", "saliency", "depth")
    assert FULL_TASKS == (*TASKS, *EXTRA) and len(FULL_TASKS) >= 12
    assert get_dataset("synthetic13").name == "synthetic_full"
    for task in FULL_TASKS:
        assert get_dataset("synthetic_full").tasks[task] == get_task(task).channels or task in ("semseg",)
    assert get_task("material").class_names == ("sky", *PATTERNS)
    with pytest.raises(TsnError, match="datasets with it: synthetic_full"):
        SyntheticScenes("val", size=SIZE, tasks=["shading"], cache=False)
    with pytest.raises(TsnError, match="unknown synthetic label 'bogus'"):
        render(sample_scene(scene_rng(0, "val", 0)), SIZE, ["bogus"])


@settings(max_examples=20, deadline=None)
@given(scenes)
def test_extra_labels_are_exact(key: tuple[int, str, int]) -> None:
    scene, r = full_rendering(*key)
    x = r.extras
    assert set(x) == set(EXTRA)
    for name, label in x.items():
        assert label.dtype == np.float32 and label.shape == (SIZE, SIZE), name
    sky = r.instance == 0
    ambient = np.float32(scene.ambient)
    # Albedo and shading: 0 on the sky only; shading between the ambient level and 1.
    assert np.all(x["albedo"][sky] == 0) and np.all((x["albedo"][~sky] > 0) & (x["albedo"][~sky] <= 1 + 1e-6))
    assert np.all(x["shading"][sky] == 0) and np.all((x["shading"][~sky] >= ambient) & (x["shading"][~sky] <= 1))
    # Shading is the albedo-free Lambert term of the normals label and the light; shadow where no light arrives.
    shadow = x["unlit"] == 1
    assert set(np.unique(x["unlit"])) <= {0.0, 1.0} and not shadow[sky].any()
    assert np.all(x["shading"][shadow] == ambient)
    lit = ~sky & ~shadow
    cosine = r.normals @ light_in_camera(scene)
    np.testing.assert_allclose(x["shading"][lit], scene.ambient + (1 - scene.ambient) * cosine[lit], atol=2e-5)
    assert np.all(cosine[lit] > -1e-6)  # lit: the light is in front (to float32 rounding of the two frames)
    # The image is albedo x shading, fogged by depth, plus at most noise_level grey levels of noise and rounding.
    fog = np.clip((r.depth.astype(np.float64) - 8.0) / 22.0, 0.0, 1.0) * 0.7
    expected = 255 * (x["albedo"] * x["shading"] * (1 - fog) + LUMA_WEIGHTS @ np.array(scene.sky_horizon) * fog)
    luma = r.image.astype(np.float64) @ LUMA_WEIGHTS
    assert np.all(np.abs(luma - expected)[~sky] <= scene.noise_level + 0.5 + 0.05)
    # Material: 1 + the pattern of each rigid instance's single surface (ground, wall, objects), 0 on the sky.
    assert np.all((x["material"] == 0) == sky)
    for value in np.unique(r.instance[~sky]):
        primitives = np.flatnonzero(scene.instance == value)
        if len(primitives) == 1:
            pattern = scene.surfaces[scene.surface[primitives[0]]].pattern
            assert np.all(x["material"][r.instance == value] == 1 + pattern)
    # Contours: both sides of every instance change; they hold the edges and the occlusion boundaries, and are
    # exactly where the distance to another instance is one pixel.
    contours, occlusion = x["contours"] == 1, x["occlusion"] == 1
    changed = np.zeros_like(contours)
    changed[1:] |= r.instance[1:] != r.instance[:-1]
    changed[:-1] |= r.instance[1:] != r.instance[:-1]
    changed[:, 1:] |= r.instance[:, 1:] != r.instance[:, :-1]
    changed[:, :-1] |= r.instance[:, 1:] != r.instance[:, :-1]
    np.testing.assert_array_equal(contours, changed)
    assert np.all(contours[r.edges == 1]) and np.all(contours[occlusion]) and not occlusion[sky].any()
    np.testing.assert_array_equal(x["boundary_distance"] == 1, contours)
    assert np.all(x["boundary_distance"][~contours] > 1)
    np.testing.assert_allclose(x["boundary_distance"], brute_force_distance(r.instance), rtol=1e-6)
    # Every surface pixel next to the sky hides the sky.
    padded = np.pad(r.instance, 1, constant_values=-1)
    next_to_sky = ~sky & ((padded[:-2, 1:-1] == 0) | (padded[2:, 1:-1] == 0) | (padded[1:-1, :-2] == 0)
                          | (padded[1:-1, 2:] == 0))
    assert np.all(occlusion[next_to_sky])


def test_boundary_distance_is_the_distance_transform_of_each_instance() -> None:
    instance = np.zeros((7, 9), dtype=np.int32)
    instance[2:6, 3:8] = 4
    instance[0, 0] = 9
    distance = boundary_distance(instance)
    for value in (0, 4, 9):
        mask = instance == value
        np.testing.assert_array_equal(distance[mask], ndimage.distance_transform_edt(mask)[mask].astype(np.float32))
    np.testing.assert_array_equal(distance, brute_force_distance(instance).astype(np.float32))
    assert np.all(boundary_distance(np.full((4, 6), 3)) == np.float32(math.hypot(4, 6)))  # no boundary at all


def test_occlusion_boundaries_separate_near_from_far() -> None:
    """Across an occlusion boundary the marked side is nearer than the neighbour it hides (almost always: the
    two pixels look along different rays; the ground is left out, since where an object stands on it the ground
    pixel below the contact is nearer than the object that hides the ground behind), and almost every instance
    change has an occluding side."""
    nearer = pairs = unmarked = changes = 0
    for index in range(12):
        _, r = full_rendering(3, "val", index, size=64)
        occlusion, depth = r.extras["occlusion"] == 1, np.where(r.instance == 0, np.inf, r.depth)
        for axis in (0, 1):
            a = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
            b = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
            change = r.instance[a] != r.instance[b]
            changes += change.sum()
            unmarked += (change & ~occlusion[a] & ~occlusion[b]).sum()
            for near, far in ((a, b), (b, a)):
                marked = change & occlusion[near] & ~occlusion[far] & (r.instance[far] != 1)
                pairs += marked.sum()
                nearer += (marked & (depth[near] < depth[far])).sum()
    assert pairs > 500 and nearer >= 0.95 * pairs and unmarked <= 0.02 * changes


def mirrored(scene: Scene) -> Scene:
    """The scene mirrored by ``x -> -x`` (the camera is on the axis, so its picture is the mirrored picture)."""
    columns = {"plane": [0], "sphere": [0], "capsule": [0, 3], "box": [0, 7], "cylinder": [0], "cone": [0]}
    shapes = {}
    for kind, params in scene.shapes.items():
        flipped = params.copy()
        flipped[:, columns[kind]] *= -1  # x coordinates; the box's sin: its angle about y changes sign
        shapes[kind] = flipped
    bounds = {kind: _bounding_spheres(kind, params) for kind, params in shapes.items()}
    light = (-scene.light[0], scene.light[1], scene.light[2])
    return dataclasses.replace(scene, shapes=shapes, bounds=bounds, light=light)


def test_extra_labels_flip_with_the_scene() -> None:
    """Rendering the mirrored scene mirrors every geometric label (the albedo's pattern cells are anchored at
    integer lattice points and are not mirror-symmetric, so the albedo is left out)."""
    for index in range(6):
        scene, r = full_rendering(4, "train", index)
        m = render(mirrored(scene), SIZE, EXTRA)
        same = np.fliplr(m.instance) == r.instance
        assert same.mean() > 0.995
        for name in ("unlit", "material", "contours", "occlusion", "boundary_distance"):
            assert (np.fliplr(m.extras[name]) == r.extras[name]).mean() > 0.99, name
        np.testing.assert_allclose(np.fliplr(m.extras["shading"])[same], r.extras["shading"][same], atol=1e-4)
    # The label definitions themselves commute with flips.
    _, r = full_rendering(4, "train", 0)
    np.testing.assert_array_equal(instance_contours(np.fliplr(r.instance)), np.fliplr(r.extras["contours"] == 1))
    np.testing.assert_array_equal(boundary_distance(np.fliplr(r.instance)), np.fliplr(r.extras["boundary_distance"]))


def test_extra_labels_through_the_flip_transform() -> None:
    sample = render_scene(0, "val", 1, SIZE, dataset="synthetic_full")
    flipped = RandomHorizontalFlip(dataset_tasks("synthetic_full"), p=1.0)(sample, np.random.default_rng(0))
    for name in EXTRA:
        np.testing.assert_array_equal(flipped[name], np.fliplr(sample[name]), err_msg=name)


def test_only_the_labels_asked_are_rendered(monkeypatch) -> None:
    asked: list[frozenset[str]] = []
    real = synthetic_render._render

    def recording(scene, size, extras=frozenset()):
        asked.append(extras)
        return real(scene, size, extras)

    monkeypatch.setattr(synthetic_render, "_render", recording)
    SyntheticScenes("val", size=SIZE, length=1, cache=False)[0]
    SyntheticScenesFull("val", size=SIZE, length=1, tasks=["seg", "shading"], cache=False)[0]
    assert asked == [frozenset(), frozenset({"shading"})]


def test_full_render_scene_is_deterministic_and_extends_the_six() -> None:
    first = render_scene(7, "val", 11, SIZE, dataset="synthetic_full")
    again = render_scene(7, "val", 11, SIZE, dataset="synthetic_full")
    six = render_scene(7, "val", 11, SIZE)
    assert set(first) == {"image", *FULL_TASKS, "meta"} and first["meta"]["dataset"] == "synthetic_full"
    for key in ("image", *FULL_TASKS):
        assert first[key].tobytes() == again[key].tobytes()
    for key in ("image", *TASKS):
        assert first[key].tobytes() == six[key].tobytes()  # the extra labels change nothing of the six


def test_full_dataset_cache_round_trip_beside_the_six_task_cache(tmp_path) -> None:
    six = SyntheticScenes("val", size=SIZE, length=3, seed=1, cache_root=tmp_path)
    full = SyntheticScenesFull("val", size=SIZE, length=3, seed=1, cache_root=tmp_path)
    assert six.cache_path is not None and six.cache_path.name == "synthetic-v1-seed1-val-32px-n3.npz"
    assert full.cache_path is not None and full.cache_path.name == "synthetic_full-v1-seed1-val-32px-n3.npz"
    assert set(np.load(six.cache_path).files) == {"image", *TASKS}  # the six-task cache keeps its layout
    for index in range(3):
        assert_same_sample(full[index], render_scene(1, "val", index, SIZE, dataset="synthetic_full"))
    subset = SyntheticScenesFull("val", size=SIZE, length=3, seed=1, tasks=["occlusion", "depth"],
                                 cache_root=tmp_path)
    assert set(subset[2]) == {"image", "occlusion", "depth", "meta"}
    assert synthetic._load_arrays(six.cache_path, 3, SIZE, "synthetic_full") is None  # never mistaken


@pytest.mark.parametrize("task", EXTRA)
def test_extra_tasks_train_score_save_and_draw(task: str) -> None:
    spec = dataset_tasks("synthetic_full", [task])[0]
    labels = [render_scene(0, "test", i, SIZE, [task], "synthetic_full")[task] for i in range(3)]
    # Loss: finite, and zero for a perfect raw output of a real-valued map.
    label = torch.from_numpy(np.stack(labels))[:, None]
    raw = torch.zeros(3, spec.channels, SIZE, SIZE)
    assert torch.isfinite(task_loss(spec, raw, label))
    if spec.kind.name == "scalar":
        assert float(task_loss(spec, label, label)) == 0.0
    # Metric: a perfect prediction, saved and read back as the evaluator does, scores perfectly.
    metric = spec.make_metric(depth_protocol="pooled")
    for value in labels:
        prediction = value.astype(np.int64) if spec.kind.name == "classes" else value[None]
        metric.update(spec.read_saved(spec.to_saved(prediction)), value)
    assert metric.compute()[spec.metric] == (1.0 if spec.higher_is_better else 0.0)
    # Picture and saved file.
    picture = spec.render(labels[0], is_label=True)
    assert picture.dtype == np.uint8 and picture.shape == (SIZE, SIZE, 3)
    read = spec.read_saved(spec.to_saved(labels[0].astype(np.int64) if spec.channels > 1 else labels[0][None]))
    np.testing.assert_array_equal(np.reshape(read, (SIZE, SIZE)), labels[0])  # {0, 1}, classes, float32: exact
