"""Scoring a folder of saved edge predictions on all cores, with per-image counts cached so that an
interrupted run resumes."""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from tsn.errors import TsnError
from tsn.metrics.edges.counts import edge_counts, summarize_edge_counts
from tsn.metrics.edges.protocols import EdgeProtocol, get_protocol
from tsn.utils.io import atomic_write
from tsn.utils.processes import multiprocessing_pool
from tsn.utils.progress import progress_enabled

GroundTruthLoader = Callable[[str], "np.ndarray | list[np.ndarray]"]
"""Returns the boundary map(s) of an image id; see :func:`evaluate_edge_folder`."""


def _read_prediction(path: Path) -> np.ndarray:
    """A saved edge prediction: a single-channel 8-bit PNG."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (OSError, ValueError) as error:
        raise TsnError(f"cannot read edge prediction {path}: {error}; re-save it as an 8-bit grayscale PNG") from None
    if array.ndim != 2 or array.dtype != np.uint8:
        raise TsnError(
            f"edge prediction {path} has shape {array.shape} and dtype {array.dtype}; expected an 8-bit grayscale PNG"
        )
    return array


def _source_stamp(path: Path) -> str:
    """Size and modification time of a prediction: cached counts of an overwritten PNG are recomputed."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _load_cached(path: Path, fingerprint: str, stamp: str, n_thresholds: int) -> np.ndarray | None:
    """Counts cached for this protocol and this very prediction file, or None (missing, stale or corrupt)."""
    try:
        with np.load(path) as cached:
            if str(cached["protocol"]) != fingerprint or str(cached["source"]) != stamp:
                return None
            counts = cached["counts"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    return counts if counts.shape == (n_thresholds, 4) else None


def _image_job(job: tuple[str, Path, GroundTruthLoader, EdgeProtocol, Path | None]) -> tuple[str, np.ndarray]:
    """Counts of one image of a folder run, from the cache when possible (runs in a worker process)."""
    image_id, pred_path, gt_loader, protocol, cache_path = job
    stamp = _source_stamp(pred_path)
    if cache_path is not None:
        cached = _load_cached(cache_path, protocol.fingerprint(), stamp, len(protocol.thresholds))
        if cached is not None:
            return image_id, cached
    try:
        counts = edge_counts(_read_prediction(pred_path), gt_loader(image_id), protocol)
    except TsnError as error:
        raise TsnError(f"image {image_id}: {error}") from None
    if cache_path is not None:
        with atomic_write(cache_path) as handle:
            np.savez(handle, counts=counts, protocol=protocol.fingerprint(), source=stamp)
    return image_id, counts


def evaluate_edge_folder(
    pred_dir: str | os.PathLike[str],
    gt_loader: GroundTruthLoader,
    ids: Sequence[str],
    protocol: str | EdgeProtocol = "mtl-survey",
    workers: int | None = os.cpu_count(),
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the PNG predictions ``<pred_dir>/<id>.png`` of ``ids`` against ``gt_loader(id)``, on all cores.

    ``gt_loader`` returns the image's boundary map (or a list of them); with ``workers > 1`` it must be picklable
    (a module-level function or a ``functools.partial`` of one). Per-image counts are cached as
    ``<cache_dir>/<id>.npz`` (written atomically, keyed by the protocol and the PNG's size and time), so a
    rerun after an interruption only evaluates the missing images. Returns :func:`summarize_edge_counts`'s dict.
    """
    protocol = get_protocol(protocol)
    ids = list(ids)
    if not ids:
        raise TsnError("no image id to evaluate; pass the ids of the edge predictions to score")
    pred_root = Path(pred_dir)
    missing = [pred_root / f"{image_id}.png" for image_id in ids if not (pred_root / f"{image_id}.png").is_file()]
    if missing:
        raise TsnError(
            f"missing edge prediction {missing[0]} ({len(missing)} of {len(ids)} missing); "
            "save a PNG for every image id before evaluating"
        )
    cache_root = Path(cache_dir) if cache_dir is not None else None
    jobs = [
        (image_id, pred_root / f"{image_id}.png", gt_loader, protocol, cache_root and cache_root / f"{image_id}.npz")
        for image_id in ids
    ]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    with contextlib.ExitStack() as stack:
        if n_workers > 1:
            pool = stack.enter_context(multiprocessing_pool(n_workers))  # workers end with this process
            outputs: Iterable[tuple[str, np.ndarray]] = pool.imap_unordered(_image_job, jobs)
        else:
            outputs = map(_image_job, jobs)
        bar = stack.enter_context(
            tqdm(outputs, total=len(jobs), desc=f"edges ({protocol.name})", unit="img",
                 disable=not (progress and progress_enabled()))
        )
        results = dict(bar)
    return summarize_edge_counts(np.stack([results[image_id] for image_id in ids]), protocol)
