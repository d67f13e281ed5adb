"""The page works in memory: no request opens a temporary file or folder, and each request's work is bounded
(prediction pixels, slider pictures, answer bytes) with one-line refusals."""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if any(importlib.util.find_spec(module) is None for module in ("fastapi", "httpx", "multipart")):
    pytest.skip("the serving tests need the serve extra and httpx: pip install -e '.[test]'", allow_module_level=True)

from fastapi.testclient import TestClient

import tsn
from tsn.inference.pipeline import PixelBudget
from tsn.serving import engine
from tsn.serving.app import create_app

SIZE = (64, 64)


@pytest.fixture(scope="module")
def model() -> tsn.models.DensePredictionModel:
    torch.manual_seed(0)
    return tsn.create_model("tsn_r10t_synthetic", decoder_channels=(16, 16, 8, 8, 8)).eval()


@pytest.fixture(scope="module")
def client(model) -> TestClient:
    return TestClient(create_app(model, size=SIZE), raise_server_exceptions=False)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _deep_png() -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", (np.random.default_rng(4).random((20, 28, 3)) * 65535).astype(np.uint16))
    assert ok
    return encoded.tobytes()


def _requests(client: TestClient) -> dict[str, object]:
    image = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    files = {"file": ("photo.png", _png(image), "image/png")}
    return {
        "predict": lambda: client.post("/api/predict", files=files),
        "predict 16-bit": lambda: client.post("/api/predict", files={"file": ("deep.png", _deep_png(), "image/png")}),
        "bad upload": lambda: client.post("/api/predict", files={"file": ("x.png", b"nonsense", "image/png")}),
        "mix": lambda: client.post("/api/mix", files=files, data={"start": "semseg", "end": "depth", "steps": "3"}),
        "scene": lambda: client.get("/api/scene/2"),
    }


@pytest.mark.parametrize("request_name", ["predict", "predict 16-bit", "bad upload", "mix", "scene"])
def test_no_request_opens_a_temporary_file_or_folder(client: TestClient, request_name: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client.get("/api/scene/0")  # the scene cache (a once-per-process rendering) is built before watching
    opened: list[str] = []

    def refuse(name: str):
        def call(*args, **kwargs):
            opened.append(name)
            raise AssertionError(f"tempfile.{name} called while serving a request")
        return call

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile",
                 "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, refuse(name))
    watched = tmp_path / "tmp"
    watched.mkdir()
    monkeypatch.setenv("TMPDIR", str(watched))
    monkeypatch.setattr(tempfile, "tempdir", str(watched))
    answer = _requests(client)[request_name]()  # type: ignore[operator]
    assert answer.status_code in (200, 400), answer.text
    assert opened == [] and list(watched.iterdir()) == []
    assert os.listdir(watched) == []


def test_an_extremely_elongated_upload_is_predicted_within_the_page_budget(client: TestClient) -> None:
    line = np.random.default_rng(2).integers(0, 256, (5000, 1, 3), dtype=np.uint8)
    answer = client.post("/api/predict", files={"file": ("line.png", _png(line), "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["original_size"] == [5000, 1]
    height = engine.PAGE_BUDGET.fit((5000, 1))[0]
    assert body["input"]["height"] == height == 4096 and body["input"]["width"] == 1


def test_large_uploads_are_reduced_to_the_budget_with_their_aspect(model, monkeypatch) -> None:
    monkeypatch.setattr(engine, "PAGE_BUDGET", PixelBudget(pixels=1200, side=100))
    showcase = engine.Showcase(model, size=SIZE)
    image = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    pixels, original = showcase.decode(_png(image), "big.png")
    assert original == (120, 160) and pixels.shape == (30, 40, 3)
    prediction = showcase.predict(pixels, "big.png", original)
    assert (prediction.image.height, prediction.image.width) == (30, 40)
    assert all((o.picture.height, o.picture.width) == (30, 40) for o in prediction.outputs)


def test_slider_pictures_are_bounded_per_request(model, monkeypatch) -> None:
    monkeypatch.setattr(engine, "MIX_OUTPUT_PIXELS", 6 * 100)  # 3 positions x 2 readings x 100 pixels
    showcase = engine.Showcase(model, size=SIZE)
    image = np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    mixing = showcase.mix(image, "semseg", "depth", steps=3)
    assert all(f.as_start.width * f.as_start.height <= 100 for f in mixing.frames)


def test_an_answer_over_the_byte_budget_is_refused_in_one_line(client: TestClient, monkeypatch) -> None:
    monkeypatch.setattr(engine, "MAX_ANSWER_BYTES", 2000)
    noise = np.random.default_rng(6).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    answer = client.post("/api/predict", files={"file": ("noise.png", _png(noise), "image/png")})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "over the page's" in error and "upload a smaller image" in error and "\n" not in error


@pytest.mark.parametrize("in_memory", [False, True], ids=["framework default", "tsn serve"])
def test_uploads_over_a_mebibyte_stay_in_memory_under_tsn_serve(client: TestClient, in_memory: bool,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette spools an upload past 1 MiB to a temporary file; ``tsn serve`` raises that threshold to the page's
    upload limit (:func:`tsn.serving.launch.keep_uploads_in_memory`)."""
    from starlette.formparsers import MultiPartParser

    from tsn.serving.launch import keep_uploads_in_memory

    monkeypatch.setattr(MultiPartParser, "spool_max_size", MultiPartParser.spool_max_size)  # restored afterwards
    if in_memory:
        keep_uploads_in_memory(engine.MAX_UPLOAD_BYTES)
    opened: list[str] = []
    real = tempfile.TemporaryFile

    def spy(*args, **kwargs):
        opened.append("TemporaryFile")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    noise = np.random.default_rng(7).integers(0, 256, (720, 720, 3), dtype=np.uint8)
    payload = _png(noise)
    assert len(payload) > 2**20
    answer = client.post("/api/predict", files={"file": ("noise.png", payload, "image/png")})
    assert answer.status_code == 200, answer.text
    assert (opened == []) is in_memory
