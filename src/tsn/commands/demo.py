"""``tsn demo``: the main job on the embedded synthetic scenes, end to end, in a few minutes on a laptop CPU.

Generates (or reuses) the scenes, trains a TSN with the ``tsn_r10t_synthetic`` preset, evaluates every task on the
validation split next to a trivial predictor scored by the same code, prints the table and writes a picture of
inputs, ground truth and predictions, the metrics and the checkpoint into one output folder.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from pathlib import Path

__all__ = ["HELP", "DESCRIPTION", "PRESET", "add_arguments", "run"]

HELP = "train and evaluate a TSN on the embedded synthetic scenes (a few minutes on a CPU), with a picture"
DESCRIPTION = (
    "The main job on the embedded default: generate the synthetic scenes (cached after the first run), train a "
    "TSN on all six tasks, evaluate it on the validation split beside a trivial predictor, print the metrics "
    "table and write predictions.png, metrics.json and the checkpoint to an output folder."
)

PRESET = "tsn_r10t_synthetic"
"""The demo's training preset (:data:`tsn.studies.demo.DEMO_PRESET`, spelled out so that building the parser
imports no library code)."""


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
    from tsn.studies.demo import demo_table, run_demo
    from tsn.training import load_config

    _check_numbers(args)
    config = load_config(PRESET, _overrides(args))  # every value checked, nothing created yet
    out = Path(args.out or datetime.now().strftime("runs/demo-%Y%m%d-%H%M%S"))
    check_run_dir(str(out), "--out", resume=False)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    result = run_demo(config, out, progress=not args.no_progress, notes=lambda line: print(line, flush=True))
    if not result.rows:
        print(f"interrupted; the run is in {out} (resume it with: tsn train --resume {out})")
        return 130
    print(demo_table(result.rows))
    print(f"\n{result.run.step} training steps; trained and validated in {result.trained_seconds:.0f} s, "
          f"{result.total_seconds:.0f} s in all")
    checkpoint = result.run.checkpoint
    print(f"outputs in {out}/: predictions.png, metrics.json, metrics.md, checkpoint {checkpoint.name} "
          f"(in {checkpoint.parent.name}/), train.log, tensorboard/")
    return 0
