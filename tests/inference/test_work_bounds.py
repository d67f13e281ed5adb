"""The work of predict, analyze and their pictures is bounded by what is asked, not by what a file declares: an
image 1 pixel wide and 5000 high costs what a small one does, huge images are predicted within the pixel budget,
and ``--steps`` is bounded (issue 22, "bound the work")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsn.cli import main
from tsn.inference.pipeline import PixelBudget
from tsn.inference.predict import PANEL_MAX_ASPECT, predict_files
from tsn.models import build_model, model_config
from tsn.models.checkpoint import save_checkpoint
from tsn.studies.analysis import MAX_PATH_STEPS

pytestmark = pytest.mark.usefixtures("one_thread_private_cache")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(model_config("tsn_r10t_synthetic", decoder_channels=(16, 16, 8, 8, 8))).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("bounds") / "tsn.pt", model)


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PNG 1 pixel wide and 5000 high (17 KB: the issue's case)."""
    path = tmp_path_factory.mktemp("line") / "line.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (5000, 1, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_on_a_one_pixel_line_writes_a_bounded_panel(checkpoint: Path, line: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(line), "--checkpoint", str(checkpoint), "-o", str(out), "--size", "64",
                 "--workers", "0", "--no-progress"]) == 0
    with Image.open(out / "panels" / "line.png") as panel:
        width, height = panel.size
        panel.load()  # Pillow opens it: no decompression-bomb size
    assert height <= (2.6 * PANEL_MAX_ASPECT + 0.4) * 100 + 1 and width * height < 5_000_000
    with Image.open(out / "semseg" / "line.png") as saved:
        assert saved.size == (1, 5000)  # the predictions keep the image's own size: 5000 pixels is no burden


@pytest.mark.parametrize(("shape", "budget", "expected"), [((300, 200), (6000, 1000), (94, 63)),
                                                           ((10, 900), (6000, 300), (3, 300))])
def test_predict_saves_images_over_the_budget_at_the_budget_size(model, tmp_path: Path, shape, budget,
                                                                 expected) -> None:
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(tmp_path / "big.png")
    summary = predict_files(model, [tmp_path / "big.png"], tmp_path / "out", size=(64, 64), progress=False,
                            budget=PixelBudget(*budget))
    assert summary.reduced == [(tmp_path / "big.png", shape, expected)]
    with Image.open(tmp_path / "out" / "semseg" / "big.png") as saved:
        assert saved.size == (expected[1], expected[0])


def test_analyze_walks_a_one_pixel_line_into_a_bounded_figure(checkpoint: Path, line: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["analyze", "--checkpoint", str(checkpoint), "-o", str(out), "--path", "semseg", "depth",
                 "--steps", "3", "--image", str(line)]) == 0
    with Image.open(out / "path_semseg_depth.png") as figure:
        width, height = figure.size
        figure.load()
    assert height < 2 * 1.6 * 4 * 100 + 200 and width < 1000


def test_analyze_on_a_one_pixel_image_gives_a_path(checkpoint: Path, tmp_path: Path) -> None:
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(tmp_path / "dot.png")
    assert main(["analyze", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "out"), "--path", "semseg",
                 "depth", "--steps", "2", "--image", str(tmp_path / "dot.png")]) == 0


@pytest.mark.parametrize("steps", [MAX_PATH_STEPS + 1, 1000])
def test_analyze_refuses_too_many_steps_in_one_line(checkpoint: Path, tmp_path: Path, capsys, steps: int) -> None:
    out = tmp_path / "out"
    assert main(["analyze", "--checkpoint", str(checkpoint), "-o", str(out), "--path", "semseg", "depth",
                 "--steps", str(steps)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"at most {MAX_PATH_STEPS} steps" in err[0]
    assert not out.exists()
