"""``tsn predict`` as a library: image files and folders through the inference pipeline, predictions saved in the
authors' conventions, and one overview panel per image.

Each file goes through :mod:`tsn.inference.pipeline` (the path every caller shares): decoded (an image over twice
the network input per side decoded reduced), resized to the network input, every requested task in one forward
pass of a batch, each task restored to the image's size (or, over
:data:`~tsn.inference.pipeline.PREDICTION_BUDGET`, the largest size within it) and saved one task at a time
(:func:`~tsn.inference.pipeline.save_prediction`), each full-size map freed before the next. Panels draw copies of
at most :data:`PANEL_MAX_SIDE` pixels a side in a figure of bounded size (:data:`PANEL_MAX_ASPECT`), so a huge or
extremely elongated image costs what a small one does.

Two save formats: ``authors`` writes exactly the reference's files (grey index PNGs, no extras), ready for the
evaluators; ``visual`` writes the same values but makes class maps palette PNGs (still the class indices, drawn in
the VOC colours) and adds a grey depth PNG for viewing. Every file is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from tsn.data.images import read_rgb_image
from tsn.errors import TsnError
from tsn.inference.pipeline import (
    PREDICTION_BUDGET,
    SAVE_FORMATS,
    Pipeline,
    PixelBudget,
    PreparedImage,
    Preparer,
    Resize,
    SaveFormat,
    restore_predictions,
    save_prediction,
)
from tsn.inference.speed import SpeedOptions
from tsn.models.base import DensePredictionModel, TaskArg
from tsn.tasks import TaskSpec
from tsn.utils.checks import escaped, input_problem
from tsn.utils.io import atomic_write
from tsn.utils.processes import data_loader

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "SaveFormat",
    "SAVE_FORMATS",
    "PANELS_FOLDER",
    "Skipped",
    "PredictSummary",
    "ImageFiles",
    "load_image",
    "collect_inputs",
    "check_output_folder",
    "restore_predictions",
    "save_prediction",
    "save_predictions",
    "PANEL_MAX_SIDE",
    "PANEL_MAX_ASPECT",
    "render_panel",
    "save_figure",
    "predict_files",
    "predict_checkpoint",
]

PANELS_FOLDER = "panels"
"""Sub-folder of the output folder that holds the per-image overview panels."""

PANEL_MAX_SIDE = 1024
"""Longest side of the pictures a panel draws (a panel pane is a few hundred pixels wide; larger images and
predictions are subsampled for it, which keeps the drawing of a huge image cheap)."""
PANEL_MAX_ASPECT = 4.0
"""Most height / width (or width / height) a panel pane has: a 1 x 5000 pixel image is drawn stretched into a
4 : 1 pane instead of a figure 5000 times as tall as wide (which Pillow would refuse to open)."""


@dataclass(frozen=True)
class Skipped:
    """An input that was not processed, and why (``message`` names the file)."""

    path: Path
    message: str


@dataclass
class PredictSummary:
    """What :func:`predict_files` did: the tasks it predicted, the images it wrote predictions for, and the inputs
    it skipped."""

    processed: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    reduced: list[tuple[Path, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    """Images over the pixel budget: ``(path, full (H, W), the (H, W) their predictions were saved at)``."""


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 RGB at full size, upright (:func:`tsn.data.images.read_rgb_image`).

    A file that is not an image, or a corrupt or truncated one, raises a one-line :class:`TsnError` naming it.
    """
    return read_rgb_image(path)


def collect_inputs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """Files to predict with their output names (file stems), and the inputs that cannot be used.

    A folder contributes its files (sorted, hidden ones and sub-folders left out); a file named twice counts once.
    Missing paths, empty folders, entries that are not regular files (link loops, dangling links, named pipes,
    sockets, devices: :func:`tsn.utils.checks.input_problem`) and a second file with an already used stem (its
    outputs would overwrite the first's) are skipped, with their reason; names in messages are escaped.
    """
    files: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    owner: dict[str, Path] = {}
    for entry in map(Path, inputs):
        if entry.is_dir():
            listed = {p: input_problem(p) for p in sorted(entry.iterdir()) if not p.name.startswith(".")}
            skipped += [Skipped(p, f"{escaped(p)}: {why}") for p, why in listed.items() if why and why != "a folder"]
            found = [p for p, why in listed.items() if why is None]
            if not found:
                skipped.append(Skipped(entry, f"{escaped(entry)}: folder without files"))
        elif entry.is_file():
            found = [entry]
        else:
            why = input_problem(entry) if os.path.lexists(entry) else "no such file or folder"
            skipped.append(Skipped(entry, f"{escaped(entry)}: {why}"))
            continue
        for path in found:
            if path.stem in owner and owner[path.stem].resolve() == path.resolve():
                continue  # the same file named twice (e.g. alone and through its folder)
            if path.stem in owner:
                message = (f"{escaped(path)}: same name as {escaped(owner[path.stem])}, whose outputs it would "
                           "overwrite; rename one")
                skipped.append(Skipped(path, message))
                continue
            owner[path.stem] = path
            files.append((path, path.stem))
    return files, skipped


def check_output_folder(
    inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], what: str = "-o/--output"
) -> Path:
    """Refuse, in one line, an output folder that is one of the inputs or holds one of them (an input folder named
    like a task or the panels folder inside it, an image in it, or a file of an input folder linked into it):
    writing the predictions could replace input files. ``out_dir`` (not created) is returned."""
    out = Path(out_dir).expanduser()
    real_out = Path(os.path.realpath(out))
    files, _ = collect_inputs(inputs)
    for source in [*map(Path, inputs), *(path for path, _ in files)]:
        source = source.expanduser()
        if not os.path.lexists(source):
            continue
        real = Path(os.path.realpath(source))
        if real == real_out or real_out in real.parents:
            where = "is" if real == real_out else "lies inside"
            if source.is_symlink():
                where = f"(a link to {escaped(real)}) {where}"
            raise TsnError(f"{what}: the input {escaped(source)} {where} the output folder {escaped(out)}, whose "
                           "predictions could overwrite it; choose an output folder outside the inputs")
    return out


@dataclass(frozen=True)
class _Loaded:
    path: Path
    name: str
    item: PreparedImage

    @property
    def tensor(self) -> torch.Tensor:
        """The network input ``3 x h x w``."""
        return self.item.tensor

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the saved predictions."""
        return self.item.size


class ImageFiles(Dataset):
    """Image files brought to the network by ``preparer`` (a :class:`~tsn.inference.pipeline.Preparer`, or a resize
    to ``size``); an unreadable file yields a :class:`Skipped` instead of raising, so one bad file does not stop a
    batch (or a DataLoader worker)."""

    def __init__(self, files: Sequence[tuple[Path, str]], size: tuple[int, int] | Preparer) -> None:
        self.files = list(files)
        self.preparer = size if isinstance(size, Preparer) else Preparer(Resize((int(size[0]), int(size[1]))))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> _Loaded | Skipped:
        path, name = self.files[index]
        try:
            return _Loaded(path, name, self.preparer.prepare(path))
        except TsnError as error:
            return Skipped(path, str(error))


def save_predictions(
    raw: dict[str, torch.Tensor],
    specs: dict[str, TaskSpec],
    names: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    out_dir: str | os.PathLike[str],
    save_format: SaveFormat = "authors",
) -> list[dict[str, np.ndarray]]:
    """Save a batch's raw outputs as ``out_dir/<task>/<name>.png`` (or ``.mat``) at each image's original size.

    ``names[i]`` and ``sizes[i] = (H, W)`` belong to sample ``i`` of the batch (for a dataset: ``meta["id"]`` and
    ``meta["size"]``). Returns the restored predictions (see :func:`restore_predictions`) for further use.
    """
    restored = restore_predictions(raw, specs, sizes)
    for name, predictions in zip(names, restored, strict=False):
        for task, prediction in predictions.items():
            save_prediction(specs[task], prediction, Path(out_dir) / task, name, save_format)
    return restored


def render_panel(image: np.ndarray, predictions: Mapping[str, np.ndarray], specs: Mapping[str, TaskSpec]) -> Figure:
    """One row: the image, then each task's prediction drawn by ``TaskSpec.render`` and titled with its title.

    Panes keep the image's aspect up to :data:`PANEL_MAX_ASPECT`; a more elongated image is drawn stretched, so the
    figure's size is bounded whatever the image's."""
    from matplotlib.figure import Figure  # slow to import; only panels need it

    panes = [("Image", image)] + [(specs[task].title, specs[task].render(p)) for task, p in predictions.items()]
    height, width = image.shape[:2]
    aspect = min(max(height / width, 1 / PANEL_MAX_ASPECT), PANEL_MAX_ASPECT)
    stretched = aspect != height / width
    figure = Figure(figsize=(2.6 * len(panes), 2.6 * aspect + 0.4), layout="constrained")
    for axes, (title, picture) in zip(figure.subplots(1, len(panes), squeeze=False)[0], panes, strict=True):
        axes.imshow(picture, aspect="auto" if stretched else "equal", interpolation="nearest" if stretched else None)
        axes.set_title(title, fontsize=9)
        axes.set_axis_off()
    return figure


def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: int = 100) -> None:
    """Write a matplotlib figure as a PNG, atomically (Agg; no display needed)."""
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=dpi)


def _panel_view(picture: np.ndarray, channels_first: bool) -> np.ndarray:
    """``picture`` (``[C x] H x W`` or ``H x W x C``) subsampled to at most :data:`PANEL_MAX_SIDE` pixels a side."""
    height, width = picture.shape[-2:] if channels_first or picture.ndim == 2 else picture.shape[:2]
    step = -(-max(height, width) // PANEL_MAX_SIDE)
    if step <= 1:
        return picture
    if channels_first or picture.ndim == 2:
        return np.ascontiguousarray(picture[..., ::step, ::step])
    return np.ascontiguousarray(picture[::step, ::step])


def _save_one_image(
    pipeline: Pipeline, raw: Mapping[str, torch.Tensor], index: int, loaded: _Loaded, out_dir: Path,
    save_format: SaveFormat, panels: bool, convention: str = "authors",
) -> None:
    """Restore and save sample ``index`` of a batch one task at a time (each full-size map freed before the next),
    keeping only panel-sized copies for the overview panel; task folders named as ``convention`` names them
    (:mod:`tsn.inference.conventions`)."""
    from tsn.inference.conventions import get_convention

    folders = get_convention(convention)
    shown: dict[str, np.ndarray] = {}
    for task, restored in pipeline.predictions(raw, index, loaded.item):
        save_prediction(pipeline.specs[task], restored, out_dir / folders.folder(task), loaded.name, save_format)
        if panels:
            shown[task] = _panel_view(restored, channels_first=True)
        del restored
    if panels:
        figure = render_panel(_panel_view(loaded.item.pixels, channels_first=False), shown, pipeline.specs)
        save_figure(figure, out_dir / PANELS_FOLDER / f"{loaded.name}.png")


def predict_files(
    model: DensePredictionModel,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    tasks: TaskArg = None,
    size: tuple[int, int] = (512, 512),
    batch_size: int = 1,
    workers: int = 0,
    save_format: SaveFormat = "visual",
    panels: bool = True,
    progress: bool = True,
    on_skip: Callable[[Skipped], None] | None = None,
    convention: str = "authors",
    budget: PixelBudget | None = PREDICTION_BUDGET,
) -> PredictSummary:
    """Predict ``tasks`` (None: all of the model's) on image files and folders, saving into ``out_dir``.

    ``convention`` names the task folders as a codebase does (``authors``: tsn's task names; ``astmt``,
    ``invpt``: ``sal/``, ``edge/``; see :mod:`tsn.inference.conventions`).

    ``model`` must be in eval mode, on the device to run on. Images are read by ``workers`` DataLoader processes,
    resized to ``size = (H, W)`` (at least the model's minimum, checked first) and run ``batch_size`` at a time;
    predictions are saved at each image's original size within the pixel ``budget`` (:class:`PredictSummary` lists
    the images predicted smaller), plus one ``panels/<name>.png`` overview per image when ``panels`` is set.
    Unusable inputs are passed to ``on_skip`` as they are met and listed in the summary; they never stop the run.
    An input that is ``out_dir`` or lies inside it is refused first (:func:`check_output_folder`).
    """
    check_output_folder(inputs, out_dir)
    pipeline = Pipeline(model, tasks=tasks, fit=Resize(size), budget=budget)
    files, unusable = collect_inputs(inputs)
    summary = PredictSummary(tasks=list(pipeline.tasks))

    def skip(item: Skipped) -> None:
        summary.skipped.append(item)
        if on_skip is not None:
            on_skip(item)

    for item in unusable:
        skip(item)
    loader = data_loader(ImageFiles(files, pipeline.preparer), batch_size=batch_size, num_workers=workers,
                         collate_fn=list)  # workers end with this process, even after kill -9
    out_dir = Path(out_dir)
    bar = tqdm(total=len(files), unit="img", desc="predict", disable=None if progress else True)
    with bar:
        for items in loader:
            loaded = [item for item in items if isinstance(item, _Loaded)]
            for item in items:
                if isinstance(item, Skipped):
                    skip(item)
            if loaded:
                raw = pipeline.forward([image.item for image in loaded])
                for index, image in enumerate(loaded):
                    _save_one_image(pipeline, raw, index, image, out_dir, save_format, panels, convention)
                    summary.processed.append(image.path)
                    if image.item.size != image.item.original_size:
                        summary.reduced.append((image.path, image.item.original_size, image.item.size))
                del raw
            bar.update(len(items))
    return summary


def predict_checkpoint(
    checkpoint: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    speed: SpeedOptions | None = None,
    tasks: TaskArg = None,
    size: tuple[int, int] = (512, 512),
    batch_size: int = 1,
    workers: int = 0,
    save_format: SaveFormat = "visual",
    panels: bool = True,
    progress: bool = True,
    on_skip: Callable[[Skipped], None] | None = None,
    convention: str = "authors",
) -> PredictSummary:
    """:func:`predict_files` with the model of a checkpoint, loaded on ``device`` (``auto``: a GPU if any).

    ``speed``: the :mod:`tsn.inference.speed` options applied to the model (default
    :func:`~tsn.inference.speed.exact_options`: float32 results, no compilation); they change nothing outside it.
    """
    from tsn.inference.speed import exact_options, optimize
    from tsn.models.checkpoint import load_model
    from tsn.utils.device import resolve_device

    check_output_folder(inputs, out_dir)  # before the model is loaded
    run_on = resolve_device(str(device))
    model = load_model(checkpoint, map_location=run_on)
    Pipeline(model, tasks=tasks, fit=Resize(size))  # the size and the tasks checked before any optimisation
    model = optimize(model, exact_options(run_on) if speed is None else speed)
    return predict_files(model, inputs, out_dir, tasks=tasks, size=size, batch_size=batch_size, workers=workers,
                         save_format=save_format, panels=panels, progress=progress, on_skip=on_skip,
                         convention=convention)
