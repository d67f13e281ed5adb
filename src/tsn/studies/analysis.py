"""Task-relationship analysis of a trained Task Switching Network (the paper's embedding analysis).

A TSN performs task ``t`` by feeding its learned task embedding ``w_t = model.embed([t])`` to every AdaIN block of
the decoder, where an equalized-lr linear layer turns it into a per-channel ``(scale, shift)``. Tasks the network
treats alike get similar embeddings and similar modulations. This module measures that:

* the cosine similarity of the task embeddings ``w`` (``T x T``);
* per AdaIN layer, the cosine similarity of the tasks' ``scale`` vectors and of their ``shift`` vectors, and the
  mean of those matrices over layers;
* an average-linkage hierarchical clustering of the tasks on the cosine distance ``1 - cos`` of the embeddings.

:func:`write_analysis` saves ``analysis.json``, ``similarity.png`` (heatmaps: embedding, mean scale, mean shift)
and ``dendrogram.png``, each atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist, squareform

from tsn.errors import TsnError
from tsn.inference.predict import save_figure
from tsn.models.base import DensePredictionModel
from tsn.models.layers import AdaINConvBlock
from tsn.models.tsn import TaskSwitchingNet
from tsn.utils.io import atomic_write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LINKAGE_METHOD",
    "LayerSimilarity",
    "TaskAnalysis",
    "cosine_distances",
    "cosine_similarity_matrix",
    "analyze_tsn",
    "plot_similarity",
    "plot_dendrogram",
    "write_analysis",
]

LINKAGE_METHOD = "average"
"""Linkage of the task dendrogram (UPGMA on ``1 - cosine``)."""


def cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """Condensed pairwise cosine distances ``1 - cos`` of the rows of ``vectors`` (scipy ``pdist`` order)."""
    # pdist works in float64; the clip removes rounding just outside the mathematical range [0, 2].
    return np.clip(pdist(np.asarray(vectors, dtype=np.float64), "cosine"), 0.0, 2.0)


def cosine_similarity_matrix(vectors: np.ndarray) -> np.ndarray:
    """``T x T`` cosine similarities of the rows of ``vectors``: symmetric, in [-1, 1], exactly 1 on the diagonal."""
    return 1.0 - squareform(cosine_distances(vectors))


@dataclass(frozen=True)
class LayerSimilarity:
    """Task similarities of one AdaIN block's modulation."""

    name: str
    """Module path in the model, e.g. ``decoder.fuse.0``."""
    channels: int
    scale_cosine: np.ndarray
    shift_cosine: np.ndarray


@dataclass(frozen=True)
class TaskAnalysis:
    """The similarities between a TSN's tasks (matrices indexed like ``tasks``)."""

    tasks: tuple[str, ...]
    embedding_cosine: np.ndarray
    layers: tuple[LayerSimilarity, ...]
    linkage: np.ndarray
    """scipy linkage matrix of the tasks (:data:`LINKAGE_METHOD` on ``1 - embedding cosine``)."""

    @property
    def mean_scale_cosine(self) -> np.ndarray:
        return np.mean([layer.scale_cosine for layer in self.layers], axis=0)

    @property
    def mean_shift_cosine(self) -> np.ndarray:
        return np.mean([layer.shift_cosine for layer in self.layers], axis=0)

    def most_similar_pair(self) -> tuple[str, str, float]:
        """The two different tasks whose embeddings are the most similar, and their cosine similarity."""
        cosine = np.where(np.eye(len(self.tasks), dtype=bool), -np.inf, self.embedding_cosine)
        first, second = np.unravel_index(np.argmax(cosine), cosine.shape)
        return self.tasks[first], self.tasks[second], float(cosine[first, second])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content of ``analysis.json``."""
        return {
            "tasks": list(self.tasks),
            "embedding_cosine": self.embedding_cosine.tolist(),
            "mean_scale_cosine": self.mean_scale_cosine.tolist(),
            "mean_shift_cosine": self.mean_shift_cosine.tolist(),
            "layers": [
                {
                    "name": layer.name,
                    "channels": layer.channels,
                    "scale_cosine": layer.scale_cosine.tolist(),
                    "shift_cosine": layer.shift_cosine.tolist(),
                }
                for layer in self.layers
            ],
            "dendrogram": {
                "distance": "1 - cosine similarity of the task embeddings",
                "method": LINKAGE_METHOD,
                "linkage": self.linkage.tolist(),
                "leaves": [self.tasks[i] for i in hierarchy.leaves_list(self.linkage)],
            },
        }


def analyze_tsn(model: DensePredictionModel) -> TaskAnalysis:
    """Compare the tasks of a TSN through their embeddings and every AdaIN block's ``(scale, shift)``."""
    if not isinstance(model, TaskSwitchingNet):
        raise TsnError(
            f"the checkpoint holds a {model.config.arch} model; only Task Switching Networks (arch 'tsn') have "
            "task embeddings to analyse, give a TSN checkpoint"
        )
    if len(model.tasks) < 2:
        raise TsnError(f"the TSN has a single task ({model.tasks[0]}); task relationships need at least two")
    with torch.inference_mode():
        embeddings = model.embed(model.tasks)
        modulations = [
            (f"decoder.{name}", block.modulation(embeddings))
            for name, block in model.decoder.named_modules()
            if isinstance(block, AdaINConvBlock)
        ]
    layers = tuple(
        LayerSimilarity(name, scale.shape[1], _task_cosines(scale), _task_cosines(shift))
        for name, (scale, shift) in modulations
    )
    w = embeddings.double().cpu().numpy()
    return TaskAnalysis(
        tasks=model.tasks,
        embedding_cosine=cosine_similarity_matrix(w),
        layers=layers,
        linkage=hierarchy.linkage(cosine_distances(w), method=LINKAGE_METHOD),
    )


def _task_cosines(per_task: torch.Tensor) -> np.ndarray:
    """Cosine similarities of the rows (one per task) of a tensor."""
    return cosine_similarity_matrix(per_task.double().cpu().numpy())


def _heatmap(axes: Any, matrix: np.ndarray, tasks: tuple[str, ...], title: str) -> None:
    """One annotated similarity heatmap; the colour range is the matrix's own (its colour bar says so)."""
    low = float(matrix.min())
    image = axes.imshow(matrix, cmap="viridis", vmin=low, vmax=max(1.0, low + 1e-6))
    axes.figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    axes.set_yticks(range(len(tasks)), tasks)
    axes.set_title(title)
    middle = (low + 1.0) / 2
    for (row, col), value in np.ndenumerate(matrix):
        axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                  color="black" if value > middle else "white")


def plot_similarity(analysis: TaskAnalysis) -> Figure:
    """Three heatmaps: embedding cosine, mean scale cosine, mean shift cosine (over the AdaIN layers)."""
    from matplotlib.figure import Figure  # slow to import; only plotting needs it

    count = len(analysis.tasks)
    figure = Figure(figsize=(3 * (1.6 + 0.55 * count), 1.4 + 0.55 * count), layout="constrained")
    panels = (
        (analysis.embedding_cosine, "Task embedding w"),
        (analysis.mean_scale_cosine, f"AdaIN scale (mean of {len(analysis.layers)} layers)"),
        (analysis.mean_shift_cosine, f"AdaIN shift (mean of {len(analysis.layers)} layers)"),
    )
    for axes, (matrix, title) in zip(figure.subplots(1, 3), panels, strict=True):
        _heatmap(axes, matrix, analysis.tasks, title)
    figure.suptitle("Cosine similarity between tasks")
    return figure


def plot_dendrogram(analysis: TaskAnalysis) -> Figure:
    """The tasks clustered on the cosine distance of their embeddings."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 1.5 + 0.45 * len(analysis.tasks)), layout="constrained")
    axes = figure.subplots()
    hierarchy.dendrogram(analysis.linkage, labels=list(analysis.tasks), orientation="right", ax=axes)
    axes.set_xlabel("1 - cosine similarity of the task embeddings")
    axes.set_title(f"Task dendrogram ({LINKAGE_METHOD} linkage)")
    return figure


def write_analysis(
    analysis: TaskAnalysis, out_dir: str | os.PathLike[str], checkpoint: str | None = None
) -> list[Path]:
    """Write ``analysis.json``, ``similarity.png`` and ``dendrogram.png`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    paths = [out_dir / "analysis.json", out_dir / "similarity.png", out_dir / "dendrogram.png"]
    atomic_write_json(paths[0], {"checkpoint": checkpoint, **analysis.to_dict()})
    save_figure(plot_similarity(analysis), paths[1])
    save_figure(plot_dendrogram(analysis), paths[2])
    return paths
