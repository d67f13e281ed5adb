"""``hf-hub:ORG/NAME`` loads from a Hugging Face cache laid out exactly as huggingface_hub lays it out, offline; a
model that is not there is one line, at once. No test reaches the network: the endpoint is a closed loopback port."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tsn
from hub_cache import add_to_hub_cache, closed_port
from tsn.errors import TsnError
from tsn.hub import load_pretrained, save_pretrained

REPO = "tsn-lab/tsn-r10t-synthetic"


def _digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(5)
    return tsn.create_model("tsn_r10t_synthetic").eval()


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, model) -> tuple[Path, str]:
    """An ``HF_HOME`` whose ``hub`` cache holds :data:`REPO` at one commit, ``refs/main`` pointing to it."""
    home = tmp_path_factory.mktemp("hf_home")
    folder = save_pretrained(model, home.parent / "upload" / "tsn-r10t-synthetic")
    commit = add_to_hub_cache(home / "hub", REPO, folder)
    return home, commit


def _point_hub_at(monkeypatch, home: Path, *, offline: bool) -> None:
    """What HF_HOME, HF_HUB_OFFLINE and HF_ENDPOINT (a closed loopback port) set, patched where huggingface_hub keeps
    them (it reads them once, at its import)."""
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def offline_hub(hf_home, monkeypatch) -> Path:
    home, _ = hf_home
    _point_hub_at(monkeypatch, home, offline=True)
    return home


def test_the_cache_is_laid_out_as_huggingface_hub_lays_it_out(hf_home) -> None:
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    home, commit = hf_home
    report = scan_cache_dir(home / "hub")
    assert not report.warnings
    (repo,) = report.repos
    assert repo.repo_id == REPO and repo.repo_type == "model"
    (revision,) = repo.revisions
    assert revision.commit_hash == commit and revision.refs == frozenset({"main"})
    assert {f.file_name for f in revision.files} == {"README.md", "config.json", "model.safetensors"}
    weights = next(f for f in revision.files if f.file_name == "model.safetensors")
    assert weights.blob_path.name == hashlib.sha256(weights.file_path.read_bytes()).hexdigest()  # LFS etag
    cached = try_to_load_from_cache(REPO, "config.json", cache_dir=home / "hub")
    assert cached == str(home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit / "config.json")


def test_load_by_name_offline_is_bit_identical(offline_hub, hf_home, model) -> None:
    _, commit = hf_home
    for source in (f"hf-hub:{REPO}", f"hf-hub:{REPO}@main", f"hf-hub:{REPO}@{commit}"):
        loaded = tsn.load_model(source)
        assert _digest(loaded) == _digest(model) and not loaded.training, source


def test_a_missing_model_offline_is_one_line_at_once(offline_hub) -> None:
    load_pretrained(f"hf-hub:{REPO}")  # imports done: what is timed is the look-up
    for source in ("hf-hub:tsn-lab/no-such-model", f"hf-hub:{REPO}@v9"):
        started = time.perf_counter()
        with pytest.raises(TsnError) as error:
            tsn.load_model(source)
        elapsed = time.perf_counter() - started
        message = str(error.value)
        assert elapsed < 1.0, elapsed
        assert "\n" not in message and "HF_HUB_OFFLINE=1" in message and source in message
        assert str(offline_hub / "hub") in message  # says which cache it looked in


def test_a_repository_that_is_not_a_tsn_model_is_refused_before_its_weights(offline_hub, tmp_path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "bert", "hidden_size": 768}')
    add_to_hub_cache(offline_hub / "hub", "other-lab/bert-base", foreign)
    with pytest.raises(TsnError, match="not the config of a tsn pretrained folder") as error:
        tsn.load_model("hf-hub:other-lab/bert-base")
    assert "hf-hub:other-lab/bert-base" in str(error.value)


def test_online_but_unreachable_uses_the_cache_or_says_so(hf_home, monkeypatch, model, capfd) -> None:
    import huggingface_hub.utils._http as http

    home, _ = hf_home
    _point_hub_at(monkeypatch, home, offline=False)
    waits: list[float] = []
    monkeypatch.setattr(http.time, "sleep", waits.append)  # huggingface_hub retries 5 times, 23 s: not waited here
    assert _digest(tsn.load_model(f"hf-hub:{REPO}")) == _digest(model)  # the cached snapshot, as huggingface_hub does
    with pytest.raises(TsnError, match=r"cannot reach the Hub at http://127\.0\.0\.1:") as error:
        tsn.load_model("hf-hub:tsn-lab/no-such-model")
    assert "\n" not in str(error.value) and "HF_HUB_OFFLINE=1" in str(error.value)
    assert waits  # the endpoint was tried (and refused: nothing listens there)
    assert "Retrying" not in capfd.readouterr().err  # huggingface_hub's retry warnings do not precede the one line


def _environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return {**env, "HF_HOME": str(home), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "OMP_NUM_THREADS": "1",
            **extra}


def test_a_new_process_honours_hf_home_and_hf_hub_offline(hf_home, model) -> None:
    """The real thing: the environment variables alone, read by huggingface_hub at its import."""
    home, _ = hf_home
    code = ("import hashlib, sys, torch, tsn\n"
            "m = tsn.load_model(sys.argv[1])\n"
            "d = hashlib.sha256()\n"
            "[d.update(n.encode() + t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()) for n, t in "
            "m.state_dict().items()]\n"
            "print(d.hexdigest())\n")
    found = subprocess.run([sys.executable, "-c", code, f"hf-hub:{REPO}"], capture_output=True, text=True,
                           env=_environment(home, HF_HUB_OFFLINE="1"), timeout=300)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == _digest(model)


def test_the_command_line_says_it_in_one_line_and_writes_nothing(offline_hub, tmp_path, capsys) -> None:
    from tsn.cli import main

    assert main(["save-pretrained", "hf-hub:tsn-lab/absent", "-o", str(tmp_path / "never-written")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "HF_HUB_OFFLINE=1" in captured.err
    assert captured.err.startswith("tsn save-pretrained: error: hf-hub:tsn-lab/absent is not in the Hugging Face")
    assert not (tmp_path / "never-written").exists()


def test_a_partly_cached_model_offline_names_the_missing_file(offline_hub, hf_home) -> None:
    home, _ = hf_home
    upload = home.parent / "upload" / "tsn-r10t-synthetic"
    add_to_hub_cache(offline_hub / "hub", "tsn-lab/config-only", upload, files=("config.json",))
    with pytest.raises(TsnError, match=r"config-only: its model\.safetensors is not in the Hugging Face cache"):
        tsn.load_model("hf-hub:tsn-lab/config-only")
