"""``tsn demo``: the main job on the embedded synthetic scenes, end to end, in a few minutes on a laptop CPU.

Generates (or reuses) the scenes, trains a TSN with the ``synthetic-tsn`` preset, evaluates every task on the
validation split next to a trivial predictor scored by the same code, prints the table and writes a picture of
inputs, ground truth and predictions, the metrics and the checkpoint into one output folder.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from tsn.training import TrainConfig, ValidationResult
    from tsn.tasks import TaskSpec

__all__ = ["HELP", "DESCRIPTION", "PRESET", "add_arguments", "run"]

HELP = "train and evaluate a TSN on the embedded synthetic scenes (a few minutes on a CPU), with a picture"
DESCRIPTION = (
    "The main job on the embedded default: generate the synthetic scenes (cached after the first run), train a "
    "TSN on all six tasks, evaluate it on the validation split beside a trivial predictor, print the metrics "
    "table and write predictions.png, metrics.json and the checkpoint to an output folder."
)

PRESET = "synthetic-tsn"
PICTURE_IMAGES = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/demo-<date>-<time>)")
    parser.add_argument("--steps", type=int, help="training steps (default: the preset's epochs)")
    parser.add_argument("--size", type=int, help="scene and network side, a multiple of 32, at least 64 (default: 64)")
    parser.add_argument("--train-images", type=int, help="training scenes (default: 2000)")
    parser.add_argument("--val-images", type=int, help="validation scenes (default: 300)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a value of the {PRESET} config (see tsn train)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check_numbers(args: argparse.Namespace) -> None:
    """The demo's own options, refused in one line before anything is generated or trained."""
    from tsn.errors import TsnError
    from tsn.utils.checks import require_int

    for option, value in (("--steps", args.steps), ("--train-images", args.train_images),
                          ("--val-images", args.val_images), ("--threads", args.threads)):
        if value is not None:
            require_int(option, value, minimum=1)
    if args.size is not None and (args.size < 64 or args.size % 32):
        raise TsnError(f"--size {args.size}: use a multiple of 32 of at least 64 (e.g. 64 or 128)")


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = []
    if args.steps is not None:
        overrides.append(f"max_steps={args.steps}")
    if args.size is not None:
        overrides += [f"data.size={args.size}", f"data.options.size={args.size}"]
    if args.train_images is not None:
        overrides.append(f"data.train_options.length={args.train_images}")
    if args.val_images is not None:
        overrides.append(f"data.val_options.length={args.val_images}")
    return overrides + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    import torch

    from tsn.commands.train import check_run_dir
    from tsn.training import load_config, train

    started = time.perf_counter()
    _check_numbers(args)
    config = load_config(PRESET, _overrides(args))  # every value checked, nothing created yet
    out = Path(args.out or datetime.now().strftime("runs/demo-%Y%m%d-%H%M%S"))
    check_run_dir(str(out), "--out", resume=False)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    result = train(config, out, progress=not args.no_progress)
    if result.status != "finished" or result.validation is None:
        print(f"interrupted; the run is in {out} (resume it with: tsn train --resume {out})")
        return 130
    trained = time.perf_counter() - started
    print("scoring the trivial predictor and drawing the predictions...", flush=True)
    specs = {spec.name: spec for spec in config.model.task_specs}
    val_data = _dataset(config, config.data.val_split, config.data.val_options)
    baseline, described = _trivial_baseline(config, specs, val_data)
    rows = _rows(specs, result.validation["metrics"], baseline.metrics, described)
    _write_outputs(out, rows, result.checkpoint)
    _save_picture(out / "predictions.png", specs, val_data, result.checkpoint)
    print(_table(rows))
    total = time.perf_counter() - started
    print(f"\n{result.step} training steps; trained and validated in {trained:.0f} s, {total:.0f} s in all")
    print(f"outputs in {out}/: predictions.png, metrics.json, metrics.md, checkpoint {result.checkpoint.name} "
          f"(in {result.checkpoint.parent.name}/), train.log, tensorboard/")
    return 0


def _dataset(config: TrainConfig, split: str, options: Mapping[str, Any]) -> Any:
    """A split of the demo's data, transformed for evaluation (the validation pipeline)."""
    from tsn.data import build_dataset, build_transforms

    d, specs = config.data, config.model.task_specs
    transform = build_transforms("eval", d.size, tasks=specs, seed=0)
    return build_dataset(d.dataset, split, tasks=specs, transform=transform, **{**d.options, **options})


def _trivial_baseline(
    config: TrainConfig, specs: Mapping[str, TaskSpec], val_data: Dataset
) -> tuple[ValidationResult, dict[str, str]]:
    """The constant predictor fitted on the training labels, validated like the TSN."""
    from torch.utils.data import DataLoader

    from tsn.data import collate
    from tsn.training.distributed import DistContext
    from tsn.training.validation import fit_constant_predictor, validate, validation_loader
    from tsn.training.losses import loss_weights

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
    from tsn.evaluation.evaluate import table_value

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


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | metric | TSN | trivial | trivial predictor |", "|---|---|---|---|---|"]
    for row in rows:
        arrow = "higher is better" if row["higher_is_better"] else "lower is better"
        lines.append(f"| {row['task']} | {row['metric']} ({arrow}) | {row['tsn']:.2f} | {row['trivial']:.2f} | "
                     f"{row['trivial_predictor']} |")
    return "\n".join(lines)


def _write_outputs(out: Path, rows: list[dict[str, Any]], checkpoint: Path) -> None:
    from tsn.utils.io import atomic_write_json, atomic_write_text

    atomic_write_json(out / "metrics.json", {"preset": PRESET, "checkpoint": str(checkpoint), "tasks": rows})
    atomic_write_text(out / "metrics.md", _table(rows) + "\n")


def _save_picture(path: Path, specs: Mapping[str, TaskSpec], val_data: Dataset, checkpoint: Path) -> None:
    """Rows of (input + ground truth) and (TSN predictions) for the first validation images."""
    import torch
    from matplotlib.figure import Figure

    from tsn.models.checkpoint import load_model
    from tsn.data import collate
    from tsn.data.transforms import denormalize_image
    from tsn.inference.predict import save_figure

    batch = collate([val_data[i] for i in range(min(PICTURE_IMAGES, len(val_data)))])
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
        for ax, (title, picture) in zip(axes[2 * i : 2 * i + 2].ravel(), panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_axis_off()
    save_figure(figure, path, dpi=110)
