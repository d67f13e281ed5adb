"""Peak memory and time of ``tsn predict``, ``tsn analyze`` and the page on a small image and on a PNG 1 pixel wide
and 5000 high (issue 22: the elongated image must cost at most 300 MB and 5 s more than a 100 x 75 one).

Each case runs in a fresh process (the whole command, imports included, as a user runs it); its peak resident
memory is the kernel's ``ru_maxrss`` of that process (what ``/usr/bin/time -v`` reports as "Maximum resident set
size"), its time the wall clock. The model is the paper's architecture (ResNet-18 TSN, PASCAL-Context's five
tasks) with random weights, at ``--size 64``, as in the issue. The page case posts the upload to the app through
FastAPI's TestClient in that process (no socket, the same route code).

    python benchmarks/bench_bounds.py [--repeats 2] [-o benchmarks/results/bounds_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE_SCRIPT = """
import sys
from fastapi.testclient import TestClient
from tsn.serving.app import create_app
client = TestClient(create_app(sys.argv[1], size=(64, 64)))
with open(sys.argv[2], "rb") as handle:
    answer = client.post("/api/predict", files={"file": ("upload.png", handle.read(), "image/png")})
assert answer.status_code == 200, answer.text
print(len(answer.content))
"""


def _measure(argv: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {error.strip()[-500:]}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 2)}


def _cases(work: Path, checkpoint: Path, image: Path) -> dict[str, list[str]]:
    tsn = [sys.executable, "-m", "tsn"]
    return {
        "predict": [*tsn, "predict", str(image), "--checkpoint", str(checkpoint), "-o", str(work / "predict"),
                    "--size", "64", "--workers", "0", "--no-progress"],
        "analyze": [*tsn, "analyze", "--checkpoint", str(checkpoint), "-o", str(work / "analyze"), "--path",
                    "semseg", "normals", "--steps", "7", "--image", str(image)],
        "page": [sys.executable, "-c", PAGE_SCRIPT, str(checkpoint), str(image)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/bounds_cpu.json"))
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from tsn.models import build_model, model_config
    from tsn.models.checkpoint import save_checkpoint
    from tsn.studies.throughput.machine import cpu_model
    from tsn.utils.io import atomic_write_json

    with tempfile.TemporaryDirectory(prefix="tsn-bench-bounds-") as folder:
        work = Path(folder)
        torch.manual_seed(0)
        checkpoint = save_checkpoint(work / "tsn_r18_pascal.pt",
                                     build_model(model_config("tsn_r18_pascal", pretrained=False)))
        rng = np.random.default_rng(0)
        images = {"100x75": work / "small.png", "1x5000": work / "line.png"}
        Image.fromarray(rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)).save(images["100x75"])
        Image.fromarray(rng.integers(0, 256, (5000, 1, 3), dtype=np.uint8)).save(images["1x5000"])
        runs: dict[str, dict[str, list[dict[str, float]]]] = {}
        for repeat in range(args.repeats):
            for image_name, image in images.items():
                for command, argv in _cases(work / f"{image_name}-{repeat}", checkpoint, image).items():
                    figures = _measure(argv)
                    runs.setdefault(command, {}).setdefault(image_name, []).append(figures)
                    print(f"{command:8s} {image_name:7s} {figures}", flush=True)
    summary = {}
    for command, by_image in runs.items():
        best = {name: {"peak_rss_mb": min(r["peak_rss_mb"] for r in rs), "seconds": min(r["seconds"] for r in rs)}
                for name, rs in by_image.items()}
        summary[command] = {
            **best,
            "extra_for_1x5000": {key: round(best["1x5000"][key] - best["100x75"][key], 2)
                                 for key in ("peak_rss_mb", "seconds")},
        }
    record = {
        "benchmark": "bench_bounds",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "note": "shared machine, other jobs running"},
        "model": "tsn_r18_pascal (random weights), --size 64",
        "repeats": args.repeats,
        "statistic": "minimum over repeats of each figure",
        "runs": runs,
        "summary": summary,
    }
    atomic_write_json(args.output, record)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
