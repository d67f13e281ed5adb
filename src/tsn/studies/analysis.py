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

The task space is also *used*: :func:`task_path` runs the network, for one image, at evenly spaced points of the
straight path between two tasks, either between their task codes (the mixture ``(1 - a) code_start + a code_end``
through the embedding network, :meth:`~tsn.models.tsn.TaskSwitchingNet.decode_mixtures`) or between their
embeddings ``w`` (:meth:`~tsn.models.tsn.TaskSwitchingNet.decode_embeddings`). Every step is drawn read as the
start task and as the end task (the shared output layer's maps pooled to each task's channels and postprocessed
by its kind), which shows where along the path the network switches from one task to the other.
:func:`write_task_path` saves that figure; :func:`path_image` reads an image file or renders a synthetic scene.

The image reaches the network through the inference pipeline (:mod:`tsn.inference.pipeline`) with a pad fit: at
its own size (reduced to at most :data:`PATH_IMAGE_SIDE` pixels a side: a pane of the figure is 160 pixels wide),
zero-padded up to the model's minimum side and cropped back, so any image from 1 x 1 pixel on is walked. The
work is bounded: at most :data:`MAX_PATH_STEPS` steps, and a figure of bounded size (each pane keeps the image's
aspect up to 4 : 1).
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
from tsn.models.layers import AdaINConvBlock, pool_channels
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
    "PATH_SPACES",
    "MAX_PATH_STEPS",
    "PATH_IMAGE_SIDE",
    "TaskPath",
    "path_image",
    "task_path",
    "plot_task_path",
    "write_task_path",
    "run_analysis",
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


# ------------------------------------------------------------------------------------------------ task paths
PATH_SPACES = ("code", "embedding")
"""Where a task path is a straight line: between the task codes (mixtures) or between the embeddings ``w``."""
PATH_IMAGE_SIDE = 512
"""Longest side the task path runs the network at (a larger image is reduced first, aspect kept): each step is a
decoder pass, and the figure draws each in a pane 160 pixels wide."""
MAX_PATH_STEPS = 33
"""Most points on a task path: the decoder runs once per step, and the figure has two panes per step (33 steps
draw a figure about 5,600 pixels wide)."""
_MAX_PANE_ASPECT = 4.0


@dataclass(frozen=True)
class TaskPath:
    """A TSN's outputs for one image at ``len(weights)`` points of the path from task ``start`` to task ``end``."""

    start: str
    end: str
    space: str
    """One of :data:`PATH_SPACES`."""
    weights: tuple[float, ...]
    """The end task's weight ``a`` at each step, from 0 (the start task itself) to 1 (the end task itself)."""
    image: np.ndarray
    """The input, ``H x W x 3`` uint8."""
    as_start: tuple[np.ndarray, ...]
    """Each step read as the start task, drawn by its kind (``H x W x 3`` uint8)."""
    as_end: tuple[np.ndarray, ...]
    """Each step read as the end task, drawn by its kind."""


def path_image(source: str, size: int = 64) -> np.ndarray:
    """The image a task path is drawn for: an image file, or (a whole number) that scene of the synthetic test
    split (seed 0) at ``size x size``; ``H x W x 3`` uint8. A missing file, a bad index or size is a one-line error
    (the model's own minimum size is checked by :func:`task_path`)."""
    from tsn.inference.input_size import input_size
    from tsn.inference.pipeline import read_image

    text = str(source).strip()
    if text.isdigit():
        from tsn.data.synthetic import render_scene

        side, _ = input_size(size)
        return np.asarray(render_scene(0, "test", int(text), side, tasks=["semseg"])["image"])
    from tsn.utils.checks import require_existing_file

    # A huge file is decoded reduced: the path runs it at PATH_IMAGE_SIDE pixels a side at most anyway.
    half = PATH_IMAGE_SIDE // 2
    return read_image(require_existing_file(text, "--image"), target_size=(half, half), name=text)[0]


def _check_path(model: DensePredictionModel, start: str, end: str, steps: int, space: str) -> tuple[str, str]:
    """Canonical ``(start, end)`` after checking every argument of :func:`task_path` (one-line errors)."""
    if not isinstance(model, TaskSwitchingNet):
        raise TsnError(f"the checkpoint holds a {model.config.arch} model; only Task Switching Networks (arch "
                       "'tsn') have a task space to walk, give a TSN checkpoint")
    if space not in PATH_SPACES:
        raise TsnError(f"unknown task-path space {space!r}; choose one of: {', '.join(PATH_SPACES)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise TsnError(f"a task path needs at least 2 steps (its two ends), got {steps!r}")
    if steps > MAX_PATH_STEPS:
        raise TsnError(f"a task path has at most {MAX_PATH_STEPS} steps (one decoder pass and two pictures each), "
                       f"got {steps}")
    first, second = model.task_names([start, end])
    if first == second:
        raise TsnError(f"a task path joins two different tasks, got {first!r} twice")
    return first, second


def task_path(model: DensePredictionModel, image: Any, start: str, end: str, steps: int = 7,
              space: str = "code") -> TaskPath:
    """Run ``model`` (a TSN) on ``image`` (an ``H x W x 3`` uint8 array, or any image the inference pipeline
    reads) at ``steps`` evenly spaced points from task ``start`` to task ``end`` in ``space``
    (:data:`PATH_SPACES`), and draw every step as both tasks.

    The first step is exactly the start task's output and the last the end task's (a one-task mixture is that
    task's code). Bad arguments are one-line errors raised before the network runs.
    """
    from tsn.inference.pipeline import PadToMultiple, Pipeline

    first, second = _check_path(model, start, end, steps, space)
    assert isinstance(model, TaskSwitchingNet)  # checked above
    if isinstance(image, np.ndarray) and (image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8):
        raise TsnError(f"a task path needs an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
    fit = PadToMultiple(max_side=PATH_IMAGE_SIDE)
    pipeline = Pipeline(model, tasks=[first, second], fit=fit, budget=None, what="the path's image")
    item = pipeline.prepare(image)
    parameter = next(model.parameters())
    tensor = item.tensor[None].to(device=parameter.device, dtype=parameter.dtype)
    weights = tuple(float(a) for a in np.linspace(0.0, 1.0, steps))
    with torch.inference_mode():
        if space == "code":
            raw = model.decode_mixtures(tensor, [{first: 1.0 - a, second: a} for a in weights])
        else:
            ends = model.embed([first, second])
            alphas = torch.tensor(weights, dtype=ends.dtype, device=ends.device)[:, None]
            raw = model.decode_embeddings(tensor, (1 - alphas) * ends[:1] + alphas * ends[1:])
    read = []
    for name in (first, second):
        spec = model.task_specs[name]
        read.append(tuple(spec.render(pipeline.restore(spec, pool_channels(raw[k], spec.channels), item))
                          for k in range(steps)))
    return TaskPath(first, second, space, weights, item.pixels, read[0], read[1])


def plot_task_path(path: TaskPath, model: DensePredictionModel | None = None) -> Figure:
    """Two rows after the input image: every step read as the start task, then as the end task."""
    from matplotlib.figure import Figure

    titles = {name: model.task_specs[name].title if model is not None else name for name in (path.start, path.end)}
    steps = len(path.weights)
    height, width = path.image.shape[:2]
    aspect = min(max(height / width, 1 / _MAX_PANE_ASPECT), _MAX_PANE_ASPECT)  # bounded figure for any image
    shape = "auto" if aspect != height / width else "equal"
    side = 1.6
    figure = Figure(figsize=(side * (steps + 1) + 0.6, 2 * side * aspect + 1.0), layout="constrained")
    grid = figure.subplots(2, steps + 1, squeeze=False)
    grid[0, 0].imshow(path.image, aspect=shape)
    grid[0, 0].set_title("image", fontsize=8)
    for row, (name, pictures) in enumerate(((path.start, path.as_start), (path.end, path.as_end))):
        grid[row, 0].set_axis_off()
        grid[row, 1].set_ylabel(f"read as\n{titles[name]}", fontsize=8)
        for k, picture in enumerate(pictures):
            axes = grid[row, k + 1]
            axes.imshow(picture, aspect=shape)
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(f"a = {path.weights[k]:.2f}", fontsize=8)
    between = "task codes" if path.space == "code" else "task embeddings w"
    figure.suptitle(f"From {titles[path.start]} (a = 0) to {titles[path.end]} (a = 1): (1 - a) start + a end, "
                    f"between the {between}", fontsize=9)
    return figure


def write_task_path(path: TaskPath, out_dir: str | os.PathLike[str],
                    model: DensePredictionModel | None = None) -> Path:
    """Save :func:`plot_task_path` as ``out_dir/path_<start>_<end>.png`` (atomically); return its path."""
    target = Path(out_dir) / f"path_{path.start}_{path.end}.png"
    save_figure(plot_task_path(path, model), target)
    return target


def run_analysis(
    checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, path: tuple[str, str] | None = None,
    steps: int = 7, image: str = "0", size: int = 64, space: str = "code",
) -> tuple[TaskAnalysis, list[Path]]:
    """``tsn analyze``: load ``checkpoint``, compare its tasks, and with ``path = (start, end)`` walk the task path
    on ``image`` (a file, or a synthetic test scene's index rendered at ``size``, a size every command accepts for
    this model: :func:`tsn.inference.input_size.check_input_size`). Everything is checked and computed before the
    first file is written, so a bad argument writes nothing. Returns the analysis and the files written."""
    from tsn.inference.input_size import check_input_size, input_size
    from tsn.models.checkpoint import load_model

    input_size(size)  # the syntax and the largest side, before the checkpoint is read
    model = load_model(checkpoint)
    analysis = analyze_tsn(model)
    walk = None
    if path is not None:
        if str(image).strip().isdigit():
            check_input_size(model, size)
        walk = task_path(model, path_image(image, size), path[0], path[1], steps, space)
    paths = write_analysis(analysis, out_dir, checkpoint=str(checkpoint))
    if walk is not None:
        paths.append(write_task_path(walk, out_dir, model))
    return analysis, paths
