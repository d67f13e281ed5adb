"""Reference-protocol evaluation: ``tsn evaluate`` and the scoring step of ``tsn reproduce``.

The reference evaluators (ASTMT ``fblib/evaluation``, which TSNs uses; see ``docs/evaluate.md``) score saved
predictions at each image's *original* size against the raw labels. This module does the same in one pass:

1. every image of the split is read without transforms, so its labels keep their original resolution;
2. the image alone is resized to the network input (bicubic, ImageNet normalisation) and every task runs in one
   call (the encoder once; a TSN batches its task passes);
3. each prediction is postprocessed, resized back to the original size and turned into the array the authors save
   (:func:`tsn.inference.predict.restore_predictions`, :meth:`TaskSpec.to_saved`); the metrics score exactly what
   those files hold, read back as the reference evaluators read them (``png / 255``, ``2 * png / 255 - 1``), and
   ``save_dir`` gets the files themselves (the authors' layout, for MATLAB seism or the reference scripts);
4. edges go to the seism-compatible benchmark (:mod:`tsn.metrics.edges`) against the dataset's edge-evaluation
   ground truth (:func:`edge_ground_truth`), restricted to the protocol's image set where the dataset has that
   list; the per-image matching (about a second per PASCAL image) runs on a process pool while the network goes on.

:func:`evaluate_checkpoint` returns a JSON-ready record (every metric, the protocols, the checkpoint and its
config, the dataset, image counts, time); :mod:`tsn.evaluation.tables` adds per-task drops and the average drop
against single-task scores (:func:`~tsn.evaluation.tables.compare_with_baseline`) and prints the paper-style
table (:func:`~tsn.evaluation.tables.evaluation_markdown`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tsn.datasets import dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.evaluation.tables import RESULT_FORMAT, table_value
from tsn.inference.speed import SpeedOptions
from tsn.models.base import DensePredictionModel
from tsn.tasks import TaskSpec, get_task

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "MIN_INPUT_SIZE",
    "resolve_eval_tasks",
    "edge_ground_truth",
    "edge_image_set",
    "evaluate_model",
    "evaluate_checkpoint",
]

DEFAULT_INPUT_SIZE = 512
"""The paper's network input side for the real datasets; synthetic scenes run at their own size."""

MIN_INPUT_SIZE = 64
"""Smallest network input: the encoder's stride-32 features must keep more than one pixel for instance norm."""

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


# ------------------------------------------------------------------------------------------------------- tasks


def resolve_eval_tasks(
    model: DensePredictionModel, dataset: str, tasks: Sequence[str] | None = None
) -> tuple[TaskSpec, ...]:
    """The tasks to score, with the dataset's specs: those asked, else every task of the model the dataset has.

    A task missing from the checkpoint or the dataset, or predicted with another channel count than the dataset's
    (a model trained for another dataset), is a one-line error.
    """
    available = {spec.name: spec for spec in dataset_tasks(dataset)}
    if tasks:
        names = [get_task(name).name for name in tasks]
        for name in names:
            if name not in model.task_specs:
                raise TsnError(f"the checkpoint has no task {name!r}; its tasks: {', '.join(model.tasks)}")
            if name not in available:
                raise TsnError(f"dataset {dataset!r} has no task {name!r}; its tasks: {', '.join(available)}")
        names = list(dict.fromkeys(names))
    else:
        names = [name for name in model.tasks if name in available]
        if not names:
            raise TsnError(
                f"none of the checkpoint's tasks ({', '.join(model.tasks)}) is a task of {dataset!r} "
                f"({', '.join(available)}); evaluate it on the dataset it was trained for"
            )
    for name in names:
        ours, theirs = model.task_specs[name].channels, available[name].channels
        if ours != theirs:
            raise TsnError(
                f"the checkpoint predicts {ours} channels for {name} but {dataset!r} has {theirs}; "
                "it was trained for another dataset"
            )
    return tuple(available[name] for name in names)


def _is_boundary(spec: TaskSpec) -> bool:
    """Tasks scored by the boundary benchmark: their ground truth is derived differently and matching is slow."""
    return spec.metric == "odsF"


# ------------------------------------------------------------------------------------------------------- edges


def edge_ground_truth(dataset: Dataset, sample: Mapping[str, Any]) -> np.ndarray:
    """The boundary map (bool ``H x W``) the edge benchmark scores ``sample`` against.

    Datasets with an edge-evaluation source (``edge_eval_ground_truth``: PASCAL's ``LabelMap``, NYUD's edge PNG)
    go through seism's ``thin(seg2bmap(.))``, never the training edge labels. The synthetic scenes' edge label
    already is the exact one-pixel boundary map.
    """
    from tsn.metrics.edges import seism_ground_truth

    read = getattr(dataset, "edge_eval_ground_truth", None)
    if read is None:
        return np.asarray(sample["edges"]) > 0.5
    return seism_ground_truth(read(sample["meta"]["id"]))


def edge_image_set(dataset: Dataset, image_set: str | None) -> tuple[frozenset[str] | None, str]:
    """The ids of the edge protocol's image set within the evaluated split, or None for all its images.

    The list is the dataset's split list of that name (e.g. PASCAL ``ImageSets/Context/test_new.txt``). Where the
    dataset has no such list, or it shares no image with the split, every image is scored; the returned text
    says which set was used.
    """
    from tsn.data.readers import FolderDataset, read_id_list

    if image_set is None or not isinstance(dataset, FolderDataset):
        return None, "all images of the split"
    path = dataset.root / dataset.split_folder / f"{image_set}.txt"
    if image_set in dataset.splits:
        return None, f"{image_set} (the evaluated split)"
    if not path.is_file():
        return None, f"all images of the split (no {image_set} list at {path})"
    ids = frozenset(read_id_list(path)).intersection(dataset.ids)
    if not ids:
        return None, f"all images of the split (none of {path} is in it)"
    return ids, f"{image_set} ({path})"


class _EdgeCounts:
    """Per-image edge counts, computed inline (``workers <= 1``) or on a process pool.

    At most a few images per worker wait in the pool, so memory stays bounded while the network runs ahead.
    """

    def __init__(self, protocol: Any, workers: int) -> None:
        self.protocol = protocol
        self.counts: dict[str, np.ndarray] = {}
        self._pending: deque[tuple[str, Future[np.ndarray]]] = deque()
        self._pool = ProcessPoolExecutor(workers) if workers > 1 else None
        self._limit = 4 * workers

    def add(self, image_id: str, pred: np.ndarray, truth: np.ndarray) -> None:
        from tsn.metrics.edges import edge_counts

        if self._pool is None:
            self.counts[image_id] = edge_counts(pred, truth, self.protocol)
            return
        self._pending.append((image_id, self._pool.submit(edge_counts, pred, truth, self.protocol)))
        while len(self._pending) > self._limit:
            self._collect_oldest()

    def _collect_oldest(self) -> None:
        image_id, future = self._pending.popleft()
        self.counts[image_id] = future.result()

    def summary(self, ids: Sequence[str]) -> dict[str, Any]:
        """Scores over ``ids`` (in that order; see :func:`tsn.metrics.edges.summarize_edge_counts`)."""
        from tsn.metrics.edges import summarize_edge_counts

        while self._pending:
            self._collect_oldest()
        if not ids:
            raise TsnError("no image to score edges on; the split or the edge image set is empty")
        return summarize_edge_counts(np.stack([self.counts[i] for i in ids]), self.protocol)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class _Item:
    labels: dict[str, Any]
    """The raw labels of the scored tasks and ``meta``."""
    tensor: torch.Tensor
    """The network input ``3 x h x w``."""
    edge_truth: np.ndarray | None


class _EvalInputs(Dataset):
    """A raw dataset seen as (raw labels, network input, edge ground truth): the heavy reading runs in workers."""

    def __init__(self, dataset: Dataset, size: tuple[int, int], tasks: Sequence[str], edges: bool) -> None:
        from tsn.data.transforms import build_transforms

        self.dataset, self.tasks, self.edges = dataset, tuple(tasks), edges
        self.transform = build_transforms("eval", size, tasks=(), seed=0)  # the image only

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> _Item:
        sample = self.dataset[index]
        labels = {key: sample[key] for key in (*self.tasks, "meta")}
        truth = edge_ground_truth(self.dataset, sample) if self.edges else None
        return _Item(labels, self.transform({"image": sample["image"]})["image"], truth)


def evaluate_model(
    model: DensePredictionModel,
    dataset: Dataset,
    specs: Sequence[TaskSpec],
    *,
    size: tuple[int, int] = (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE),
    batch_size: int = 8,
    workers: int = 0,
    edge_protocol: str | None = None,
    depth_protocol: str | None = None,
    metric_factories: Mapping[str, Callable[[TaskSpec], Any]] | None = None,
    scores_saved_files: bool = True,
    save_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Score ``specs`` of ``model`` on every image of the raw ``dataset`` (built without a transform).

    ``model`` is in eval mode on its device; ``size = (H, W)`` is the network input; ``workers`` processes read
    the data and match edges. Returns each task's metric result (see :mod:`tsn.metrics`), in the order of
    ``specs``; the edge result also says which ``image_set`` it used. ``save_dir`` receives every prediction as
    ``<save_dir>/<task>/<id>.png`` (depth ``.mat``), the authors' format at the original size.
    ``metric_factories`` replace the output kind's metric of some tasks (a dataset's own protocol, see
    :class:`tsn.datasets.EvaluationProtocol`); with ``scores_saved_files`` false the metrics (edges excepted)
    score the float predictions instead of what the saved files hold.
    """
    from tsn.inference.predict import restore_predictions, save_prediction
    from tsn.metrics import make_metrics
    from tsn.metrics.edges import get_protocol

    if batch_size < 1 or workers < 0:
        raise TsnError(f"batch size must be >= 1 and workers >= 0 (got {batch_size} and {workers})")
    by_name = {spec.name: spec for spec in specs}
    metrics = make_metrics([s for s in specs if not _is_boundary(s)], depth_protocol=depth_protocol)
    for name, factory in (metric_factories or {}).items():
        if name in metrics:
            metrics[name] = factory(by_name[name])
    boundary = [spec.name for spec in specs if _is_boundary(spec)]
    protocol = get_protocol(edge_protocol or "mtl-survey") if boundary else None
    edge_ids, edge_set = edge_image_set(dataset, protocol.image_set) if protocol else (None, "")
    inputs = _EvalInputs(dataset, size, list(by_name), edges=bool(boundary))
    loader = DataLoader(inputs, batch_size=batch_size, num_workers=workers, collate_fn=list)
    device = next(model.parameters()).device
    scored_edges: list[str] = []
    counters = {name: _EdgeCounts(protocol, workers) for name in boundary}
    try:
        with tqdm(total=len(inputs), unit="img", desc="evaluate", disable=None if progress else True) as bar:
            for items in loader:
                batch = torch.stack([item.tensor for item in items]).to(device)
                with torch.inference_mode():
                    raw = model(batch, list(by_name))
                sizes = [tuple(item.labels["meta"]["size"]) for item in items]
                for item, predictions in zip(items, restore_predictions(raw, by_name, sizes), strict=True):
                    image_id = str(item.labels["meta"]["id"])
                    in_edge_set = edge_ids is None or image_id in edge_ids
                    if boundary and in_edge_set:
                        scored_edges.append(image_id)
                    for name, prediction in predictions.items():
                        spec = by_name[name]
                        if save_dir is not None:
                            save_prediction(spec, prediction, Path(save_dir) / name, image_id, "authors")
                        saved = spec.to_saved(prediction)
                        if name in metrics:
                            scored = spec.read_saved(saved) if scores_saved_files else prediction
                            metrics[name].update(scored, item.labels[name])
                        elif in_edge_set:  # uint8, read as value / 255: exactly what seism sees
                            counters[name].add(image_id, saved, item.edge_truth)
                bar.update(len(items))
        results = {name: metric.compute() for name, metric in metrics.items()}
        for name, counter in counters.items():
            results[name] = {**counter.summary(scored_edges), "image_set": edge_set}
    finally:
        for counter in counters.values():
            counter.close()
    return {spec.name: results[spec.name] for spec in specs}


# -------------------------------------------------------------------------------------------------- checkpoints


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _input_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from one side or two, checked against :data:`MIN_INPUT_SIZE`."""
    sides = (int(size),) if isinstance(size, int) else tuple(int(s) for s in size)
    sides = sides * 2 if len(sides) == 1 else sides
    if len(sides) != 2 or min(sides) < MIN_INPUT_SIZE:
        raise TsnError(f"input size {size} is not one or two sides of at least {MIN_INPUT_SIZE} px (the encoder's "
                       "stride-32 features need more than one pixel); e.g. --size 512 or --size 480 640")
    return sides


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    dataset: str = "pascal_context",
    split: str = "val",
    *,
    tasks: Sequence[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    size: int | Sequence[int] | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    device: str = "auto",
    speed: SpeedOptions | None = None,
    edge_protocol: str | None = None,
    depth_protocol: str | None = None,
    save_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split with the reference protocol; returns the JSON-ready record.

    ``speed``: the :mod:`tsn.inference.speed` options applied to the loaded model (default
    :func:`~tsn.inference.speed.exact_options`: float32 results, no compilation); they change nothing outside it.

    ``dataset_options`` go to :func:`tsn.data.build_dataset` (e.g. ``size``, ``length``, ``seed`` of the
    synthetic scenes). ``size`` is the network input, one side or ``(H, W)``: default 512 x 512 (the paper's),
    or the synthetic scenes' own size. ``edge_protocol`` and ``depth_protocol`` default to the dataset's
    :class:`~tsn.datasets.EvaluationProtocol`, whose metric factories replace the kinds' metrics where it names
    them (NYUv2-13, Cityscapes-7: LibMTL's). ``workers`` (default: every core) read data and match edges in
    parallel.

    Record keys: ``format``, ``format_version``, ``tsn_version``, ``checkpoint`` (path, config, parameters),
    ``dataset`` (name, split, root, options, n_images), ``input_size``, ``protocols``, ``tasks`` (every metric,
    fractions as the metrics give them), ``headline`` (per task: metric, value, table value, direction),
    ``n_images`` (per task), ``predictions`` (the save folder or null), ``time`` (start, seconds, device).
    """
    from tsn import __version__
    from tsn.data import build_dataset
    from tsn.inference.speed import exact_options, optimize
    from tsn.models.checkpoint import load_model
    from tsn.utils.device import resolve_device

    started, clock = time.time(), time.perf_counter()
    registered = get_dataset(dataset)  # an unknown dataset name or input size fails here, before anything is loaded
    name = registered.name
    input_size = _input_size(size) if size else None
    run_on = resolve_device(device)
    model = optimize(load_model(checkpoint, map_location=run_on), exact_options(run_on) if speed is None else speed)
    specs = resolve_eval_tasks(model, name, tasks)
    options = dict(dataset_options or {})
    data = build_dataset(name, split, tasks=[s.name for s in specs], root=data_root, **options)
    # The dataset's evaluation size, else its own size (synthetic scenes), else the paper's.
    if input_size is None:
        own_size: int | Sequence[int] = getattr(data, "size", DEFAULT_INPUT_SIZE)
        input_size = _input_size(registered.eval_size or own_size)
    protocol = registered.evaluation
    edge_protocol = edge_protocol or protocol.edge_protocol
    depth_protocol = depth_protocol or protocol.depth_protocol
    factories = {spec.name: registered.metric_factory(spec.name) for spec in specs}
    results = evaluate_model(
        model, data, specs, size=input_size, batch_size=batch_size,
        workers=_default_workers() if workers is None else workers, edge_protocol=edge_protocol,
        depth_protocol=depth_protocol, save_dir=save_dir, progress=progress,
        metric_factories={task: factory for task, factory in factories.items() if factory is not None},
        scores_saved_files=protocol.scores_saved_files,
    )
    scored_as = "as the authors' saved files hold them" if protocol.scores_saved_files else "as floats (LibMTL)"
    protocols: dict[str, Any] = {"scoring": f"predictions resized to each image's original size, scored {scored_as}"}
    for spec in specs:
        result = results[spec.name]
        if _is_boundary(spec):
            protocols[spec.name] = {"protocol": result["protocol"]["name"], "image_set": result["image_set"]}
        elif "protocol" in result:
            protocols[spec.name] = {"protocol": result["protocol"]}
    return {
        "format": RESULT_FORMAT,
        "format_version": 1,
        "tsn_version": __version__,
        "checkpoint": {
            "path": str(Path(checkpoint).resolve()),
            "config": model.config.to_dict(),
            "parameters": model.num_parameters(),
        },
        "dataset": {
            "name": name,
            "split": split,
            "root": str(getattr(data, "root", "")) or None,
            "options": options,
            "n_images": len(data),  # type: ignore[arg-type]
        },
        "input_size": list(input_size),
        "protocols": protocols,
        "tasks": results,
        "headline": {
            spec.name: {
                "metric": spec.metric,
                "value": float(results[spec.name][spec.metric]),
                "table_value": table_value(spec, results[spec.name][spec.metric]),
                "higher_is_better": spec.higher_is_better,
            }
            for spec in specs
        },
        "n_images": {spec.name: int(results[spec.name]["n_images"]) for spec in specs},
        "predictions": str(Path(save_dir).resolve()) if save_dir is not None else None,
        "time": {
            "started": datetime.fromtimestamp(started, timezone.utc).strftime(_TIME_FORMAT),
            "seconds": round(time.perf_counter() - clock, 3),
            "device": str(run_on),
        },
    }
