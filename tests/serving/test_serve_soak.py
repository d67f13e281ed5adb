"""A small soak of the page on loopback (benchmarks/serve_soak.py, whose full run is recorded in
benchmarks/results/serve_soak.json): a real ``tsn serve`` process, good and bad uploads mixed at a concurrency
above one, every good answer equal to the answer the same image gets alone, every bad one refused in one line,
and the server's resident memory bounded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

if any(importlib.util.find_spec(module) is None for module in ("fastapi", "uvicorn", "httpx", "multipart")):
    pytest.skip("the soak test needs the serve extra and httpx: pip install -e '.[test]'", allow_module_level=True)
if not Path("/proc/self/status").is_file():
    pytest.skip("the soak test reads the server's memory from /proc", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_soak.py"


def _soak_module():
    spec = importlib.util.spec_from_file_location("serve_soak", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_page_survives_a_small_soak() -> None:
    record = _soak_module().run_soak(requests=32, concurrency=4, warmup=8, seed=1)
    assert record["problems"] == []
    assert record["good"]["count"] > 0 and record["good"]["correct"] == record["good"]["count"]
    assert record["bad"]["count"] > 0 and record["bad"]["refused_in_one_line"] == record["bad"]["count"]
    assert set(record["bad"]["statuses"]) <= {400, 413, 422}
    # 32 requests must not grow the server by more than a fraction of its size: nothing is kept per request.
    assert record["server_memory_mb"]["growth"] < 150, record["server_memory_mb"]
    assert record["server_memory_mb"]["growth_second_half"] < 60, record["server_memory_mb"]
