"""``tsn convert``: the authors' published checkpoint -> a self-describing tsn checkpoint."""

from __future__ import annotations

import argparse

HELP = "convert an authors' TSNs checkpoint (tsns_model.pth, single_task_<task>.pth) to a tsn checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("official", help="the authors' .pth file ({'model_state': state_dict})")
    parser.add_argument("-o", "--output", required=True, help="output checkpoint (.pt or .safetensors)")
    parser.add_argument("--task", help="task of a single-task checkpoint when the file name does not say it")


def run(args: argparse.Namespace) -> int:
    from tsn.checkpoint import load_model
    from tsn.convert import convert_official_checkpoint

    path = convert_official_checkpoint(args.official, args.output, task=args.task)
    model = load_model(path)
    print(
        f"wrote {path}: {model.config.arch} on {model.config.backbone}, tasks {', '.join(model.tasks)}, "
        f"{model.num_parameters():,} parameters"
    )
    return 0
