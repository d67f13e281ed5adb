"""Setup shared by the end-to-end training tests (test_training.py, test_partial_labels.py), which opt in with
``pytestmark = pytest.mark.usefixtures("one_thread", "synthetic_cache")``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Other test processes share the cores; one thread each avoids oversubscription (and its 10x slow-downs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One scene cache per module (the scenes render once), never the home folder."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TSN_CACHE_DIR", str(folder))
        yield folder
