"""Property-based fuzzing on a fixed budget: random bytes and random structures into config loading, image
decoding, the checkpoint reader and the page's upload route give a result or a one-line :class:`TsnError`,
never another exception (issue 22).

Derandomized (the same examples on every run, so a failure reproduces and CI cannot flake), no example database
written, a bounded number of examples per property and a deadline per example: the whole file takes well under a
minute on two cores.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tsn.errors import TsnError
from tsn.models import ModelConfig, create_model
from tsn.models.checkpoint import FORMAT, load_model, read_checkpoint, save_checkpoint
from tsn.training.train_config import DataConfig, OptimConfig, SchedulerConfig, TrainConfig, ValidationConfig
from tsn.training.train_config_loading import apply_overrides, load_config
from tsn.utils.parsing import parse_json, parse_yaml

FUZZ = settings(
    derandomize=True, database=None, deadline=timedelta(seconds=20), max_examples=60, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
SMALL = settings(FUZZ, max_examples=20)


def _one_line_or_result(call: Callable[[], Any]) -> Any:
    """``call()``'s result, or None when it raised a one-line TsnError; any other exception fails the test."""
    try:
        return call()
    except TsnError as error:
        message = str(error)
        assert message and "\n" not in message and "Traceback" not in message, repr(message)
        return None


# ------------------------------------------------------------------------------------------------- structures

SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=12))
TRAIN_KEYS = [field.name for field in dataclasses.fields(TrainConfig)]
SECTION_KEYS = sorted({f.name for section in (ModelConfig, DataConfig, OptimConfig, SchedulerConfig, ValidationConfig)
                       for f in dataclasses.fields(section)})


def _structures(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), children, max_size=5),
        max_leaves=24,
    )


TRAIN_CONFIGS = st.dictionaries(st.sampled_from(TRAIN_KEYS), _structures(SECTION_KEYS), max_size=6)
MODEL_CONFIGS = st.dictionaries(
    st.sampled_from([f.name for f in dataclasses.fields(ModelConfig)]) | st.text(max_size=6),
    st.sampled_from(["tsn", "resnet10t", "semseg", "instance", "batch"]) | _structures(["semseg", "edges"]),
    max_size=8,
)


# ---------------------------------------------------------------------------------------------- config loading


@FUZZ
@given(data=TRAIN_CONFIGS, overrides=st.lists(st.text(max_size=30), max_size=3))
def test_random_config_structures_load_or_fail_in_one_line(data, overrides) -> None:
    _one_line_or_result(lambda: load_config(data, overrides))


@FUZZ
@given(base=st.sampled_from(["tsn_r10t_synthetic", "single_r10t_synthetic.semseg"]),
       key=st.sampled_from(["optim.lr", "model", "model.tasks", "data.input_size", "epochs", "loss_weights.semseg",
                            "schedule", "callbacks", "model.decoder_channels", "x.y"]),
       value=st.text(max_size=40))
def test_random_overrides_of_a_preset_load_or_fail_in_one_line(base, key, value) -> None:
    _one_line_or_result(lambda: load_config(base, [f"{key}={value}"]))


@FUZZ
@given(text=st.binary(max_size=400) | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_config_files_load_or_fail_in_one_line(tmp_path_factory, text) -> None:
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_bytes(text)
    _one_line_or_result(lambda: load_config(path))


@FUZZ
@given(structure=_structures(["a", "b"]), depth=st.integers(0, 80))
def test_yaml_and_json_parsers_bound_depth_and_fail_in_one_line(structure, depth) -> None:
    text = json.dumps(structure, default=str)
    nested = "[" * depth + text + "]" * depth
    _one_line_or_result(lambda: parse_yaml(nested, "fuzz"))
    _one_line_or_result(lambda: parse_json(nested, "fuzz"))
    _one_line_or_result(lambda: apply_overrides({}, [f"a.b={nested}"]))


# ---------------------------------------------------------------------------------------------- image decoding


def _encoded(mode: str, size: tuple[int, int], fmt: str, seed: int) -> bytes:
    array = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
    image = Image.fromarray(array, "RGBA").convert(mode) if mode not in ("I;16", "F", "I") else \
        Image.fromarray(array[..., 0].astype({"I;16": np.uint16, "F": np.float32, "I": np.int32}[mode]))
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF" if mode in ("I", "F") else fmt)  # PNG has no 32-bit modes
    return buffer.getvalue()


IMAGES = st.builds(
    _encoded,
    st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F"]),
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    st.sampled_from(["PNG", "TIFF"]),
    st.integers(0, 2**16),
)


def _mutated(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    buffer = bytearray(data)
    for position, value in flips:
        buffer[position % len(buffer)] = value
    return bytes(buffer[:cut] if cut else buffer)


@FUZZ
@given(payload=st.binary(max_size=2000)
       | st.builds(_mutated, IMAGES, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
                   st.none() | st.integers(1, 400))
       | IMAGES,
       target=st.none() | st.tuples(st.integers(1, 96), st.integers(1, 96)))
def test_random_image_bytes_decode_or_fail_in_one_line(payload, target) -> None:
    from tsn.data.images import decode_image

    decoded = _one_line_or_result(lambda: decode_image(payload, target_size=target, name="upload"))
    if decoded is not None:
        assert decoded.pixels.ndim == 3 and decoded.pixels.shape[2] == 3 and decoded.pixels.dtype == np.uint8


# ---------------------------------------------------------------------------------------------- checkpoint reader


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("fuzz_checkpoint")
    model = create_model("tsn_r10t_synthetic", decoder_channels=(8, 8, 8, 8, 8), latent_dim=8, n_fc=1)
    return {suffix: save_checkpoint(folder / f"tiny{suffix}", model).read_bytes() for suffix in (".pt", ".safetensors")}


@FUZZ
@given(suffix=st.sampled_from([".pt", ".safetensors", ".pth"]),
       data=st.binary(max_size=600), prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", struct.pack("<Q", 40)]))
def test_random_bytes_are_never_read_as_a_checkpoint(tmp_path_factory, suffix, data, prefix) -> None:
    path = tmp_path_factory.mktemp("ckpt") / f"model{suffix}"
    path.write_bytes(prefix + data)
    assert _one_line_or_result(lambda: read_checkpoint(path)) is None


@SMALL
@given(suffix=st.sampled_from([".pt", ".safetensors"]),
       flips=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.none() | st.integers(1, 10**6))
def test_damaged_checkpoints_load_or_fail_in_one_line(tmp_path_factory, checkpoint_bytes, suffix, flips,
                                                      cut) -> None:
    path = tmp_path_factory.mktemp("damaged") / f"model{suffix}"
    path.write_bytes(_mutated(checkpoint_bytes[suffix], flips, cut))
    model = _one_line_or_result(lambda: load_model(path))
    if model is not None:  # what loads is usable: finite weights
        assert all(torch.isfinite(value).all() for value in model.state_dict().values() if value.is_floating_point())


@SMALL
@given(config=MODEL_CONFIGS, keep_weights=st.booleans())
def test_random_stored_configs_load_or_fail_in_one_line(tmp_path_factory, checkpoint_bytes, config,
                                                        keep_weights) -> None:
    folder = tmp_path_factory.mktemp("stored")
    original = torch.load(io.BytesIO(checkpoint_bytes[".pt"]), weights_only=True)
    payload = {"format": FORMAT, "format_version": 1, "config": {**original["config"], **config},
               "state_dict": original["state_dict"] if keep_weights else {"w": torch.zeros(2)}}
    torch.save(payload, folder / "model.pt")
    _one_line_or_result(lambda: load_model(folder / "model.pt"))


# -------------------------------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from tsn.serving.app import create_app

    torch.manual_seed(0)
    model = create_model("tsn_r10t_synthetic", decoder_channels=(8, 8, 8, 8, 8)).eval()
    return TestClient(create_app(model, size=(64, 64)), raise_server_exceptions=False)


def _page_answer(response) -> dict[str, Any]:
    assert response.status_code in (200, 400, 413, 422), (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code != 200:
        assert isinstance(body.get("error"), str) and "\n" not in body["error"], body
    return body


@SMALL
@given(payload=st.binary(max_size=1500) | IMAGES
       | st.builds(_mutated, IMAGES, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
                   st.none() | st.integers(1, 300)),
       name=st.text(max_size=40))
def test_the_upload_route_answers_or_refuses_in_one_line(client, payload, name) -> None:
    response = client.post("/api/predict", files={"file": (name or "x", payload, "application/octet-stream")})
    body = _page_answer(response)
    if response.status_code == 200:
        assert body["outputs"], body.keys()


@SMALL
@given(start=st.sampled_from(["semseg", "edges"]) | st.text(max_size=12),
       end=st.sampled_from(["semseg", "edges", "normals"]) | st.text(max_size=12),
       steps=st.integers(-5, 10**6).map(str) | st.text(max_size=6))
def test_the_mixing_route_answers_or_refuses_in_one_line(client, start, end, steps) -> None:
    payload = _encoded("RGB", (20, 16), "PNG", 0)
    response = client.post("/api/mix", files={"file": ("x.png", payload, "image/png")},
                           data={"start": start, "end": end, "steps": steps})
    _page_answer(response)


def test_the_fuzz_budget_is_fixed() -> None:
    """The budget this file runs on (a change here is a change of the suite's cost)."""
    assert FUZZ.max_examples == 60 and SMALL.max_examples == 20 and FUZZ.derandomize and FUZZ.database is None
