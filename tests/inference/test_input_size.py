"""One input-size rule (:mod:`tsn.inference.input_size`) for every command, the API and the page: the same sizes
are accepted and refused everywhere, each refusal one line with exit status 2 and nothing written."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsn.cli import main
from tsn.errors import TsnError
from tsn.inference.input_size import MAX_INPUT_SIDE, check_input_size, input_size, min_input_side
from tsn.models import build_model, model_config
from tsn.models.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread_private_cache")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(model_config("tsn_r10t_synthetic", decoder_channels=(16, 16, 8, 8, 8))).eval()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sizes")
    image = folder / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)).save(image)
    return {"checkpoint": save_checkpoint(folder / "tsn.pt", model), "image": image}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _argv(command: str, size: str, files: dict[str, Path], out: Path) -> list[str]:
    ckpt = str(files["checkpoint"])
    return {
        "predict": ["predict", str(files["image"]), "--checkpoint", ckpt, "-o", str(out), "--size", size,
                    "--workers", "0", "--no-progress"],
        "evaluate": ["evaluate", "--checkpoint", ckpt, "--dataset", "synthetic", "--dataset-option", "length=1",
                     "--dataset-option", "size=64", "--workers", "0", "-o", str(out / "r.json"), "--size", size],
        "analyze": ["analyze", "--checkpoint", ckpt, "-o", str(out), "--path", "semseg", "depth", "--steps", "2",
                    "--image", "0", "--size", size],
        "export": ["export", "--onnx", str(out / "m.onnx"), "--checkpoint", ckpt, "--verify-size", size],
        "serve": ["serve", "--checkpoint", ckpt, "--size", size, "--port", str(_free_port())],
    }[command]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argument errors leave through argparse
        status = int(exit_.code or 0)
    return status, capsys.readouterr().err.strip().splitlines()


COMMANDS = ("predict", "evaluate", "analyze", "export", "serve")
REFUSED = {
    "32": "must be at least 64 x 64 for this model",
    "4096": f"each side must be from 1 to {MAX_INPUT_SIDE} pixels",
    "0": f"each side must be from 1 to {MAX_INPUT_SIDE} pixels",
}


@pytest.mark.parametrize("size", REFUSED)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_the_same_sizes_in_one_line(files, tmp_path: Path, capsys, command: str,
                                                           size: str) -> None:
    if command == "serve":
        pytest.importorskip("fastapi")
    if command == "export" and size == "0":
        pytest.skip("tsn export --verify-size 0 means: no check (documented)")
    out = tmp_path / "out"
    status, err = _run(_argv(command, size, files, out), capsys)
    assert status == 2, (command, size, err)
    assert len(err) == 1 and err[0].startswith(f"tsn {command}: error:") and REFUSED[size] in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("command", ["predict", "evaluate", "analyze"])
def test_the_model_minimum_is_accepted_by_the_commands(files, tmp_path: Path, capsys, command: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    status, err = _run(_argv(command, "64", files, out), capsys)
    assert status == 0, err
    assert any(out.iterdir())


def test_the_page_and_the_api_accept_and_refuse_the_same_sizes(model, files) -> None:
    pytest.importorskip("fastapi")
    import tsn
    from tsn.serving.engine import Showcase

    image = np.zeros((10, 12, 3), np.uint8)
    assert Showcase(files["checkpoint"], size=(64, 64)).size == (64, 64)
    assert set(tsn.predict(model, image, size=64)) == set(model.tasks)
    for refused in (32, 4096):
        with pytest.raises(TsnError, match=r"must be at least 64 x 64|from 1 to 2048"):
            Showcase(model, size=(refused, refused))
        with pytest.raises(TsnError, match=r"must be at least 64 x 64|from 1 to 2048"):
            tsn.predict(model, image, size=refused)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(512, (512, 512)), ("480x640", (480, 640)), ((48, 80), (48, 80)), ([7], (7, 7)), (np.int64(9), (9, 9))],
)
def test_sizes_are_read_alike(value, expected) -> None:
    assert input_size(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("abc", "give one integer or"), ((1, 2, 3), "give one integer or"), (2.5, "whole numbers"),
     (True, "whole numbers"), (-4, "from 1 to"), (MAX_INPUT_SIDE + 1, "from 1 to")],
)
def test_bad_sizes_are_one_line(value, message) -> None:
    with pytest.raises(TsnError, match=message):
        input_size(value, "--size")


def test_the_minimum_comes_from_the_encoder(model) -> None:
    assert min_input_side(model) == 64  # ResNet: stride 32, twice that
    assert check_input_size(model, 64) == (64, 64)
    with pytest.raises(TsnError, match=r"--size must be at least 64 x 64 for this model.*got 63x64"):
        check_input_size(model, (63, 64))
    patch = build_model(model_config("tsn_r18_synthetic", backbone="vit_tiny_patch16_224", pretrained=False,
                                     decoder_channels=None))
    assert patch.input_multiple == (16, 16) and min_input_side(patch) == 64  # pyramid down to stride 32
