"""Speed of PASCAL-Context loading + the TSNs training transforms at 512x512, against the paper model's step time.

Run: ``python benchmarks/bench_loading.py`` (about 2 minutes on 2 cores). Builds a fixture PASCAL_MT whose images
have the real size (500 x 375), then measures images/s of a DataLoader (batch 4) with 0 (main process), 1 and 2
workers for three cases: all five tasks decoded per sample with ``tsns_train``, one task (semseg, the way TSNs
trains: one single-task loader per task) with ``tsns_train``, and all five tasks with ``eval``. Then it times one
training step of the paper model (TSN, ResNet-18, 512x512, one task per batch, Adam) on this CPU, so the two
rates can be compared: loading is a bottleneck only if it delivers fewer images/s than the model consumes.
Writes ``benchmarks/results/loading_cpu.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy is imported
    os.environ[_var] = "1"

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixture_datasets import make_pascal_fixture
from tsn.data import PascalContext, build_transforms, collate
from tsn.utils.io import atomic_write_json

RESULT = Path(__file__).resolve().parent / "results" / "loading_cpu.json"
REAL_SIZE = (375, 500)  # (H, W) of a typical PASCAL image
BATCH = 4


def loader_rate(dataset: PascalContext, workers: int, images: int) -> dict[str, float]:
    """Images/s (wall clock) of a DataLoader over ``images`` samples, after one warm-up pass."""
    order = [i % len(dataset) for i in range(images)]
    loader = DataLoader(dataset, batch_size=BATCH, sampler=order, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0)
    for _ in loader:  # warm-up: worker start, imports, first-use caches
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    seconds = time.perf_counter() - start
    return {"images_per_s": round(images / seconds, 2), "ms_per_image": round(1000 * seconds / images, 1)}


def model_step(batch: int, steps: int) -> dict[str, float] | str:
    """Seconds per training step (forward one task, CE loss, backward, Adam) of the paper model, on all cores."""
    try:
        from tsn.models import create_model
    except ImportError as error:
        return f"model unavailable: {error}"
    torch.set_num_threads(os.cpu_count() or 1)
    model = create_model("tsn_r18_pascal").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    image = torch.randn(batch, 3, 512, 512)
    target = torch.randint(0, 21, (batch, 512, 512))

    def step() -> None:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(image, "semseg"), target, ignore_index=255)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    torch.set_num_threads(1)
    return {"batch": batch, "s_per_step": round(seconds, 2), "images_per_s": round(batch / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="images per measurement (default: 48)")
    parser.add_argument("--model-steps", type=int, default=2, help="timed model steps (0: skip the model)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # one thread per loading process, as in a DataLoader worker

    cases = {
        "all_tasks_tsns_train": (None, "tsns_train"),
        "semseg_tsns_train": (["semseg"], "tsns_train"),
        "all_tasks_eval": (None, "eval"),
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["TSN_CACHE_DIR"] = str(Path(folder) / "cache")
        root = make_pascal_fixture(Path(folder) / "data", size=REAL_SIZE)
        for name, (tasks, kind) in cases.items():
            dataset = PascalContext(root, ["train", "val"], tasks=tasks,
                                    transform=build_transforms(kind, size=(512, 512), seed=0))
            results[name] = {}
            for workers in (0, 1, 2):
                results[name][f"workers_{workers}"] = rate = loader_rate(dataset, workers, args.images)
                print(f"{name:24s} workers={workers}: {rate['images_per_s']:6.2f} images/s "
                      f"({rate['ms_per_image']} ms/image)")
    model = model_step(batch=2, steps=args.model_steps) if args.model_steps > 0 else "skipped"
    if isinstance(model, dict):
        print(f"paper model (TSN R18, 512x512, batch 2) training step: {model['s_per_step']} s "
              f"= {model['images_per_s']} images/s on {os.cpu_count()} CPU threads")
    report = {
        "benchmark": "PASCAL_MT loading + transforms at 512x512, fixture images of 500x375, DataLoader batch 4",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "opencv": cv2.__version__,
            "cpu_count": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
        },
        "images_per_measurement": args.images,
        "loading": results,
        "paper_model_training_step_cpu": model,
    }
    atomic_write_json(RESULT, report)
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
