"""Scoring one split under a protocol: per-task metrics, the edge benchmark and its image set.

:class:`SplitScorer` is shared by the two ways of getting predictions, :func:`tsn.evaluation.evaluate.evaluate_model`
(a model run by the inference pipeline) and :func:`tsn.evaluation.saved_predictions.evaluate_predictions`
(files saved by any method): both hand it each image's *saved* prediction (``TaskSpec.to_saved``: what the
authors' files hold) or its float prediction, and the protocol decides which one the metrics score.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from tsn.errors import TsnError
from tsn.evaluation.protocols import ScoringProtocol
from tsn.tasks import TaskSpec
from tsn.utils.processes import process_pool

__all__ = ["is_boundary", "edge_ground_truth", "edge_image_set", "SplitScorer"]


def is_boundary(spec: TaskSpec) -> bool:
    """Tasks scored by the boundary benchmark: their ground truth is derived differently and matching is slow."""
    return spec.metric == "odsF"



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


class EdgeCounts:
    """Per-image edge counts, computed inline (``workers <= 1``) or on a process pool.

    At most a few images per worker wait in the pool, so memory stays bounded while the network runs ahead.
    """

    def __init__(self, protocol: Any, workers: int) -> None:
        self.protocol = protocol
        self.counts: dict[str, np.ndarray] = {}
        self._pending: deque[tuple[str, Future[np.ndarray]]] = deque()
        self._pool = process_pool(workers) if workers > 1 else None  # workers end with this process
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



class SplitScorer:
    """Every task's metric on one split under ``protocol`` (edges on the protocol's image set).

    ``dataset`` is the raw dataset (labels at the original size), ``name`` its catalog name; ``workers`` > 1
    match edges on a process pool. Feed each image with :meth:`add`, then call :meth:`results` once.
    """

    def __init__(
        self, protocol: ScoringProtocol, specs: Sequence[TaskSpec], dataset: Dataset, name: str, *,
        workers: int = 0, overrides: Mapping[str, Any] | None = None,
    ) -> None:
        from tsn.metrics.edges import get_protocol as get_edge_protocol

        self.protocol, self.specs = protocol, {spec.name: spec for spec in specs}
        options = {**protocol.options_for(name), **{k: v for k, v in (overrides or {}).items() if v is not None}}
        self.options = options
        self.metrics = {
            spec.name: spec.make_metric(**options) for spec in specs if not is_boundary(spec)
        }
        self.boundary = [spec.name for spec in specs if is_boundary(spec)]
        self.edge_protocol = (
            get_edge_protocol(options.get("edge_protocol") or "astmt", **dict(options.get("edge_options") or {}))
            if self.boundary else None
        )
        self.edge_ids, self.edge_set = (
            edge_image_set(dataset, self.edge_protocol.image_set) if self.edge_protocol else (None, "")
        )
        self.counters = {name: EdgeCounts(self.edge_protocol, workers) for name in self.boundary}
        self.scored_edges: list[str] = []

    def wants_edges(self, image_id: str) -> bool:
        return bool(self.boundary) and (self.edge_ids is None or image_id in self.edge_ids)

    def add(
        self, image_id: str, labels: Mapping[str, Any], edge_truth: np.ndarray | None, *,
        saved: Mapping[str, np.ndarray], floats: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """One image: each task's saved prediction (``TaskSpec.to_saved``) and, for protocols that score floats,
        its float prediction (``None``: the saved one read back, e.g. predictions read from files)."""
        in_edge_set = self.wants_edges(image_id)
        if in_edge_set:
            self.scored_edges.append(image_id)
        for name, array in saved.items():
            spec = self.specs[name]
            if name in self.metrics:
                use_float = floats is not None and not self.protocol.scores_saved_files
                scored = floats[name] if use_float else spec.read_saved(array)  # type: ignore[index]
                self.metrics[name].update(scored, labels[name])
            elif in_edge_set:  # uint8, read as value / 255: exactly what seism sees
                if edge_truth is None:
                    raise TsnError(f"no edge ground truth given for image {image_id}")
                self.counters[name].add(image_id, array, edge_truth)

    def results(self) -> dict[str, dict[str, Any]]:
        """Each task's metric result (the edge result says which ``image_set`` it used), in the specs' order."""
        try:
            results = {name: metric.compute() for name, metric in self.metrics.items()}
            for name, counter in self.counters.items():
                results[name] = {**counter.summary(self.scored_edges), "image_set": self.edge_set}
        finally:
            self.close()
        return {name: results[name] for name in self.specs}

    def close(self) -> None:
        for counter in self.counters.values():
            counter.close()
