"""``tsn serve`` without a browser: the JSON API through FastAPI's TestClient, the engine, and the launcher's
checks (default checkpoint, web extra, port). Tiny untrained models at 64 x 64: the whole file runs in seconds."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

if any(importlib.util.find_spec(module) is None for module in ("fastapi", "httpx", "multipart")):
    pytest.skip("the serving tests need the serve extra and httpx: pip install -e '.[test]'", allow_module_level=True)

from fastapi.testclient import TestClient

import tsn
from error_model import assert_close_float32, network_reductions
from tsn.cli import main
from tsn.errors import TsnError
from tsn.models.checkpoint import save_checkpoint
from tsn.models.layers import pool_channels
from tsn.serving import launch
from tsn.serving.app import create_app
from tsn.serving.engine import Showcase

SIZE = (64, 64)


@pytest.fixture(scope="module")
def model() -> tsn.models.base.DensePredictionModel:
    torch.manual_seed(0)
    return tsn.create_model("tsn_r10t_synthetic").eval()


@pytest.fixture(scope="module")
def client(model) -> TestClient:
    return TestClient(create_app(model, size=SIZE), raise_server_exceptions=False)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(seed: int, height: int = 48, width: int = 80) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _decode_url(url: str) -> bytes:
    return base64.b64decode(url.split(",", 1)[1])


def _upload(client: TestClient, payload: bytes, name: str = "photo.png"):
    return client.post("/api/predict", files={"file": (name, payload, "application/octet-stream")})


def test_page_and_info(client: TestClient, model) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="upload"' in page.text and 'id="mix-slider"' in page.text
    info = client.get("/api/info").json()
    assert [t["name"] for t in info["tasks"]] == list(model.task_specs)
    assert info["task_space"] is True and info["size"] == list(SIZE)


def test_upload_gives_every_task_at_the_image_size_and_the_authors_files(client: TestClient, model) -> None:
    image = _image(1)
    answer = _upload(client, _png(image), "my photo.png")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [o["task"] for o in body["outputs"]] == list(model.task_specs)
    expected = tsn.predict(model, image, size=SIZE)  # the page predicts exactly as tsn.predict does
    for output in body["outputs"]:
        spec = model.task_specs[output["task"]]
        picture = np.asarray(Image.open(io.BytesIO(_decode_url(output["url"]))))
        np.testing.assert_array_equal(picture, spec.render(expected[spec.name]))
        download = output["download"]
        assert download["filename"] == f"my_photo_{spec.name}{spec.saved_suffix}"
        saved = _decode_url(download["url"])
        if spec.saved_suffix == ".mat":
            stored = scipy.io.loadmat(io.BytesIO(saved))[spec.name]
        else:
            stored = np.asarray(Image.open(io.BytesIO(saved)))
        np.testing.assert_array_equal(stored, spec.to_saved(expected[spec.name]))
    assert body["truth"] == []


@pytest.mark.parametrize(
    ("payload", "name", "message"),
    [
        (b"just some text, no picture", "notes.txt", "notes.txt: not an image"),
        (b"", "empty.png", "empty.png: the file is empty"),
        (_png(_image(2))[:150], "cut.png", "cut.png: unreadable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "fake.png", "fake.png: "),
    ],
    ids=["not-an-image", "empty", "truncated", "corrupt"],
)
def test_bad_uploads_answer_one_line(client: TestClient, payload: bytes, name: str, message: str) -> None:
    answer = _upload(client, payload, name)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith(message) and "\n" not in error and "Traceback" not in error
    assert "tsn-serve-" not in error  # the temporary file's path never shows; the upload's name does


def test_huge_uploads_are_refused(model) -> None:
    small = TestClient(create_app(Showcase(model, size=SIZE, max_upload_bytes=4000, max_pixels=5000)))
    over_bytes = _upload(small, _image(3, 100, 100).tobytes() + b"x", "big.png")  # read, then refused
    assert over_bytes.status_code == 413 and "too large" in over_bytes.json()["error"]
    announced = _upload(small, bytes(200_000), "huge.png")  # refused by its Content-Length, before parsing
    assert announced.status_code == 413 and "too large" in announced.json()["error"]
    bomb = _upload(small, _png(np.zeros((100, 100, 3), np.uint8)), "bomb.png")  # small file, many pixels
    assert bomb.status_code == 400 and "decompression-bomb limit" in bomb.json()["error"]


def test_sixteen_bit_upload_is_predicted(client: TestClient, model) -> None:
    import cv2

    deep = (np.random.default_rng(4).random((40, 56, 3)) * 65535).astype(np.uint16)
    ok, encoded = cv2.imencode(".png", deep)
    assert ok
    answer = _upload(client, encoded.tobytes(), "deep.png")
    assert answer.status_code == 200, answer.text
    assert answer.json()["original_size"] == [40, 56]
    assert len(answer.json()["outputs"]) == len(model.task_specs)


def test_synthetic_scene_with_ground_truth(client: TestClient, model) -> None:
    body = client.get("/api/scene/5").json()
    assert [o["task"] for o in body["outputs"]] == list(model.task_specs)
    assert [t["task"] for t in body["truth"]] == list(model.task_specs)
    assert client.get("/api/scene/100000").json()["error"].startswith("scene 100000 does not exist")


def test_slider_frames_start_and_end_at_the_tasks_own_outputs(client: TestClient, model) -> None:
    image = _image(6, 64, 64)
    answer = client.post("/api/mix", files={"file": ("a.png", _png(image), "image/png")},
                         data={"start": "seg", "end": "normals", "steps": "5"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["start"], body["end"]) == ("semseg", "normals")
    assert [f["alpha"] for f in body["frames"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert body["frames"][0]["as_start"] != body["frames"][-1]["as_start"]
    # The mixtures {start: 1, end: 0} and {start: 0, end: 1} are the tasks' own codes: the same raw output as
    # the all-task forward pass, up to float32 rounding.
    showcase = Showcase(model, size=SIZE)
    item = showcase.pipeline.prepare(image)
    raw = showcase._decode_mixtures(item.tensor, [{"semseg": 1.0, "normals": 0.0}, {"semseg": 0.0, "normals": 1.0}])
    batch = item.tensor[None]
    with torch.inference_mode():
        direct = model(batch, ["semseg", "normals"])
    for index, task in enumerate(("semseg", "normals")):
        pooled = pool_channels(raw[index], model.task_specs[task].channels)
        assert_close_float32(pooled, direct[task], reduction=network_reductions(model), what=task)


def test_bad_slider_requests(client: TestClient) -> None:
    files = {"file": ("a.png", _png(_image(7)), "image/png")}
    unknown = client.post("/api/mix", files=files, data={"start": "semseg", "end": "nope"})
    assert unknown.status_code == 400 and "unknown task 'nope'" in unknown.json()["error"]
    steps = client.post("/api/mix", files=files, data={"start": "semseg", "end": "edges", "steps": "1"})
    assert steps.status_code == 400 and "2 to 101 positions" in steps.json()["error"]


def test_models_without_a_task_space_hide_the_slider() -> None:
    multi = tsn.create_model("multihead_r10t_synthetic").eval()
    client = TestClient(create_app(multi, size=SIZE))
    info = client.get("/api/info").json()
    assert info["task_space"] is False and "only a Task Switching Network" in info["task_space_note"]
    answer = client.post("/api/mix", files={"file": ("a.png", _png(_image(8)), "image/png")},
                         data={"start": "semseg", "end": "edges"})
    assert answer.status_code == 400 and "multi-head model" in answer.json()["error"]
    assert _upload(client, _png(_image(8))).status_code == 200


def test_concurrent_requests_do_not_mix_results(client: TestClient) -> None:
    payloads = [_png(_image(seed, 40 + 8 * seed, 64)) for seed in range(4)]
    alone = [_upload(client, payload).json() for payload in payloads]
    together: list[dict] = [{} for _ in payloads]

    def ask(index: int) -> None:
        together[index] = _upload(client, payloads[index]).json()

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [_comparable(answer) for answer in together] == [_comparable(answer) for answer in alone]


def _comparable(answer: dict) -> dict:
    """An answer with each .mat download replaced by its array (the file's header holds its creation time)."""
    for output in answer["outputs"]:
        download = output["download"]
        if download["filename"].endswith(".mat"):
            stored = scipy.io.loadmat(io.BytesIO(_decode_url(download["url"])))[output["task"]]
            download["url"] = stored.tobytes()
    return answer


def test_the_model_loads_once(tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsn.serving import engine

    checkpoint = save_checkpoint(tmp_path / "tiny.pt", model)
    loads: list[str] = []
    real_load = engine.load_model
    monkeypatch.setattr(engine, "load_model", lambda path, **kw: loads.append(str(path)) or real_load(path, **kw))
    client = TestClient(create_app(checkpoint, size=SIZE))
    for seed in range(3):
        assert _upload(client, _png(_image(seed))).status_code == 200
    assert client.get("/api/scene/1").status_code == 200
    assert loads == [str(checkpoint)]


# ------------------------------------------------------------------------------------------------ the launcher
def _finished_run(root: Path, name: str) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"x")
    (run / "metrics.json").write_text("{}")
    return run


def test_latest_demo_run(tmp_path: Path) -> None:
    assert launch.latest_demo_run(tmp_path / "missing") is None
    assert launch.latest_demo_run(tmp_path) is None
    older = _finished_run(tmp_path, "demo-20260101-100000")
    newer = _finished_run(tmp_path, "demo-20260102-090000")
    (tmp_path / "demo-20260103-080000" / "checkpoints").mkdir(parents=True)  # interrupted: no metrics.json
    assert launch.latest_demo_run(tmp_path) == newer
    (newer / "metrics.json").unlink()
    assert launch.latest_demo_run(tmp_path) == older


def test_run_input_size(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {preset: tsn_r10t_synthetic}\ndata: {dataset: synthetic, size: 96}\n")
    assert launch.run_input_size(run) == (96, 96)
    assert launch.run_input_size(run / "checkpoints" / "best.pt") == (96, 96)
    assert launch.run_input_size(tmp_path / "elsewhere.pt") is None


def test_serve_without_the_web_extra_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(TsnError, match=r"^tsn serve needs the web extra: pip install 'tsn\[serve\]'$"):
        launch.serve("any.pt")


def test_serve_refuses_a_taken_port_and_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TsnError, match=r"cannot listen on 127\.0\.0\.1"):
            launch.check_port("127.0.0.1", port)
    with pytest.raises(TsnError, match="use a port from 1 to 65535"):
        launch.check_port("127.0.0.1", 70000)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert main(["serve", "--checkpoint", str(tmp_path / "nope.pt"), "--port", str(port), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nope.pt does not exist" in error


def test_importing_tsn_and_the_command_loads_no_web_library() -> None:
    code = ("import sys, tsn, tsn.serving, tsn.serving.launch, tsn.commands.serve; "
            "print(json.dumps(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout) == []
