"""Speed of the synthetic scene generator on one CPU core, and of its split cache.

Run: ``python benchmarks/bench_synthetic.py`` (about 30 s). Prints the figures and writes
``benchmarks/results/synthetic_cpu.json``. Targets (synthetic-benchmark.md): at least 200 images/s at 64x64 and
50 images/s at 128x128, all six tasks included. Both wall-clock and process CPU time are reported: on a shared
machine the CPU-time rate is the one-core figure, the wall-clock rate what a user waits.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy is imported
    os.environ[_var] = "1"

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tsn.data.synthetic import GENERATOR_VERSION, SyntheticScenes, render_scene
from tsn.utils.io import atomic_write_json

TARGETS = {64: 200.0, 128: 50.0}
RESULT = Path(__file__).resolve().parent / "results" / "synthetic_cpu.json"


def render_rate(size: int, count: int, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` images/s rendering scenes ``0..count-1`` of the train split at ``size``."""
    for index in range(10):  # warm-up: imports, caches
        render_scene(0, "train", index, size)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for index in range(count):
            render_scene(0, "train", index, size)
        wall.append(count / (time.perf_counter() - t0))
        cpu.append(count / (time.process_time() - c0))
    return {"images_per_s_wall": round(max(wall), 1), "images_per_s_cpu": round(max(cpu), 1),
            "ms_per_image_cpu": round(1000.0 / max(cpu), 3), "images": count, "repeats": repeats}


def cache_times(size: int, length: int) -> dict[str, float]:
    """Seconds to render and store a split on one worker, then to load it back, and the file size."""
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        dataset = SyntheticScenes("val", size=size, length=length, cache_root=folder, workers=1)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        SyntheticScenes("val", size=size, length=length, cache_root=folder)
        load = time.perf_counter() - t0
        assert dataset.cache_path is not None
        megabytes = dataset.cache_path.stat().st_size / 1e6
    return {"size": size, "images": length, "build_s": round(build, 3), "load_s": round(load, 3),
            "file_mb": round(megabytes, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="scenes per timing at 64 px (a quarter at 128)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rates = {}
    for size in TARGETS:
        count = args.count if size == 64 else max(1, args.count // 4)
        rates[str(size)] = {**render_rate(size, count, args.repeats), "target_images_per_s": TARGETS[size]}
        rates[str(size)]["meets_target"] = rates[str(size)]["images_per_s_cpu"] >= TARGETS[size]
        print(f"{size:>4} px: {rates[str(size)]['images_per_s_cpu']:7.1f} img/s CPU, "
              f"{rates[str(size)]['images_per_s_wall']:7.1f} img/s wall (target {TARGETS[size]:.0f})")
    cache = cache_times(64, 300)
    print(f"cache: 300 scenes at 64 px built in {cache['build_s']:.2f} s on one worker, "
          f"loaded in {cache['load_s']:.3f} s, {cache['file_mb']:.1f} MB")

    result = {
        "benchmark": "synthetic scene generation, one core, all six tasks",
        "generator_version": GENERATOR_VERSION,
        "machine": {
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "render": rates,
        "cache": cache,
    }
    atomic_write_json(RESULT, result)
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
