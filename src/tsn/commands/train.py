"""``tsn train``: train a model from a preset or YAML config into a run directory, or resume one."""

from __future__ import annotations

import argparse
import os

from tsn.errors import TsnError
from tsn.utils.checks import escaped

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "check_run_dir", "label_fraction_overrides"]

HELP = "train a model from a config preset or YAML file (multi-GPU with torchrun), or resume an interrupted run"
DESCRIPTION = (
    "Train a TSN or a baseline from a config (a packaged preset such as tsn_r18_pascal, multihead_r18_pascal or "
    "single_r18_pascal.normals, or a YAML file) into a "
    "run directory holding the resolved config, a log, TensorBoard scalars and the last / best checkpoints. "
    "Ctrl-C or SIGTERM saves and stops; --resume continues exactly where the run stopped. A config's callbacks: "
    "list adds your own code to the loop (a registered name with tsn --plugin FILE, or module:Class). Several GPUs "
    "or nodes: "
    "torchrun --nproc_per_node=N -m tsn train ... See docs/training.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PRESET_OR_YAML", help="a preset name (see --list-presets) or a YAML file")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory to create (refused if it already holds a run)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, repeatable: --set optim.lr=3e-4 --set data.num_workers=4")
    parser.add_argument("--label-fraction", dest="label_fractions", action="append", default=[],
                        metavar="TASK=FRACTION",
                        help="train on partially labelled data: keep the labels of this fraction (0 < f <= 1) of the "
                             "training images for TASK, repeatable (config label_fractions; docs/training.md)")
    parser.add_argument("--pretrained-file", metavar="PATH",
                        help="load the backbone's weights from this local file (a machine without network); "
                             "the same as --set model.pretrained_file=PATH")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-presets", action="store_true", help="list the packaged config presets and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or console log (log file only)")
    parser.add_argument("--save-pretrained", metavar="DIR",
                        help="when the run finishes, also write its best model as a shareable folder (safetensors, "
                             "config.json, a model card with the recipe and validation; tsn push DIR ORG/NAME)")


def check_run_dir(out_dir: str, option: str, *, resume: bool) -> None:
    """Before any data is read or model built: the run folder can be written, and holds a run only to resume.

    Nothing is created here (the trainer creates the folder), so a run refused later leaves nothing behind.
    """
    from tsn.training.resume import check_run_dir as check_run_folder
    from tsn.utils.checks import ensure_writable_dir

    check_run_folder(ensure_writable_dir(out_dir, option, create=False), resume=resume)


def label_fraction_overrides(items: list[str]) -> list[str]:
    """``--label-fraction semseg=0.25`` -> the override ``label_fractions.semseg=0.25`` (checked with the config)."""
    overrides = []
    for item in items:
        task, sep, value = item.partition("=")
        if not sep or not task.strip() or not value.strip():
            raise TsnError(f"--label-fraction {item!r}: expected TASK=FRACTION, e.g. --label-fraction semseg=0.25")
        overrides.append(f"label_fractions.{task.strip()}={value.strip()}")
    return overrides


def run(args: argparse.Namespace) -> int:
    from tsn.training import list_presets, load_config, resume_config, train

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    args.overrides = [*args.overrides, *label_fraction_overrides(args.label_fractions)]
    if args.pretrained_file:
        args.overrides = [*args.overrides, f"model.pretrained_file={args.pretrained_file}"]
    if args.resume:
        if args.config or (args.out and args.out != args.resume):
            raise TsnError("--resume continues a run with its own config.yaml and folder; drop --config / --out "
                           "(use --set to change a value)")
        config, out_dir = resume_config(args.resume, args.overrides), args.resume
    else:
        if not args.config:
            raise TsnError("give --config PRESET_OR_YAML (see --list-presets), or --resume RUN_DIR")
        config, out_dir = load_config(args.config, args.overrides), args.out
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if not out_dir:
        raise TsnError("give --out RUN_DIR, the folder the run writes its config, log and checkpoints to")
    check_run_dir(out_dir, "--resume" if args.resume else "--out", resume=bool(args.resume))
    if args.save_pretrained:
        from pathlib import Path

        from tsn.hub.folder import check_output

        check_output(Path(args.save_pretrained).expanduser(), inputs=(Path(out_dir),))  # before training, not after
    result = train(config, out_dir, resume=bool(args.resume), progress=not args.no_progress)
    if args.save_pretrained and result.status == "finished" and os.environ.get("RANK", "0") == "0":  # torchrun: once
        from tsn.hub import save_run_pretrained

        print(f"wrote {escaped(save_run_pretrained(out_dir, args.save_pretrained))} (tsn push it to share the model)")
    # 130, as for Ctrl-C: a job script must not mistake a saved-but-unfinished run for a finished one.
    return 0 if result.status == "finished" else 130
