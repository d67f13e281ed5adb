"""Output kinds (tsn.kinds) and user task registration (tsn.tasks.register_task).

Every kind: postprocess, resize, to_saved -> read_saved round trip, render, constant baseline and metric; the
quantisation bounds of the saved PNGs are derived from their formulas (truncation to 1/255 or 2/255 steps) plus
the float32 rounding of one product (eps/2 relative, on values of magnitude <= 1). A registered user task works
where the built-in ones do: registry, model, loss, transforms, metric.
"""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import tsn.kinds
import tsn.tasks
from tsn.errors import TsnError
from tsn.kinds import BINARY, CLASSES, KINDS, SCALAR, UNIT_VECTOR, ScalarMap, color_palette, get_kind, register_kind
from tsn.tasks import IGNORE_INDEX, TASKS, TaskSpec, get_task, register_task, resolve_tasks

EPS32 = float(np.finfo(np.float32).eps)
SIDES = st.integers(1, 9)


@pytest.fixture
def registries() -> Iterator[None]:
    """Registrations made by a test are undone after it (the registries are module-level dicts)."""
    registries = (TASKS, TASKS.aliases, tsn.kinds.KINDS)
    saved = [dict(registry) for registry in registries]
    yield
    for registry, before in zip(registries, saved, strict=True):
        registry.clear()
        registry.update(before)


def user_task(**changes) -> TaskSpec:
    """A binary user task (road masks) built like saliency."""
    fields = dict(name="roads", title="Roads", aliases=("road",))
    return dataclasses.replace(get_task("saliency"), **{**fields, **changes})


# ------------------------------------------------------------------------------------------- the kinds
def test_every_task_holds_a_kind_and_keeps_its_file_name() -> None:
    assert {name: spec.kind.name for name, spec in TASKS.items()} == {
        "semseg": "classes", "human_parts": "classes", "edges": "binary", "normals": "unit_vector",
        "saliency": "binary", "depth": "scalar",
        # the synthetic scenes' extra tasks (dataset synthetic_full)
        "albedo": "scalar", "shading": "scalar", "unlit": "binary", "material": "classes", "contours": "binary",
        "occlusion": "binary", "boundary_distance": "scalar",
    }
    assert all(spec.output == spec.kind.name and KINDS[spec.output] == spec.kind for spec in TASKS.values())
    assert get_kind("Binary") is BINARY and get_kind(SCALAR) is SCALAR
    for kind in KINDS.values():  # workers receive pickled specs: their kinds must still compare equal
        assert pickle.loads(pickle.dumps(kind)) == kind and hash(pickle.loads(pickle.dumps(kind))) == hash(kind)
    assert CLASSES != BINARY


def test_a_kind_name_is_turned_into_the_kind_and_an_unknown_one_is_refused() -> None:
    assert dataclasses.replace(get_task("depth"), kind="classes").kind is CLASSES
    with pytest.raises(TsnError, match="unknown output kind 'heatmap'; known: classes, binary"):
        dataclasses.replace(get_task("depth"), kind="heatmap")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(2, 6), SIDES, SIDES, st.integers(0, 2**31 - 1))
def test_postprocess_of_each_kind(n: int, channels: int, h: int, w: int, seed: int) -> None:
    raw = torch.randn(n, channels, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    classes = CLASSES.postprocess(raw)
    assert classes.shape == (n, h, w) and classes.dtype == torch.int64
    assert torch.equal(torch.gather(raw, 1, classes[:, None]), raw.max(dim=1, keepdim=True).values)
    probability = BINARY.postprocess(raw[:, :1])
    assert torch.equal(probability, torch.sigmoid(raw[:, :1])) and bool(((probability > 0) & (probability < 1)).all())
    vectors = UNIT_VECTOR.postprocess(raw)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(n, h, w, dtype=torch.float64), rtol=0, atol=8 * 2**-52)
    assert SCALAR.postprocess(raw) is raw


@settings(max_examples=25, deadline=None)
@given(SIDES, SIDES, SIDES, SIDES, st.integers(0, 2**31 - 1))
def test_resizing_keeps_values_and_reaches_the_size(h: int, w: int, new_h: int, new_w: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, 41, (2, h, w), generator=generator)
    resized = CLASSES.resize_prediction(indices, (new_h, new_w), "bilinear")  # classes are never blended
    assert resized.shape == (2, new_h, new_w) and set(resized.unique().tolist()) <= set(indices.unique().tolist())
    constant = torch.full((1, 3, h, w), 0.25)
    for kind in (BINARY, UNIT_VECTOR, SCALAR):
        for mode in ("nearest", "bilinear", "bicubic"):
            out = kind.resize_prediction(constant, (new_h, new_w), mode)
            assert out.shape == (1, 3, new_h, new_w)
            assert torch.allclose(out, torch.full_like(out, 0.25), rtol=0, atol=16 * EPS32)  # a few weighted sums
    assert CLASSES.resize_prediction(indices, (h, w), "nearest") is indices


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.just(1), SIDES, SIDES), elements=st.floats(0, 1, width=32)))
def test_saved_probabilities_read_back_within_one_grey_level(probability: np.ndarray) -> None:
    saved = BINARY.to_saved(probability)
    assert saved.dtype == np.uint8 and saved.shape == probability.shape[1:] and BINARY.saved_suffix == ".png"
    error = probability[0].astype(np.float64) - BINARY.read_saved(saved)
    assert error.min() >= -EPS32 and error.max() < 1 / 255 + EPS32  # truncated to the grey level below


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.just(3), SIDES, SIDES), elements=st.floats(-1, 1, width=32)))
def test_saved_vectors_read_back_within_one_colour_level(vectors: np.ndarray) -> None:
    saved = UNIT_VECTOR.to_saved(vectors)
    assert saved.dtype == np.uint8 and saved.shape == vectors.shape[1:] + (3,)
    error = vectors.astype(np.float64) - UNIT_VECTOR.read_saved(saved)
    assert error.shape == vectors.shape
    assert error.min() >= -2 * EPS32 and error.max() < 2 / 255 + 2 * EPS32  # (n + 1) * 255 / 2, truncated


@settings(max_examples=30, deadline=None)
@given(arrays(np.int64, st.tuples(SIDES, SIDES), elements=st.integers(0, 255)),
       arrays(np.float32, st.tuples(st.just(1), SIDES, SIDES), elements=st.floats(-1e6, 1e6, width=32)))
def test_class_and_scalar_maps_are_saved_exactly(indices: np.ndarray, depth: np.ndarray) -> None:
    saved = CLASSES.to_saved(indices)
    assert saved.dtype == np.uint8 and np.array_equal(CLASSES.read_saved(saved), indices)
    assert SCALAR.saved_suffix == ".mat" and np.array_equal(SCALAR.read_saved(SCALAR.to_saved(depth)), depth[0])


def test_render_draws_every_kind_as_rgb() -> None:
    label = np.array([[0, 1], [15, IGNORE_INDEX]])
    picture = CLASSES.render(label, is_label=True)
    assert picture.dtype == np.uint8 and picture.shape == (2, 2, 3)
    assert np.array_equal(picture, color_palette()[label]) and picture[1, 1].tolist() == [255, 255, 255]
    grey = BINARY.render(np.array([[0.0, 1.0], [0.5, IGNORE_INDEX]]), is_label=True)
    assert grey[..., 0].tolist() == [[0, 255], [127, 0]] and (grey == grey[..., :1]).all()
    depth = SCALAR.render(np.array([[2.0, 4.0], [0.0, IGNORE_INDEX]]), is_label=True)  # stretched over 2..4
    assert depth[..., 0].tolist() == [[0, 255], [0, 0]]
    normals = UNIT_VECTOR.render(np.array([[[1.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]))
    assert normals.tolist() == [[[255, 127, 127], [0, 0, 0]]]  # a zero vector has no normal: black


def test_constant_baselines_predict_the_dataset_constant() -> None:
    classes = torch.tensor([[[[2, 2, 1, IGNORE_INDEX]]]], dtype=torch.float32)
    output, words = CLASSES.constant_output(classes, 4, IGNORE_INDEX)
    assert output.tolist() == [0.0, 0.0, 1.0, 0.0] and words == "majority class 2"
    binary = torch.tensor([[[[1.0, 0.0, 0.0, 0.0, IGNORE_INDEX]]]])
    output, words = BINARY.constant_output(binary, 1, IGNORE_INDEX)
    assert torch.sigmoid(output).item() == pytest.approx(0.25, abs=4 * EPS32) and words == "constant probability 0.250"
    vectors = torch.tensor([[[[0.0, 0.0, IGNORE_INDEX]], [[1.0, 0.0, IGNORE_INDEX]], [[0.0, 1.0, IGNORE_INDEX]]]])
    output, words = UNIT_VECTOR.constant_output(vectors, 3, IGNORE_INDEX)
    assert torch.allclose(output, torch.tensor([0.0, 0.5**0.5, 0.5**0.5]), rtol=0, atol=4 * EPS32)
    assert words == "mean normal (0.00, 0.71, 0.71)"
    depth = torch.tensor([[[[2.0, 4.0, 0.0, IGNORE_INDEX]]]])
    output, words = SCALAR.constant_output(depth, 1, IGNORE_INDEX)
    assert output.tolist() == [3.0] and words == "mean value 3.000"


def test_every_kind_scores_a_perfect_prediction_perfectly() -> None:
    label = np.array([[0, 1], [2, IGNORE_INDEX]])
    perfect = {
        "semseg": (np.array([[0, 1], [2, 0]]), label),
        "saliency": (np.array([[[0.0, 1.0], [1.0, 0.0]]]), np.array([[0, 1], [1, 0]], dtype=np.float32)),
        "normals": (np.tile(np.array([0.0, 0.0, 1.0])[:, None, None], (1, 2, 2)),) * 2,
        "depth": (np.full((2, 2), 2.0), np.full((2, 2), 2.0)),
    }
    expected = {"semseg": ("mIoU", 1.0), "saliency": ("mIoU", 1.0), "normals": ("mErr", 0.0), "depth": ("rmse", 0.0)}
    for name, (pred, truth) in perfect.items():
        spec = get_task(name).with_channels(3) if name == "semseg" else get_task(name)
        metric = spec.make_metric()
        metric.update(pred, truth)
        key, value = expected[name]
        assert metric.compute()[key] == pytest.approx(value, abs=1e-12), name
    assert BINARY.supports_metric("odsF") and not SCALAR.supports_metric("mIoU")


def test_a_metric_the_kind_does_not_offer_is_one_line() -> None:
    with pytest.raises(TsnError, match=r"task 'depth' has output 'scalar' with metric 'mIoU', which no metric "
                                       r"implements; known output/metric pairs: classes/mIoU, binary/mIoU"):
        dataclasses.replace(get_task("depth"), metric="mIoU").make_metric()
    with pytest.raises(TsnError, match="unknown metric option 'depth_protcol'"):
        get_task("depth").make_metric(depth_protcol="pooled")


def test_import_tsn_does_not_import_torch() -> None:
    code = "import sys, tsn, tsn.tasks, tsn.kinds; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------------------ registration
def test_a_registered_task_works_where_built_in_tasks_do(registries) -> None:
    from tsn.data.transforms import build_transforms
    from tsn.models import ModelConfig, build_model
    from tsn.training.losses import task_loss

    spec = register_task(user_task())
    assert get_task("road") is spec and resolve_tasks(["roads", "depth"])[0] is spec
    model = build_model(ModelConfig(arch="single_task", tasks=("roads",), backbone="resnet10t")).eval()
    with torch.no_grad():
        raw = model(torch.zeros(1, 3, 64, 64), "roads")
    assert raw.shape == (1, 1, 64, 64)
    label = torch.zeros(1, 1, 64, 64)
    assert torch.isfinite(task_loss(spec, raw, label))
    sample = {"image": np.zeros((20, 24, 3), np.uint8), "roads": np.ones((20, 24), np.float32), "meta": {}}
    transformed = build_transforms("eval", (16, 16), tasks=["roads"], seed=0)(sample)
    assert tuple(transformed["roads"].shape) == (1, 16, 16)
    metric = spec.make_metric()
    metric.update(spec.postprocess(torch.full((1, 1, 2, 2), 9.0))[0], np.ones((2, 2)))
    assert metric.compute()["mIoU"] == 1.0


def test_a_user_kind_can_be_registered_and_named(registries) -> None:
    @dataclasses.dataclass(frozen=True)
    class CountMap(ScalarMap):
        name = "count"

    kind = register_kind(CountMap())
    spec = register_task(user_task(name="crowd", aliases=(), kind="count", metric="rmse"))
    assert spec.kind is kind and spec.output == "count"
    with pytest.raises(TsnError, match="output kind 'count' is already registered"):
        register_kind(CountMap())


@pytest.mark.parametrize("changes, message", [
    (dict(name="Roads"), "its name 'Roads' is not a lower-case identifier"),
    (dict(channels=0), "channels must be a positive integer, got 0"),
    (dict(metric="rmse"), "output kind 'binary' has no metric 'rmse' \\(it offers: mIoU, odsF\\)"),
    (dict(label_interpolation="area"), "label_interpolation must be one of nearest, bilinear, bicubic"),
    (dict(loss=""), "loss must name a loss"),
    (dict(loss_weight=float("nan")), "loss_weight must be a finite number >= 0"),
    (dict(flip_negate_channels=(1,)), "flip_negate_channels \\(1,\\) must lie in 0..0"),
    (dict(class_names=("a", "b")), "it has 2 class names for 1 channels"),
])
def test_a_malformed_task_is_refused_in_one_line(registries, changes, message) -> None:
    with pytest.raises(TsnError, match=message) as error:
        register_task(user_task(**changes))
    assert "\n" not in str(error.value) and str(error.value).startswith("cannot register task")
    assert "roads" not in TASKS and "road" not in TASKS.aliases


def test_register_task_takes_a_task_spec() -> None:
    with pytest.raises(TsnError, match=r"register_task takes a tsn\.tasks\.TaskSpec, got dict"):
        register_task({"name": "roads"})  # type: ignore[arg-type]


def test_a_task_with_its_own_ignore_index_keeps_labels_equal_to_255() -> None:
    """boundary_distance is in pixels: 255 is a real distance at 256 px and more, so the task ignores -1 instead,
    and the loss, the metric and the transforms that mark unlabelled pixels all read the task's value."""
    from tsn.data.transforms import AddIgnoreRegions
    from tsn.training.losses import task_loss

    spec = get_task("boundary_distance")
    assert spec.ignore_index != IGNORE_INDEX
    label = np.array([[1.0, 255.0], [3.0, 254.5]], dtype=np.float32)
    marked = AddIgnoreRegions(["boundary_distance"])({"boundary_distance": label}, np.random.default_rng(0))
    np.testing.assert_array_equal(marked["boundary_distance"], label)

    target = torch.from_numpy(label)[None, None]
    loss = task_loss(spec, torch.zeros(1, 1, 2, 2, dtype=torch.float64), target)
    assert loss.item() == pytest.approx(float(label.mean()), rel=1e-12)
    metric = spec.make_metric()
    metric.update(torch.zeros(1, 1, 2, 2), target)
    assert metric.compute()["rmse"] == pytest.approx(float(np.sqrt((label.astype(np.float64) ** 2).mean())), rel=1e-6)
