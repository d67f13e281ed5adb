"""Speed (old, uncertified and new path) and MATLAB parity of the edge benchmark (tsn.metrics.edges), on one CPU core.

Times one 481 x 321 image per case with the current :func:`edge_counts` ("new"), the same path without the
maximum-matching certificate ("uncertified": every hard component to the solver) and the first implementation
``edge_counts_reference`` of ``tests/edge_oracles.py`` ("old": one solver call on the whole pair graph per
threshold), alternating them in every repetition so that a machine shared with other jobs slows all alike. All
give identical counts (checked here on every case). Cases, for two BSDS images:

* ``mtl-survey_99thr_1gt_network`` (the target): the default PASCAL preset on a network-like map, a sigmoid of the
  blurred sample prediction plus smooth noise, above 0.01 on most of the image as a network's output is (the
  lowest thresholds give large blobs, the costly part);
* ``mtl-survey_99thr_1gt_dense``: the sample prediction blurred (sigma 1 px) and requantised, all 99 maps distinct;
* ``bsds_99thr_5gt``: the BSDS protocol on the sample PNG with its 5 annotators;
* ``astmt_nms_101thr_1gt``: the NMS protocol.

Then it scores the 5-image sample at 5 thresholds and compares ODS F, OIS F and AP with MATLAB's stored
``test_2/eval_bdry.txt``. Prints the figures and writes ``benchmarks/results/edges_cpu.json``. Pinned to one core
(``sched_setaffinity``, ``OMP_NUM_THREADS=1``); the default run takes about 3 minutes.

    taskset -c 0 python benchmarks/bench_edges.py [--bsds-dir DIR] [--repeats 3] [--baseline GIT_REV]

``--baseline REV`` adds a fourth path, "baseline": the matcher and thinning (``matching.py``, ``thinning.py``) of
git revision ``REV`` in the current per-threshold loop, to time a change against the committed code in one process.

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
import functools
import importlib.util
import itertools
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

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
from tsn.metrics.edges import counts as edge_counts_module
from tsn.utils.io import atomic_write_json

# The first implementation is a test oracle and lives with the tests (tests/edge_oracles.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import edge_oracles

REPO = Path(__file__).resolve().parents[1]
RESULT_PATH = REPO / "benchmarks" / "results" / "edges_cpu.json"
TIMED_IMAGES = ("2018", "8068")
"""The two images of the spec's timing table (slowest and fastest of the sample)."""
SPEED_TARGET_S = 0.5
"""Issue 12: seconds per image on one core, default preset, network-like dense map (the ``..._network`` case)."""
TARGET_CASE = "mtl-survey_99thr_1gt_network"


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
    return 1 + sum(a != b for a, b in itertools.pairwise(maps))


def _commit_of(revision: str) -> str:
    """The abbreviated commit id of a git revision of this repository."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", f"{revision}^{{commit}}"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        raise TsnError(f"unknown git revision {revision!r} ({error}); pass a commit, tag or branch") from None


def _module_at_revision(path: str, revision: str) -> ModuleType:
    """The file ``path`` of git revision ``revision``, imported as a stand-alone module (no package imports)."""
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{revision}:{path}"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise TsnError(f"cannot read {path} at git revision {revision!r}: {error}; pass an existing revision") from None
    folder = Path(tempfile.mkdtemp(prefix="bench_edges_"))
    file = folder / f"baseline_{Path(path).stem}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(file.stem, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline_counts(
    pred: np.ndarray, gts: list[np.ndarray], protocol: str, matching: ModuleType, thinning: ModuleType
) -> np.ndarray:
    """``counts._edge_counts`` (certificate on) with another revision's ``_Disc``, ``_TruthMatcher`` and thinning."""
    return edge_counts_module._edge_counts(
        pred, gts, protocol, matcher_type=matching._TruthMatcher, disc_type=matching._Disc, thin=thinning.thin_edges
    )


def time_paths(
    pred: np.ndarray, gts: list[np.ndarray], protocol: str, repeats: int, baseline: functools.partial | None = None
) -> dict[str, object]:
    """Wall (median, best) and CPU (median) time of every path, alternated in each repetition.

    On a machine shared with other jobs the wall time includes waiting for the core; the process CPU time is what
    one core spends on the work. Raises if the paths ever disagree.
    """
    paths = {
        "new": edge_counts,
        "uncertified": functools.partial(edge_counts_module._edge_counts, certify=False),
        "old": edge_oracles.edge_counts_reference,
    }
    if baseline is not None:
        paths["baseline"] = baseline
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    counts = {}
    for _ in range(repeats):
        for name, function in paths.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            counts[name] = function(pred, gts, protocol)
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    if not all(np.array_equal(counts[name], counts["old"]) for name in paths):
        raise TsnError(f"the new and the old edge counts differ ({protocol}); this is a bug, please report it")
    figures: dict[str, object] = {"identical_counts": True}
    for name in paths:
        figures[name] = {
            "median_s": round(statistics.median(wall[name]), 4),
            "best_s": round(min(wall[name]), 4),
            "median_cpu_s": round(statistics.median(cpu[name]), 4),
        }
    figures["speedup_median_cpu"] = round(figures["old"]["median_cpu_s"] / figures["new"]["median_cpu_s"], 2)
    figures["speedup_over_uncertified_median_cpu"] = round(
        figures["uncertified"]["median_cpu_s"] / figures["new"]["median_cpu_s"], 2
    )
    if baseline is not None:
        figures["speedup_over_baseline_median_cpu"] = round(
            figures["baseline"]["median_cpu_s"] / figures["new"]["median_cpu_s"], 2
        )
    return figures


def network_like(pred: np.ndarray) -> np.ndarray:
    """A sigmoid-like network output: the blurred prediction plus smooth noise (seeded), as a uint8 PNG array."""
    noise = gaussian_filter(np.random.default_rng(0).standard_normal(pred.shape), 2.0)
    logits = -4.0 + 14.0 * gaussian_filter(pred / 255.0, 1.0) + 4.5 * noise
    return (255 / (1 + np.exp(-logits))).astype(np.uint8)


def dense_levels(pred: np.ndarray) -> np.ndarray:
    """The prediction blurred by a 1-pixel Gaussian and requantised to 0..255: every threshold gives a new map."""
    dense = gaussian_filter(pred / 255.0, 1.0)
    return (255 * dense / dense.max()).astype(np.uint8)


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
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bsds-dir", type=Path, default=default_bsds_dir(), help="the bsds500_sample folder")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (best and median reported)")
    parser.add_argument("--output", type=Path, default=RESULT_PATH, help="where to write the JSON figures")
    parser.add_argument("--baseline", help="git revision whose matching.py / thinning.py to time as 'baseline'")
    args = parser.parse_args(argv)
    baseline = None
    if args.baseline:
        args.baseline = _commit_of(args.baseline)  # recorded as a commit: "HEAD" moves
        modules = [
            _module_at_revision(f"src/tsn/metrics/edges/{name}.py", args.baseline) for name in ("matching", "thinning")
        ]
        baseline = functools.partial(baseline_counts, matching=modules[0], thinning=modules[1])
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    timings: dict[str, dict[str, object]] = {}
    for image_id in TIMED_IMAGES:
        pred, gts = load_case(args.bsds_dir, image_id)
        cases = {
            TARGET_CASE: (network_like(pred), gts[:1], "mtl-survey"),
            "mtl-survey_99thr_1gt_dense": (dense_levels(pred), gts[:1], "mtl-survey"),
            "bsds_99thr_5gt": (pred, gts, "bsds"),
            "astmt_nms_101thr_1gt": (pred, gts[:1], "astmt"),
        }
        for case, (image, truths, protocol) in cases.items():
            figures = time_paths(image, truths, protocol, args.repeats, baseline)
            timings[f"{image_id}/{case}"] = {
                "shape": list(image.shape),
                "ground_truths": len(truths),
                "distinct_maps": distinct_maps(image, get_protocol(protocol)),
                **figures,
            }
            new, uncertified, old = figures["new"], figures["uncertified"], figures["old"]
            print(
                f"{image_id} {case:30s} CPU median new {new['median_cpu_s']:.3f} s | uncertified "
                f"{uncertified['median_cpu_s']:.3f} s | old {old['median_cpu_s']:.3f} s | wall median new "
                f"{new['median_s']:.3f} s (best {new['best_s']:.3f}) | "
                f"x{figures['speedup_over_uncertified_median_cpu']} over uncertified, "
                f"x{figures['speedup_median_cpu']} over old"
                + (
                    f" | baseline {figures['baseline']['median_cpu_s']:.3f} s, "
                    f"x{figures['speedup_over_baseline_median_cpu']} over it"
                    if baseline is not None
                    else ""
                )
            )
    target = [v for k, v in timings.items() if k.endswith(TARGET_CASE)]
    worst_wall = max(v["new"]["median_s"] for v in target)
    worst_cpu = max(v["new"]["median_cpu_s"] for v in target)
    print(
        f"target case ({TARGET_CASE}), worst image: new wall median {worst_wall:.3f} s, CPU {worst_cpu:.3f} s "
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
        "protocols": {name: protocol_summary(name) for name in ("mtl-survey", "bsds", "astmt")},
        "timings": timings,
        "target_case": TARGET_CASE,
        "target_worst_median_s": worst_wall,
        "target_worst_median_cpu_s": worst_cpu,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "target_s": SPEED_TARGET_S,
        "meets_target_wall": worst_wall <= SPEED_TARGET_S,
        "meets_target_cpu": worst_cpu <= SPEED_TARGET_S,
        "repeats": args.repeats,
        "baseline_revision": args.baseline,
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
