"""Speed and MATLAB parity of the edge benchmark (tsn.metrics.edges) on the BSDS500 sample, on one CPU core.

Times one 481 x 321 image at 99 thresholds (BSDS protocol) with 1 and with 5 ground truths, and one image under the
NMS protocol (astmt, 101 thresholds). The sample PNGs hold only ~50 grey levels, so about a third of the 99
thresholded maps are distinct (a repeated map is not matched again); a "dense" variant (the prediction blurred by a
Gaussian of sigma 1 px, requantised to 0..255) has all 99 maps distinct, like a network's sigmoid output. Then it
scores the 5-image sample at 5 thresholds and compares ODS F, OIS F and AP with MATLAB's stored
``test_2/eval_bdry.txt``. Prints the figures and writes ``benchmarks/results/edges_cpu.json``.

    python benchmarks/bench_edges.py [--bsds-dir DIR] [--repeats 3]

The sample is read from ``$TSN_SHARED_DIR/benchmarks/bsds500_sample`` or ``<repo>/../shared/...`` (never copied
into the repository: its terms are research-only).
"""

from __future__ import annotations

import os

# One core, set before numpy / torch load their thread pools: the target is a single-core figure.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import skimage
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from tsn.errors import TsnError
from tsn.metrics.edges import (
    EdgeMetric,
    EdgeProtocol,
    bsds_thresholds,
    edge_counts,
    get_protocol,
    load_bsds_ground_truth,
)
from tsn.utils.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
RESULT_PATH = REPO / "benchmarks" / "results" / "edges_cpu.json"
TIMED_IMAGES = ("2018", "8068")
"""The two images of the spec's timing table (slowest and fastest of the sample)."""
SPEED_TARGET_S = 3.0


def default_bsds_dir() -> Path:
    shared = os.environ.get("TSN_SHARED_DIR")
    return (Path(shared) if shared else REPO.parent / "shared") / "benchmarks" / "bsds500_sample"


def load_case(bsds_dir: Path, image_id: str) -> tuple[np.ndarray, list[np.ndarray]]:
    png = bsds_dir / "png" / f"{image_id}.png"
    if not png.is_file():
        raise TsnError(f"BSDS sample prediction {png} not found; pass --bsds-dir <path to bsds500_sample>")
    return np.asarray(Image.open(png)), load_bsds_ground_truth(bsds_dir / "groundTruth" / f"{image_id}.mat")


def distinct_maps(image: np.ndarray, protocol: EdgeProtocol) -> int | None:
    """How many thresholds give a map different from the previous threshold's (None after NMS)."""
    if protocol.nms:
        return None
    maps = [np.packbits(image / 255.0 >= t).tobytes() for t in protocol.thresholds]
    return 1 + sum(a != b for a, b in zip(maps, maps[1:]))


def time_counts(pred: np.ndarray, gts: list[np.ndarray], protocol: str, repeats: int) -> dict[str, float]:
    """Best and median wall time, and best CPU time, of :func:`edge_counts` over ``repeats`` runs.

    On a machine shared with other jobs the wall time includes waiting for the core; the process CPU time is what
    one core spends on the work.
    """
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        edge_counts(pred, gts, protocol)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {
        "best_s": round(min(wall), 4),
        "median_s": round(statistics.median(wall), 4),
        "best_cpu_s": round(min(cpu), 4),
    }


def parity(bsds_dir: Path) -> dict[str, float]:
    """The BSDS protocol at 5 thresholds on the whole sample, against MATLAB's eval_bdry.txt."""
    reference = np.loadtxt(bsds_dir / "test_2" / "eval_bdry.txt")
    metric = EdgeMetric("bsds", thresholds=bsds_thresholds(5))
    for png in sorted((bsds_dir / "png").glob("*.png")):
        metric.update(*load_case(bsds_dir, png.stem))
    result = metric.compute()
    ours = {"odsF": result["odsF"], "oisF": result["oisF"], "AP": result["AP"]}
    matlab = {"odsF": float(reference[3]), "oisF": float(reference[6]), "AP": float(reference[7])}
    return {
        **{key: round(value, 6) for key, value in ours.items()},
        **{f"matlab_{key}": value for key, value in matlab.items()},
        **{f"delta_{key}": round(ours[key] - matlab[key], 6) for key in ours},
    }


def protocol_summary(name: str) -> dict[str, object]:
    """A protocol's fields, with its thresholds summarised as their count."""
    protocol = get_protocol(name)
    return {**protocol.to_dict(), "thresholds": len(protocol.thresholds)}


def machine_info() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bsds-dir", type=Path, default=default_bsds_dir(), help="the bsds500_sample folder")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (best and median reported)")
    parser.add_argument("--output", type=Path, default=RESULT_PATH, help="where to write the JSON figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    timings: dict[str, dict[str, float]] = {}
    for image_id in TIMED_IMAGES:
        pred, gts = load_case(args.bsds_dir, image_id)
        dense = gaussian_filter(pred / 255.0, 1.0)
        dense = (255 * dense / dense.max()).astype(np.uint8)
        cases = {
            "bsds_99thr_1gt": (gts[:1], "bsds"),
            "bsds_99thr_1gt_dense": (gts[:1], "bsds"),
            "bsds_99thr_5gt": (gts, "bsds"),
            "astmt_nms_101thr_1gt": (gts[:1], "astmt"),
        }
        for case, (truths, protocol) in cases.items():
            image = dense if case.endswith("dense") else pred
            distinct = distinct_maps(image, get_protocol(protocol))
            figures = time_counts(image, truths, protocol, args.repeats)
            timings[f"{image_id}/{case}"] = {
                "shape": list(image.shape), "ground_truths": len(truths), "distinct_maps": distinct, **figures
            }
            print(
                f"{image_id} {case:22s} {image.shape[0]}x{image.shape[1]}  {distinct or '-':>3} distinct maps  "
                f"wall best {figures['best_s']:.3f} s, median {figures['median_s']:.3f} s; "
                f"CPU best {figures['best_cpu_s']:.3f} s"
            )
    worst_1gt = max(v["best_s"] for k, v in timings.items() if "bsds_99thr_1gt" in k)
    worst_1gt_cpu = max(v["best_cpu_s"] for k, v in timings.items() if "bsds_99thr_1gt" in k)
    print(
        f"worst 1-GT / 99-threshold image (dense included): wall {worst_1gt:.3f} s, CPU {worst_1gt_cpu:.3f} s "
        f"(target <= {SPEED_TARGET_S} s)"
    )

    figures = parity(args.bsds_dir)
    print("BSDS parity (5 images, 5 GTs, 5 thresholds):")
    for key in ("odsF", "oisF", "AP"):
        matlab, delta = figures[f"matlab_{key}"], figures[f"delta_{key}"]
        print(f"  {key:4s} {figures[key]:.6f}  MATLAB {matlab:.6f}  delta {delta:+.1e}")
    record = {
        "benchmark": "edges_cpu",
        "threads": 1,
        "protocols": {name: protocol_summary(name) for name in ("bsds", "astmt")},
        "timings": timings,
        "worst_1gt_99thr_s": worst_1gt,
        "worst_1gt_99thr_cpu_s": worst_1gt_cpu,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "target_s": SPEED_TARGET_S,
        "meets_target_wall": worst_1gt <= SPEED_TARGET_S,
        "meets_target_cpu": worst_1gt_cpu <= SPEED_TARGET_S,
        "bsds_parity": figures,
        "parity_tolerance": 5e-4,
        "machine": machine_info(),
    }
    atomic_write_json(args.output, record)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TsnError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
