"""Inference on image files, and predictions saved in the authors' conventions.

The pipeline of ``tsn predict`` (and of ``tsn evaluate --save-predictions``, which calls :func:`save_predictions`):

1. read an image file with :func:`tsn.data.images.decode_image` (any Pillow mode, 16-bit images by their full
   range, EXIF orientation applied; an image over twice the model input per side decoded reduced, so a huge
   file costs little memory) and preprocess it exactly as the evaluation pipeline does
   (:func:`tsn.data.transforms.build_transforms` ``"eval"``: bicubic resize of the uint8 image to the model
   input size, ImageNet normalisation);
2. run every requested task on a batch of images (the encoder once, the decoder passes batched);
3. per task, ``TaskSpec.postprocess`` at the network resolution, then ``TaskSpec.resize_prediction`` back to each
   image's original size;
4. ``TaskSpec.to_saved`` gives the authors' arrays (class indices, ``255 * p`` and ``(n + 1) * 255 / 2``, all
   truncated to uint8; raw depth), written as ``<out>/<task>/<name>.png`` (depth: ``.mat``). :func:`predict_files`
   restores, saves and frees one task at a time, and draws the panels from copies of at most
   :data:`PANEL_MAX_SIDE` pixels a side, so a very large image never holds every task at full size at once.

Two save formats: ``authors`` writes exactly the reference's files (grey index PNGs, no extras), ready for the
evaluators; ``visual`` writes the same values but makes class maps palette PNGs (still the class indices, drawn in
the VOC colours) and adds a grey depth PNG for viewing. Every file is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tsn.data.images import decode_image, read_rgb_image
from tsn.data.transforms import Compose, build_transforms
from tsn.errors import TsnError
from tsn.inference.speed import SpeedOptions
from tsn.models.backbone import encoder_feature_info
from tsn.models.base import DensePredictionModel, TaskArg
from tsn.tasks import TaskSpec, color_palette
from tsn.utils.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "check_input_size",
    "SaveFormat",
    "SAVE_FORMATS",
    "PANELS_FOLDER",
    "Skipped",
    "PredictSummary",
    "ImageFiles",
    "load_image",
    "collect_inputs",
    "restore_predictions",
    "save_prediction",
    "save_predictions",
    "render_panel",
    "save_figure",
    "predict_files",
    "predict_checkpoint",
]

SaveFormat = Literal["visual", "authors"]
SAVE_FORMATS: tuple[str, ...] = ("visual", "authors")

PANELS_FOLDER = "panels"
"""Sub-folder of the output folder that holds the per-image overview panels."""

PANEL_MAX_SIDE = 1024
"""Longest side of the pictures a panel draws (a panel pane is a few hundred pixels wide; larger images and
predictions are subsampled for it, which keeps the drawing of a huge image cheap)."""

_PALETTE = color_palette().tobytes()


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


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 RGB at full size, upright (:func:`tsn.data.images.read_rgb_image`).

    A file that is not an image, or a corrupt or truncated one, raises a one-line :class:`TsnError` naming it.
    """
    return read_rgb_image(path)


def collect_inputs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """Files to predict with their output names (file stems), and the inputs that cannot be used.

    A folder contributes its files (sorted, hidden ones and sub-folders left out); a file named twice counts once.
    Missing paths, empty folders and a second file with an already used stem (its outputs would overwrite the
    first's) are skipped.
    """
    files: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    owner: dict[str, Path] = {}
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
            if not found:
                skipped.append(Skipped(entry, f"{entry}: folder without files"))
        elif entry.is_file():
            found = [entry]
        else:
            skipped.append(Skipped(entry, f"{entry}: no such file or folder"))
            continue
        for path in found:
            if path.stem in owner and owner[path.stem].resolve() == path.resolve():
                continue  # the same file named twice (e.g. alone and through its folder)
            if path.stem in owner:
                message = f"{path}: same name as {owner[path.stem]}, whose outputs it would overwrite; rename one"
                skipped.append(Skipped(path, message))
                continue
            owner[path.stem] = path
            files.append((path, path.stem))
    return files, skipped


@dataclass(frozen=True)
class _Loaded:
    path: Path
    name: str
    image: np.ndarray
    """The uint8 RGB image as decoded (reduced for an image far larger than the network input), for the panel."""
    size: tuple[int, int]
    """``(H, W)`` of the full upright image: the size of the saved predictions."""
    tensor: torch.Tensor
    """The network input: ``3 x H x W`` at the model input size, normalised."""


class ImageFiles(Dataset):
    """Image files preprocessed for the network; an unreadable file yields a :class:`Skipped` instead of raising,
    so one bad file does not stop a batch (or a DataLoader worker)."""

    def __init__(self, files: Sequence[tuple[Path, str]], size: tuple[int, int]) -> None:
        self.files = list(files)
        self.size = (int(size[0]), int(size[1]))
        self.transform: Compose = build_transforms("eval", size, tasks=(), seed=0)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> _Loaded | Skipped:
        path, name = self.files[index]
        try:
            decoded = decode_image(path, target_size=self.size)
        except TsnError as error:
            return Skipped(path, str(error))
        sample = self.transform({"image": decoded.pixels})
        return _Loaded(path, name, decoded.pixels, decoded.size, sample["image"])


def restore_predictions(
    raw: Mapping[str, torch.Tensor], specs: Mapping[str, TaskSpec], sizes: Sequence[tuple[int, int]]
) -> list[dict[str, np.ndarray]]:
    """Raw outputs of a batch (``N x C x h x w`` per task) -> per image, per task, the postprocessed prediction
    at that image's original ``size = (H, W)`` (``H x W`` class indices, ``C x H x W`` otherwise), on the CPU.

    Postprocessing happens before the resize, as in the reference (probabilities and unit vectors are
    interpolated, not logits).
    """
    restored: list[dict[str, np.ndarray]] = [{} for _ in sizes]
    for name, output in raw.items():
        spec = specs[name]
        prediction = spec.postprocess(output)
        for index, (height, width) in enumerate(sizes):
            resized = spec.resize_prediction(prediction[index : index + 1], (height, width))
            restored[index][name] = resized[0].cpu().numpy()
    return restored


def _write_png(path: Path, image: Image.Image) -> None:
    with atomic_write(path) as handle:
        image.save(handle, format="PNG")


def save_prediction(
    spec: TaskSpec, prediction: np.ndarray, folder: str | os.PathLike[str], name: str,
    save_format: SaveFormat = "authors",
) -> None:
    """Write one image's postprocessed ``prediction`` for ``spec`` as ``folder/<name><spec.saved_suffix>``.

    PNGs hold ``spec.to_saved(prediction)`` (grey, or RGB for unit vectors); ``.mat`` files hold it under the task's
    name (``depth``, the authors' key). The ``visual`` format stores class maps as palette PNGs (the same indices)
    and adds a grey ``<name>.png`` picture of ``.mat`` predictions.
    """
    if save_format not in SAVE_FORMATS:
        raise TsnError(f"unknown save format {save_format!r}; choose one of: {', '.join(SAVE_FORMATS)}")
    folder = Path(folder)
    saved = spec.to_saved(prediction)
    if spec.saved_suffix == ".mat":
        with atomic_write(folder / f"{name}.mat") as handle:
            scipy.io.savemat(handle, {spec.name: saved})
        if save_format == "visual":
            _write_png(folder / f"{name}.png", Image.fromarray(spec.render(prediction)[..., 0]))
        return
    image = Image.fromarray(saved)
    if save_format == "visual" and spec.kind.indexed_png:
        image.putpalette(_PALETTE)  # mode L -> P: the pixels stay the class indices, viewers show VOC colours
    _write_png(folder / f"{name}{spec.saved_suffix}", image)


def save_predictions(
    raw: Mapping[str, torch.Tensor],
    specs: Mapping[str, TaskSpec],
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
    """One row: the image, then each task's prediction drawn by ``TaskSpec.render`` and titled with its title."""
    from matplotlib.figure import Figure  # slow to import; only panels need it

    panes = [("Image", image)] + [(specs[task].title, specs[task].render(p)) for task, p in predictions.items()]
    height, width = image.shape[:2]
    figure = Figure(figsize=(2.6 * len(panes), 2.6 * height / width + 0.4), layout="constrained")
    for axes, (title, picture) in zip(figure.subplots(1, len(panes), squeeze=False)[0], panes, strict=True):
        axes.imshow(picture)
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
    raw: Mapping[str, torch.Tensor],
    index: int,
    item: _Loaded,
    specs: Mapping[str, TaskSpec],
    out_dir: Path,
    save_format: SaveFormat,
    panels: bool,
) -> None:
    """Restore and save sample ``index`` of a batch one task at a time (each full-size map freed before the next),
    keeping only panel-sized copies for the overview panel."""
    shown: dict[str, np.ndarray] = {}
    for task, output in raw.items():
        (prediction,) = restore_predictions({task: output[index : index + 1]}, specs, [item.size])
        restored = prediction[task]
        save_prediction(specs[task], restored, out_dir / task, item.name, save_format)
        if panels:
            shown[task] = _panel_view(restored, channels_first=True)
        del prediction, restored
    if panels:
        figure = render_panel(_panel_view(item.image, channels_first=False), shown, specs)
        save_figure(figure, out_dir / PANELS_FOLDER / f"{item.name}.png")


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
) -> PredictSummary:
    """Predict ``tasks`` (None: all of the model's) on image files and folders, saving into ``out_dir``.

    ``model`` must be in eval mode, on the device to run on. Images are read by ``workers`` DataLoader processes,
    resized to ``size = (H, W)`` and run ``batch_size`` at a time; predictions are saved at each image's original
    size (:func:`save_predictions`), plus one ``panels/<name>.png`` overview per image when ``panels`` is set.
    Unusable inputs are passed to ``on_skip`` as they are met and listed in the summary; they never stop the run.
    """
    names = model.task_names(tasks)
    specs = {name: model.task_specs[name] for name in names}
    device = next(model.parameters()).device
    files, unusable = collect_inputs(inputs)
    summary = PredictSummary(tasks=list(names))

    def skip(item: Skipped) -> None:
        summary.skipped.append(item)
        if on_skip is not None:
            on_skip(item)

    for item in unusable:
        skip(item)
    loader = DataLoader(ImageFiles(files, size), batch_size=batch_size, num_workers=workers, collate_fn=list)
    out_dir = Path(out_dir)
    bar = tqdm(total=len(files), unit="img", desc="predict", disable=None if progress else True)
    with bar, torch.inference_mode():
        for items in loader:
            loaded = [item for item in items if isinstance(item, _Loaded)]
            for item in items:
                if isinstance(item, Skipped):
                    skip(item)
            if loaded:
                raw = model(torch.stack([item.tensor for item in loaded]).to(device), names)
                for index, image in enumerate(loaded):
                    _save_one_image(raw, index, image, specs, out_dir, save_format, panels)
                    summary.processed.append(image.path)
            bar.update(len(items))
    return summary


def check_input_size(model: DensePredictionModel, size: tuple[int, int]) -> None:
    """A one-line :class:`TsnError` when ``size`` leaves the encoder's coarsest map with one pixel per side:
    instance normalisation needs more than one value per map."""
    smallest = 2 * max(encoder_feature_info(model.encoder).reduction())
    if min(size) < smallest:
        raise TsnError(
            f"--size {size[0]}x{size[1]} is too small for this model's encoder: use at least {smallest} x {smallest}"
        )


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
) -> PredictSummary:
    """:func:`predict_files` with the model of a checkpoint, loaded on ``device`` (``auto``: a GPU if any).

    ``speed``: the :mod:`tsn.inference.speed` options applied to the model (default
    :func:`~tsn.inference.speed.exact_options`: float32 results, no compilation); they change nothing outside it.
    """
    from tsn.inference.speed import exact_options, optimize
    from tsn.models.checkpoint import load_model
    from tsn.utils.device import resolve_device

    run_on = resolve_device(str(device))
    model = load_model(checkpoint, map_location=run_on)
    check_input_size(model, size)
    model = optimize(model, exact_options(run_on) if speed is None else speed)
    return predict_files(model, inputs, out_dir, tasks=tasks, size=size, batch_size=batch_size, workers=workers,
                         save_format=save_format, panels=panels, progress=progress, on_skip=on_skip)
