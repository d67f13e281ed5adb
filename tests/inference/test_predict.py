"""``tsn predict`` and the saved-prediction conventions of :mod:`tsn.inference.predict`."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from tsn.cli import main
from tsn.commands.predict import parse_size
from tsn.dataset_catalog import dataset_tasks
from tsn.inference.predict import collect_inputs, load_image, predict_files, restore_predictions, save_predictions
from tsn.models import DensePredictionModel, ModelConfig, build_model, model_config
from tsn.models.checkpoint import load_model, save_checkpoint
from tsn.tasks import color_palette

NET = 64
"""Network input side used by the tests (the model runs on NET x NET images)."""
SIZES = {"wide": (40, 70), "tall": (50, 33)}
"""Original (H, W) of the test images: non-square, different from each other and from NET."""
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random TSN on the synthetic tasks (all four output kinds), with a narrow decoder."""
    torch.manual_seed(0)
    model = build_model(model_config("tsn_r18_synthetic", decoder_channels=(32, 16, 16, 16, 16)))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tsn.pt", model)


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """A folder with two good images, a truncated PNG and a text file."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for (name, (h, w)), suffix in zip(SIZES.items(), (".jpg", ".png"), strict=True):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{name}{suffix}")
    (folder / "broken.png").write_bytes((folder / "tall.png").read_bytes()[:80])
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def run_cli(*args: str) -> int:
    return main(["predict", "--size", str(NET), "--workers", "0", "--no-progress", *args])


def reference_raw(checkpoint: Path, path: Path) -> dict[str, torch.Tensor]:
    """The model's raw outputs for one file, preprocessed by hand (bicubic uint8 resize, ImageNet normalisation)."""
    image = cv2.resize(np.asarray(Image.open(path).convert("RGB")), (NET, NET), interpolation=cv2.INTER_CUBIC)
    x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None])
    x = x / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        return load_model(checkpoint)(x[None])


def test_predict_folder_writes_every_task_at_the_original_size_and_skips_bad_files(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert run_cli("--checkpoint", str(checkpoint), str(images), "-o", str(out)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "broken.png" in err[0] and "notes.txt" in err[1] and all("skipped" in line for line in err)

    palette = color_palette().ravel().tolist()
    for stem, (h, w) in SIZES.items():
        for task, channels in (("semseg", 7), ("human_parts", 7)):
            png = Image.open(out / task / f"{stem}.png")
            assert png.mode == "P" and png.size == (w, h) and png.getpalette() == palette
            assert np.asarray(png).max() < channels
        for task in ("edges", "saliency"):
            png = Image.open(out / task / f"{stem}.png")
            assert png.mode == "L" and png.size == (w, h)
        normals = Image.open(out / "normals" / f"{stem}.png")
        assert normals.mode == "RGB" and normals.size == (w, h)
        depth_png = Image.open(out / "depth" / f"{stem}.png")
        assert depth_png.mode == "L" and depth_png.size == (w, h)
        assert np.asarray(depth_png).min() == 0 and np.asarray(depth_png).max() == 255  # min-max stretched
        assert Image.open(out / "panels" / f"{stem}.png").format == "PNG"

        # Values: the model's own outputs, resized back as the reference does (nearest classes, bilinear depth).
        raw = reference_raw(checkpoint, next(images.glob(f"{stem}.*")))
        depth = scipy.io.loadmat(out / "depth" / f"{stem}.mat")["depth"]
        expected = F.interpolate(raw["depth"], size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
        assert depth.dtype == np.float32 and depth.shape == (h, w)
        np.testing.assert_allclose(depth, expected, atol=1e-4)
        classes = F.interpolate(raw["semseg"].argmax(1, keepdim=True).float(), size=(h, w), mode="nearest")
        assert (np.asarray(Image.open(out / "semseg" / f"{stem}.png")) == classes[0, 0].numpy()).mean() > 0.99
    assert not list(out.glob("*/broken.*")) and not list(out.glob("*/notes.*"))


def test_tasks_option_aliases_and_authors_format(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    wide = str(images / "wide.jpg")
    args = ["--checkpoint", str(checkpoint), wide, "-o", str(out), "--tasks", "seg,depth", "--save-format", "authors"]
    assert run_cli(*args) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "depth", "depth/wide.mat", "semseg", "semseg/wide.png"
    ]  # no panels, no depth picture, only the asked tasks
    assert Image.open(out / "semseg" / "wide.png").mode == "L"
    assert "semseg, depth" in capsys.readouterr().out


def test_unknown_task_and_nothing_readable_are_one_line_errors(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("--checkpoint", str(checkpoint), str(images), "-o", str(tmp_path / "out"), "--tasks",
                   "seg,colour") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown task 'colour'" in err[0]

    only_bad = [str(images / "notes.txt"), str(images / "broken.png"), str(tmp_path / "missing.jpg")]
    assert run_cli("--checkpoint", str(checkpoint), *only_bad, "-o", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "missing.jpg: no such file" in err[0] and "none of the 3 input(s)" in err[-1]


def test_batched_and_multiprocess_reading_give_the_same_predictions(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    one, batched = tmp_path / "one", tmp_path / "batched"
    common = ["--checkpoint", str(checkpoint), str(images), "--tasks", "depth", "--no-panels"]
    assert run_cli(*common, "-o", str(one), "--batch-size", "1") == 0
    assert main(["predict", *common, "-o", str(batched), "--size", str(NET), "--batch-size", "3",
                 "--workers", "2", "--no-progress"]) == 0
    for stem in SIZES:
        a, b = (scipy.io.loadmat(d / "depth" / f"{stem}.mat")["depth"] for d in (one, batched))
        np.testing.assert_allclose(a, b, atol=1e-5)


class FixedOutputs(DensePredictionModel):
    """A stand-in model whose raw outputs are given, whatever the image."""

    def __init__(self, outputs: dict[str, torch.Tensor]) -> None:
        channels = {name: raw.shape[1] for name, raw in outputs.items()}
        super().__init__(ModelConfig(tasks=tuple(outputs), task_channels=channels))
        self.outputs = outputs
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device

    def predict_tasks(self, image: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        return {name: self.outputs[name].expand(image.shape[0], -1, -1, -1) for name in names}


def test_authors_format_values_equal_the_reference_conventions(tmp_path: Path) -> None:
    """Crafted 2 x 3 raw outputs, an image of the same size: argmax, trunc(255 sigmoid), trunc((n + 1) 255 / 2)."""
    ln3 = math.log(3.0)  # sigmoid(ln 3) = 0.75
    semseg = torch.zeros(1, 3, 2, 3)
    for (row, col), label in np.ndenumerate(np.array([[0, 1, 2], [2, 1, 0]])):
        semseg[0, label, row, col] = 5.0
    binary = torch.tensor([[[[0.0, ln3, 50.0], [-50.0, -ln3, 0.0]]]])
    vectors = torch.tensor([[[0, 0, 2], [-3, 0, 0], [1, 1, 0]], [[0, -5, 0], [0, 0, -1], [2, 0, 0]]]).float()
    depth = torch.tensor([[[[1.5, 2.25, 0.0], [-1.0, 3.0, 10.0]]]])
    model = FixedOutputs({"semseg": semseg, "edges": binary, "saliency": binary,
                          "normals": vectors.permute(2, 0, 1)[None], "depth": depth})
    Image.new("RGB", (3, 2), (10, 20, 30)).save(tmp_path / "im.png")
    summary = predict_files(model, [tmp_path / "im.png"], tmp_path / "out", size=(2, 3), save_format="authors",
                            panels=False, progress=False)
    assert summary.processed == [tmp_path / "im.png"] and not summary.skipped

    def png(task: str) -> np.ndarray:
        image = Image.open(tmp_path / "out" / task / "im.png")
        assert image.mode == ("RGB" if task == "normals" else "L")
        return np.asarray(image)

    np.testing.assert_array_equal(png("semseg"), [[0, 1, 2], [2, 1, 0]])
    for task in ("edges", "saliency"):
        np.testing.assert_array_equal(png(task), [[127, 191, 255], [0, 63, 127]])
    r = int((1 / math.sqrt(2) + 1) * 255 / 2)  # 217
    np.testing.assert_array_equal(
        png("normals"), [[[127, 127, 255], [0, 127, 127], [r, r, 127]], [[127, 0, 127], [127, 127, 0], [255, 127, 127]]]
    )
    saved = scipy.io.loadmat(tmp_path / "out" / "depth" / "im.mat")
    assert saved["depth"].dtype == np.float32
    np.testing.assert_array_equal(saved["depth"], depth[0, 0].numpy())


def test_resized_authors_values_match_the_reference_cv2_pipeline(tmp_path: Path) -> None:
    """datasets.md 4.4: scale at 16 x 16, cv2.resize to (W, H) (nearest classes, bilinear rest), truncate to uint8."""
    gen = torch.Generator().manual_seed(0)
    raw = {task: 3 * torch.randn(1, c, 16, 16, generator=gen) for task, c in
           (("semseg", 21), ("edges", 1), ("normals", 3), ("depth", 1))}
    specs = {spec.name: spec for spec in dataset_tasks("pascal_context") + dataset_tasks("nyud", ["depth"])}
    h, w = 23, 37
    save_predictions(raw, specs, ["x"], [(h, w)], tmp_path, save_format="authors")

    def resize(array: np.ndarray, flag: int) -> np.ndarray:
        return cv2.resize(array, (w, h), interpolation=flag)

    semseg = resize(raw["semseg"][0].argmax(0).numpy().astype(np.uint8), cv2.INTER_NEAREST)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "semseg" / "x.png")), semseg)
    cases = {
        "edges": (255 * torch.sigmoid(raw["edges"][0, 0])).numpy(),
        "normals": ((F.normalize(raw["normals"], dim=1)[0].permute(1, 2, 0) + 1) * 255 / 2).numpy(),
    }
    for task, scaled in cases.items():
        expected = resize(scaled, cv2.INTER_LINEAR).astype(np.uint8)
        got = np.asarray(Image.open(tmp_path / task / "x.png")).astype(int)
        assert np.abs(got - expected).max() <= 1 and (got == expected).mean() > 0.99  # float rounding at truncation
    depth = scipy.io.loadmat(tmp_path / "depth" / "x.mat")["depth"]
    np.testing.assert_allclose(depth, resize(raw["depth"][0, 0].numpy(), cv2.INTER_LINEAR), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), batch=st.integers(1, 3))
def test_restored_predictions_have_each_image_size_and_kind(h: int, w: int, batch: int) -> None:
    specs = {spec.name: spec for spec in dataset_tasks("nyud")}
    raw = {name: torch.randn(batch, spec.channels, 8, 8) for name, spec in specs.items()}
    sizes = [(h + i, w) for i in range(batch)]
    restored = restore_predictions(raw, specs, sizes)
    for (hh, ww), predictions in zip(sizes, restored, strict=True):
        assert predictions["semseg"].shape == (hh, ww) and predictions["semseg"].max() < 41
        assert predictions["edges"].shape == (1, hh, ww) and 0 <= predictions["edges"].min()
        assert predictions["edges"].max() <= 1 and predictions["depth"].shape == (1, hh, ww)
        assert predictions["normals"].shape == (3, hh, ww)


def test_collect_inputs_lists_folders_and_reports_missing_and_clashing_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("a/x.png", "a/y.jpg", "a/.hidden.png", "y.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a" / "sub").mkdir()
    inputs = [tmp_path / "a", tmp_path / "a" / "x.png", tmp_path / "y.png", tmp_path / "nope.png", tmp_path / "empty"]
    files, skipped = collect_inputs(inputs)
    assert files == [(tmp_path / "a" / "x.png", "x"), (tmp_path / "a" / "y.jpg", "y")]
    assert [s.path for s in skipped] == [tmp_path / "y.png", tmp_path / "nope.png", tmp_path / "empty"]
    assert "same name as" in skipped[0].message and "no such file" in skipped[1].message


def test_load_image_applies_exif_orientation_and_converts_to_rgb(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("L", (30, 20), 200).save(tmp_path / "rotated.jpg", exif=exif)
    image = load_image(tmp_path / "rotated.jpg")
    assert image.shape == (30, 20, 3) and image.dtype == np.uint8


def test_parse_size() -> None:
    import argparse

    assert parse_size("512") == (512, 512) and parse_size("480x640") == (480, 640)
    assert parse_size("16") == (16, 16)  # the syntax only: the model's own minimum is checked once it is loaded
    for bad in ("0", "abc", "1x2x3", "64x0", "4096", "-64"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
