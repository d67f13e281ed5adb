"""The demo: the main job on the embedded synthetic scenes, end to end, in a few minutes on a laptop CPU.

Trains a TSN with the :data:`DEMO_PRESET` config (the scenes are generated, or reused from the cache, by the
dataset), evaluates every task on the validation split next to a trivial predictor scored by the same code, and
writes a picture of inputs, ground truth and predictions, the metrics and the checkpoint into one run folder.
``tsn demo`` is a thin command over :func:`run_demo`::

    config = load_config(DEMO_PRESET, ["max_steps=50"])
    result = run_demo(config, "runs/my-demo")
    print(demo_table(result.rows))
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from tsn.tasks import TaskSpec
    from tsn.training import RunResult, TrainConfig, ValidationResult

__all__ = ["DEMO_PRESET", "PICTURE_IMAGES", "DemoResult", "run_demo", "demo_table"]

DEMO_PRESET = "tsn_r10t_synthetic"
"""The training preset of the demo: a ResNet-10-T TSN on all six tasks of the 64 x 64 synthetic scenes."""
PICTURE_IMAGES = 4
"""Validation images drawn in ``predictions.png``."""


@dataclass
class DemoResult:
    """What :func:`run_demo` did. ``rows`` is empty when training was interrupted (``run.status``)."""

    run: RunResult
    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    trained_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def finished(self) -> bool:
        return self.run.status == "finished" and self.run.validation is not None


def run_demo(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    progress: bool = True,
    notes: Callable[[str], None] = print,
) -> DemoResult:
    """Train ``config`` into the run folder ``out``, then score it beside the trivial predictor and draw it.

    Writes ``out/metrics.json``, ``out/metrics.md`` and ``out/predictions.png`` next to the run's own files
    (config, log, checkpoints). An interrupted training (Ctrl-C) returns at once, unscored: resume it with
    ``tsn train --resume``. ``notes`` receives one progress line between training and scoring.
    """
    from tsn.training import train

    started = time.perf_counter()
    out = Path(out)
    result = DemoResult(train(config, out, progress=progress), out)
    validation = result.run.validation
    if result.run.status != "finished" or validation is None:
        return result
    result.trained_seconds = time.perf_counter() - started
    notes("scoring the trivial predictor and drawing the predictions...")
    specs = {spec.name: spec for spec in config.model.task_specs}
    val_data = _dataset(config, config.data.val_split, config.data.val_options)
    baseline, described = _trivial_baseline(config, specs, val_data)
    result.rows = _rows(specs, validation["metrics"], baseline.metrics, described)
    _write_outputs(out, config, result.rows, result.run.checkpoint)
    _save_picture(out / "predictions.png", specs, val_data, result.run.checkpoint)
    result.total_seconds = time.perf_counter() - started
    return result


def _dataset(config: TrainConfig, split: str, options: Mapping[str, Any]) -> Any:
    """A split of the demo's data, transformed for evaluation (the validation pipeline)."""
    from tsn.data import build_dataset, build_transforms

    d, specs = config.data, config.model.task_specs
    transform = build_transforms("eval", d.input_size, tasks=specs, seed=0)
    return build_dataset(d.dataset, split, tasks=specs, transform=transform, **{**d.options, **options})


def _trivial_baseline(
    config: TrainConfig, specs: Mapping[str, TaskSpec], val_data: Dataset
) -> tuple[ValidationResult, dict[str, str]]:
    """The constant predictor fitted on the training labels, validated like the TSN."""
    from torch.utils.data import DataLoader

    from tsn.data import collate
    from tsn.training.distributed import DistContext
    from tsn.training.losses import loss_weights
    from tsn.training.validation import fit_constant_predictor, validate, validation_loader

    d, v = config.data, config.validation
    train_data = _dataset(config, d.train_split, d.train_options)
    trivial, described = fit_constant_predictor(DataLoader(train_data, batch_size=256, collate_fn=collate), specs)
    loader = validation_loader(val_data, 64, DistContext(), max_images=v.max_images)
    result = validate(trivial, loader, specs, loss_weights(specs, config.loss_weights), metric_tasks=list(specs),
                      metric_options=v.metric_options)
    return result, described


def _rows(
    specs: Mapping[str, TaskSpec], tsn: Mapping[str, Any], trivial: Mapping[str, Any], described: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per task: the headline metric of the TSN and of the trivial predictor, in the paper's units."""
    from tsn.evaluation.tables import table_value

    rows = []
    for name, spec in specs.items():
        rows.append({
            "task": name,
            "metric": spec.metric,
            "higher_is_better": spec.higher_is_better,
            "tsn": table_value(spec, tsn[name][spec.metric]),
            "trivial": table_value(spec, trivial[name][spec.metric]),
            "trivial_predictor": described[name],
        })
    return rows


def demo_table(rows: list[dict[str, Any]]) -> str:
    """The rows of a :class:`DemoResult` as a markdown table (what ``tsn demo`` prints and writes)."""
    lines = ["| task | metric | TSN | trivial | trivial predictor |", "|---|---|---|---|---|"]
    for row in rows:
        arrow = "higher is better" if row["higher_is_better"] else "lower is better"
        lines.append(f"| {row['task']} | {row['metric']} ({arrow}) | {row['tsn']:.2f} | {row['trivial']:.2f} | "
                     f"{row['trivial_predictor']} |")
    return "\n".join(lines)


def _write_outputs(out: Path, config: TrainConfig, rows: list[dict[str, Any]], checkpoint: Path) -> None:
    from tsn.run_folder import RunPaths
    from tsn.utils.io import atomic_write_json, atomic_write_text

    preset = config.name or DEMO_PRESET
    atomic_write_json(RunPaths(out).demo_metrics, {"preset": preset, "checkpoint": str(checkpoint), "tasks": rows})
    atomic_write_text(out / "metrics.md", demo_table(rows) + "\n")


def _save_picture(path: Path, specs: Mapping[str, TaskSpec], val_data: Dataset, checkpoint: Path) -> None:
    """Rows of (input + ground truth) and (TSN predictions) for the first validation images."""
    import torch
    from matplotlib.figure import Figure

    from tsn.data import collate
    from tsn.data.transforms import denormalize_image
    from tsn.inference.predict import save_figure
    from tsn.models.checkpoint import load_model

    shown = min(PICTURE_IMAGES, len(cast(Sized, val_data)))  # map-style datasets have a length; torch's stub omits it
    batch = collate([val_data[i] for i in range(shown)])
    model = load_model(checkpoint)
    with torch.inference_mode():
        raw = model(batch["image"], list(specs))
    predictions = {name: spec.postprocess(raw[name]) for name, spec in specs.items()}
    columns = 1 + len(specs)
    count = len(batch["image"])
    figure = Figure(figsize=(1.6 * columns, 1.7 * 2 * count), layout="constrained")
    axes = figure.subplots(2 * count, columns, squeeze=False)
    for i in range(count):
        image = denormalize_image(batch["image"][i])
        panels = [("input", image)] + [(f"{name}\ntruth", specs[name].render(batch[name][i].numpy(), is_label=True))
                                       for name in specs]
        panels += [("input", image)] + [(f"{name}\nTSN", specs[name].render(predictions[name][i].numpy()))
                                        for name in specs]
        for ax, (title, picture) in zip(axes[2 * i : 2 * i + 2].ravel(), panels, strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    save_figure(figure, path, dpi=110)
