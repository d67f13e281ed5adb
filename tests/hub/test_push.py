"""``tsn push`` refuses cleanly, in one line and with exit status 2, without a token, offline, or with nothing to
reach; it never touches the network in doing so. The Hub endpoint is a loopback socket this test owns: it proves
that no connection was attempted, or it is a closed port that refuses at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tsn
from hub_cache import closed_port
from tsn.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return tsn.save_pretrained(tsn.create_model("tsn_r10t_synthetic"), tmp_path_factory.mktemp("push") / "model")


def _push(folder: Path, home: Path, endpoint: str, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return subprocess.run(
        [sys.executable, "-m", "tsn", "push", str(folder), "tsn-lab/tiny", *extra], capture_output=True, text=True,
        timeout=300, env={**clean, "HF_HOME": str(home), "HF_ENDPOINT": endpoint, "OMP_NUM_THREADS": "1", **env},
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("tsn push: error: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_without_a_token_push_refuses_before_any_connection(folder: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hub:
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        hub.setblocking(False)
        result = _push(folder, tmp_path / "hf_home", f"http://127.0.0.1:{hub.getsockname()[1]}")
        with pytest.raises(BlockingIOError):
            hub.accept()  # nobody connected: the token check came before any request
    _assert_one_line(result, "no Hugging Face token", "hf auth login", "HF_TOKEN")


def test_offline_push_refuses(folder: Path, monkeypatch, capsys) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets when huggingface_hub loads
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert main(["push", str(folder), "tsn-lab/tiny"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "HF_HUB_OFFLINE=1" in captured.err


def test_an_unreachable_hub_is_one_line(folder: Path, monkeypatch, capsys) -> None:
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{closed_port()}"  # what HF_ENDPOINT sets when huggingface_hub loads
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert main(["push", str(folder), "tsn-lab/tiny"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"tsn push: error: cannot reach the Hub at {endpoint}")


@pytest.mark.parametrize("repo", ["tsn-lab/tiny", "not a repo", "tsn-lab/tiny@v1"])
def test_a_folder_that_is_not_a_model_or_a_bad_name_is_refused_first(tmp_path: Path, capsys, repo: str) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("hello\n")
    assert main(["push", str(tmp_path / "notes"), repo]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("is not a pretrained folder" in err or "ORG/NAME" in err or "--revision" in err)


def test_push_creates_the_repository_and_uploads_the_four_files(folder: Path, monkeypatch, capsys) -> None:
    """The calls into huggingface_hub, recorded instead of sent (its HTTP side is huggingface_hub's own tests')."""
    import huggingface_hub
    from huggingface_hub import constants

    calls: list[tuple[str, dict]] = []

    class RecordingApi:
        def __init__(self, **kwargs) -> None:
            calls.append(("init", kwargs))

        def create_repo(self, repo_id: str, **kwargs) -> None:
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def create_branch(self, repo_id: str, **kwargs) -> None:
            calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return type("CommitInfo", (), {"commit_url": "http://127.0.0.1/tsn-lab/tiny/commit/0123"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert main(["push", str(folder), "tsn-lab/tiny", "--private", "--revision", "v1", "--message", "first"]) == 0
    assert "http://127.0.0.1/tsn-lab/tiny/commit/0123" in capsys.readouterr().out
    names = [name for name, _ in calls]
    assert names == ["init", "create_repo", "create_branch", "upload_folder"]
    assert calls[0][1]["token"] == "hf_not_a_real_token"
    assert calls[1][1] == {"repo_id": "tsn-lab/tiny", "private": True, "exist_ok": True}
    upload = calls[3][1]
    assert upload["folder_path"] == str(folder) and upload["revision"] == "v1" and upload["commit_message"] == "first"
    assert sorted(upload["allow_patterns"]) == ["README.md", "config.json", "evaluation.json", "model.safetensors"]
