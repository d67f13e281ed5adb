"""The top-level API: a light ``import tsn``, lazy curated exports, and ``tsn.predict`` on every kind of image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tsn
from tsn.errors import TsnError

SIZE = 64
"""Network input side of the predictions: the smallest input the synthetic model is trained at."""

pytestmark = pytest.mark.usefixtures("one_thread_private_cache")


def test_import_tsn_loads_neither_torch_nor_timm() -> None:
    probe = (
        "import json, sys, tsn; "
        "print(json.dumps([tsn.__version__, sorted(m for m in ('torch', 'timm', 'numpy') if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    version, heavy = json.loads(done.stdout)
    assert version == tsn.__version__ and heavy == []


def test_every_public_name_resolves_to_its_defining_module() -> None:
    import tsn.dataset_catalog
    import tsn.models
    import tsn.tasks

    assert set(tsn.__all__) == {"__version__", *tsn._EXPORTS}
    for name in tsn.__all__:
        assert getattr(tsn, name) is not None, name
        assert name in dir(tsn)
    assert tsn.create_model is tsn.models.create_model and tsn.list_models is tsn.models.list_models
    assert tsn.register_task is tsn.tasks.register_task and tsn.get_task is tsn.tasks.get_task
    assert tsn.register_dataset is tsn.dataset_catalog.register_dataset
    assert tsn.list_datasets is tsn.dataset_catalog.list_datasets
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        tsn.nonexistent  # noqa: B018


@pytest.fixture(scope="module")
def model() -> tsn.models.DensePredictionModel:
    torch.manual_seed(0)
    return tsn.create_model("tsn_r10t_synthetic", decoder_channels=(16, 16, 8, 8, 8)).eval()


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A 40 x 56 RGB image: not square and not the network size, so both resizes are exercised."""
    return np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)


def _assert_same(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    assert list(first) == list(second)
    for task in first:
        np.testing.assert_array_equal(first[task], second[task], err_msg=task)


def test_predict_gives_every_task_at_the_image_size(model, picture) -> None:
    maps = tsn.predict(model, picture, size=SIZE)
    assert list(maps) == list(model.task_specs)
    for task, prediction in maps.items():
        spec = model.task_specs[task]
        expected = (40, 56) if task in ("semseg", "human_parts") else (spec.channels, 40, 56)  # class maps: H x W
        assert prediction.shape == expected, task
    assert maps["semseg"].dtype == np.int64 and maps["semseg"].max() < model.task_specs["semseg"].channels
    assert np.linalg.norm(maps["normals"], axis=0).max() <= 1 + 1e-5  # unit vectors, then interpolated
    assert list(tsn.predict(model, picture, tasks="normals", size=SIZE)) == ["normals"]


def test_every_image_form_gives_the_same_predictions_as_tsn_predict(model, picture, tmp_path: Path) -> None:
    from tsn.inference.predict import ImageFiles, restore_predictions

    path = tmp_path / "photo.png"
    Image.fromarray(picture).save(path)
    # The pipeline of `tsn predict` on the file, step by step.
    loaded = ImageFiles([(path, "photo")], (SIZE, SIZE))[0]
    with torch.inference_mode():
        raw = model(loaded.tensor[None], None)
    reference = restore_predictions(raw, model.task_specs, [loaded.size])[0]

    chw = torch.from_numpy(picture).permute(2, 0, 1)
    forms = {
        "path": path, "str": str(path), "PIL": Image.fromarray(picture), "array": picture,
        "float array": picture / 255.0, "tensor": chw, "batched float tensor": (chw.float() / 255)[None],
    }
    for form, image in forms.items():
        _assert_same(tsn.predict(model, image, size=SIZE), reference), form


def test_predict_loads_a_checkpoint_and_keeps_the_training_mode(model, picture, tmp_path: Path) -> None:
    checkpoint = tsn.save_checkpoint(tmp_path / "model.pt", model)
    _assert_same(tsn.predict(checkpoint, picture, size=SIZE), tsn.predict(model, picture, size=SIZE))
    assert isinstance(tsn.load_model(checkpoint), type(model))
    model.train()
    try:
        tsn.predict(model, picture, tasks=["semseg"], size=(SIZE, 96))
        assert model.training
    finally:
        model.eval()


def test_grey_and_transparent_images(model, tmp_path: Path) -> None:
    grey = np.random.default_rng(1).integers(0, 256, (33, 35), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    _assert_same(tsn.predict(model, grey, size=SIZE), tsn.predict(model, rgb, size=SIZE))
    rgba = np.dstack([rgb, np.zeros_like(grey)])  # fully transparent: white, as the file reader shows it
    white = np.full_like(rgb, 255)
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    _assert_same(tsn.predict(model, Image.fromarray(rgba), size=SIZE), tsn.predict(model, white, size=SIZE))
    _assert_same(tsn.predict(model, tmp_path / "clear.png", size=SIZE), tsn.predict(model, white, size=SIZE))


@pytest.mark.parametrize(
    ("model_arg", "image", "options", "message"),
    [
        (None, [[1, 2]], {}, "cannot predict on a list"),
        (None, np.zeros((4, 4, 2), np.uint8), {}, "shape (4, 4, 2)"),
        (None, np.full((4, 4, 3), 2.0), {}, "outside 0..1"),
        (None, np.zeros((4, 4, 3), np.int32), {}, "dtype int32"),
        (None, torch.zeros(2, 3, 8, 8), {}, "one RGB image"),
        (None, np.zeros((4, 4, 3), np.uint8), {"size": 32}, "predict size must be at least 64"),
        (None, np.zeros((4, 4, 3), np.uint8), {"size": (64, 64, 3)}, "one integer or (H, W)"),
        (None, np.zeros((4, 4, 3), np.uint8), {"tasks": "sky"}, "unknown task"),
        ("nothing.pt", np.zeros((4, 4, 3), np.uint8), {}, "does not exist"),
        (3, np.zeros((4, 4, 3), np.uint8), {}, "expected a tsn model or a checkpoint path"),
        (None, "missing.png", {}, "no such file"),
    ],
)
def test_bad_predict_input_is_a_one_line_error(model, model_arg, image, options, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TsnError) as caught:
        tsn.predict(model if model_arg is None else model_arg, image, **{"size": SIZE, **options})
    assert message in str(caught.value) and "\n" not in str(caught.value)
