"""Shared test setup: ``tests/`` on ``sys.path`` (for ``fixture_datasets``) and the fixture-dataset fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixture_datasets import make_nyud_fixture, make_pascal_fixture


@pytest.fixture
def pascal_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fixture ``PASCAL_MT`` folder (6 train + 4 val); caches go to ``tmp_path``, never to the home folder."""
    monkeypatch.setenv("TSN_CACHE_DIR", str(tmp_path / "cache"))
    return make_pascal_fixture(tmp_path / "data")


@pytest.fixture
def nyud_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fixture ``NYUD_MT`` folder (6 train + 4 val); caches go to ``tmp_path``, never to the home folder."""
    monkeypatch.setenv("TSN_CACHE_DIR", str(tmp_path / "cache"))
    return make_nyud_fixture(tmp_path / "data")


@pytest.fixture
def one_thread_private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """One torch thread (small end-to-end runs go faster without a thread team) and a private cache folder."""
    import torch

    monkeypatch.setenv("TSN_CACHE_DIR", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
