"""A bounded soak test of the page (``tsn serve``) on loopback: many requests at a fixed concurrency, good and bad
uploads mixed, every answer checked, latency and the server's resident memory recorded.

    python benchmarks/serve_soak.py         # 300 requests at concurrency 8 -> benchmarks/results/serve_soak.json
    python benchmarks/serve_soak.py --requests 60 --concurrency 4 -o /tmp/soak.json

The server is a real ``tsn serve`` process (uvicorn, its own interpreter) on 127.0.0.1 and a free port, serving
a checkpoint of the demo architecture (``tsn_r10t_synthetic``, random weights unless ``--checkpoint`` is given).
Before the timed requests, each good image is sent once, alone: that answer is the reference, and every answer to
the same image under concurrency must equal it exactly (no mixing of requests, no state kept between them). Bad
uploads (empty, random bytes, a truncated PNG, text, a PNG declaring 10^10 pixels, a form without the file) must
be refused with a 4xx status and a one-line error. The server's resident memory (``VmRSS``) is read after the
warm-up and after the last request; its growth is the figure that shows nothing accumulates per request.
tests/serving/test_serve_soak.py runs a small version of the same function.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import platform
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

RESULT = Path(__file__).resolve().parent / "results" / "serve_soak.json"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _declared_huge_png() -> bytes:
    """A 100 000 x 100 000 PNG header with one row of data: 10^10 pixels declared in under 100 bytes."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * 300)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", row) + _chunk(b"IEND", b"")


def good_images(seed: int = 0) -> dict[str, bytes]:
    """Photos of several shapes (landscape, portrait, square, odd sizes)."""
    rng = np.random.default_rng(seed)
    shapes = {"landscape.png": (48, 80), "portrait.png": (97, 31), "square.png": (64, 64), "odd.png": (75, 100)}
    return {name: _png(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) for name, shape in shapes.items()}


def bad_uploads(seed: int = 0) -> dict[str, bytes | None]:
    """Uploads the page must refuse in one line; None: a form without the file field."""
    rng = random.Random(seed)
    whole = _png(np.zeros((40, 40, 3), np.uint8))
    return {
        "empty.png": b"",
        "random.png": bytes(rng.randrange(256) for _ in range(2000)),
        "truncated.png": whole[: len(whole) // 2],
        "notes.txt": b"these are not the pixels you are looking for\n" * 20,
        "declared_huge.png": _declared_huge_png(),
        "no_file_field": None,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rss_mb(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def _tiny_checkpoint(folder: Path) -> Path:
    import torch

    from tsn.models import create_model
    from tsn.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(folder / "soak.pt", create_model("tsn_r10t_synthetic"))


@dataclass
class Answer:
    kind: str  # "good" or "bad"
    name: str
    status: int
    seconds: float
    problem: str | None  # None: the answer is what it must be


def _start_server(checkpoint: Path, size: int, threads: int, port: int) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tsn", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
               "--size", str(size), "--device", "cpu"]
    return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_until_up(client: Any, server: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"tsn serve exited: {server.stderr.read().decode(errors='replace')[-2000:]}")
        try:
            if client.get("/api/info").status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.3)
    raise RuntimeError("tsn serve did not answer within the timeout")


def _post(client: Any, name: str, payload: bytes | None) -> Any:
    if payload is None:
        return client.post("/api/predict", data={"image": "missing"})
    return client.post("/api/predict", files={"file": (name, payload, "application/octet-stream")})


def _canonical(body: dict[str, Any]) -> str:
    """The answer's content: pictures and downloads, a MATLAB download by its arrays (its header holds the time it
    was written, so its bytes differ from one request to the next)."""
    import scipy.io

    outputs = []
    for output in body.get("outputs", []):
        output = dict(output)
        download = dict(output.get("download", {}))
        if str(download.get("filename", "")).endswith(".mat"):
            data = scipy.io.loadmat(io.BytesIO(base64.b64decode(download["url"].split(",", 1)[1])))
            arrays = {k: np.asarray(v).tobytes().hex() for k, v in sorted(data.items()) if not k.startswith("__")}
            download["url"] = hashlib.sha256(json.dumps(arrays).encode()).hexdigest()
        output["download"] = download
        outputs.append(output)
    return json.dumps({"input": body.get("input"), "outputs": outputs}, sort_keys=True)


def _at_half(trace: list[tuple[int, float]], requests: int) -> float:
    """The RSS when half the requests were answered (the trace point nearest below it)."""
    return max((point for point in trace if point[0] <= max(1, requests // 2)), default=trace[0])[1]


def _percentiles(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(seconds)
    at = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000  # noqa: E731
    return {"p50_ms": round(at(0.5), 1), "p99_ms": round(at(0.99), 1), "max_ms": round(ordered[-1] * 1000, 1)}


def run_soak(checkpoint: Path | None = None, *, requests: int = 300, concurrency: int = 8, size: int = 64,
             bad_fraction: float = 0.3, threads: int = 1, warmup: int = 16, seed: int = 0) -> dict[str, Any]:
    """Serve ``checkpoint`` on loopback, send ``requests`` uploads at ``concurrency``; the record (see module)."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="tsn-soak-") as scratch:
        served = checkpoint or _tiny_checkpoint(Path(scratch))
        port = _free_port()
        server = _start_server(served, size, threads, port)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, limits=limits) as client:
                started = time.monotonic()
                _wait_until_up(client, server)
                startup_s = time.monotonic() - started
                good, bad = good_images(seed), bad_uploads(seed)
                reference = {}
                for name, payload in good.items():  # alone: the answer every concurrent one must equal
                    response = _post(client, name, payload)
                    if response.status_code != 200:
                        raise RuntimeError(f"the reference request for {name} failed: {response.text[:300]}")
                    reference[name] = _canonical(response.json())
                rng = random.Random(seed)
                for _ in range(warmup):  # allocator and thread pools settle before memory is read
                    name = rng.choice(sorted(good))
                    _post(client, name, good[name])
                memory_before = _rss_mb(server.pid)

                def one(index: int) -> Answer:
                    choice = random.Random(seed * 1_000_003 + index)
                    kind = "bad" if choice.random() < bad_fraction else "good"
                    name = choice.choice(sorted(bad if kind == "bad" else good))
                    payload = (bad if kind == "bad" else good)[name]
                    begin = time.perf_counter()
                    response = _post(client, name, payload)
                    elapsed = time.perf_counter() - begin
                    problem = None
                    if kind == "good":
                        if response.status_code != 200:
                            problem = f"status {response.status_code}: {response.text[:200]}"
                        elif _canonical(response.json()) != reference[name]:
                            problem = "the answer differs from the one given to the same image alone"
                    else:
                        error = response.json().get("error") if response.headers.get("content-type", "").startswith(
                            "application/json") else None
                        if not 400 <= response.status_code < 500:
                            problem = f"status {response.status_code} for a bad upload"
                        elif not isinstance(error, str) or "\n" in error:
                            problem = f"the refusal is not one line: {response.text[:200]}"
                    return Answer(kind, name, response.status_code, elapsed, problem)

                done: list[Answer] = []
                trace: list[tuple[int, float]] = []  # (requests answered, server RSS MB) at each quarter

                lock = threading.Lock()

                def counted(index: int) -> Answer:
                    answer = one(index)
                    with lock:
                        done.append(answer)
                        if len(done) in quarters:
                            trace.append((len(done), round(_rss_mb(server.pid)["VmRSS"], 1)))
                    return answer

                quarters = {max(1, requests * k // 4) for k in (1, 2, 3)}
                begin = time.monotonic()
                with ThreadPoolExecutor(concurrency) as pool:
                    answers = list(pool.map(counted, range(requests)))
                wall = time.monotonic() - begin
                memory_after = _rss_mb(server.pid)
                trace.append((requests, round(memory_after["VmRSS"], 1)))
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    from tsn.studies.throughput.machine import cpu_model

    good_answers = [a for a in answers if a.kind == "good"]
    bad_answers = [a for a in answers if a.kind == "bad"]
    problems = [f"{a.kind} {a.name}: {a.problem}" for a in answers if a.problem]
    return {
        "benchmark": "serve_soak",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg")
                    else None},
        "settings": {"requests": requests, "concurrency": concurrency, "size": size, "bad_fraction": bad_fraction,
                     "server_threads": threads, "warmup": warmup, "seed": seed,
                     "model": "tsn_r10t_synthetic, random weights" if checkpoint is None else str(checkpoint)},
        "startup_seconds": round(startup_s, 1),
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(requests / wall, 2),
        "good": {"count": len(good_answers), "correct": sum(a.problem is None for a in good_answers),
                 **_percentiles([a.seconds for a in good_answers])},
        "bad": {"count": len(bad_answers), "refused_in_one_line": sum(a.problem is None for a in bad_answers),
                "statuses": sorted({a.status for a in bad_answers}), **_percentiles([a.seconds for a in bad_answers])},
        "server_memory_mb": {"rss_before": round(memory_before["VmRSS"], 1),
                             "rss_after": round(memory_after["VmRSS"], 1),
                             "growth": round(memory_after["VmRSS"] - memory_before["VmRSS"], 1),
                             "growth_second_half": round(memory_after["VmRSS"] - _at_half(trace, requests), 1),
                             "trace": [{"answered": n, "rss": rss} for n, rss in sorted(trace)],
                             "peak": round(memory_after["VmHWM"], 1)},
        "problems": problems[:20],
    }



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to serve (default: a random tsn_r10t_synthetic)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="the page's network input side (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (default 1)")
    parser.add_argument("-o", "--output", type=Path, default=RESULT)
    args = parser.parse_args()
    record = run_soak(args.checkpoint, requests=args.requests, concurrency=args.concurrency, size=args.size,
                      threads=args.threads)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("good", "bad", "server_memory_mb", "requests_per_second")}, indent=2))
    print(f"wrote {args.output}")
    return 0 if not record["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
