"""``tsn convert``: the authors' published checkpoint -> a self-describing tsn checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsn.utils.checks import escaped

HELP = "convert an authors' TSNs checkpoint (tsns_model.pth, single_task_<task>.pth) to a tsn checkpoint"

_OUTPUT_SUFFIXES = (".pt", ".pth", ".safetensors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("official", help="the authors' .pth file ({'model_state': state_dict})")
    parser.add_argument("-o", "--output", help="output checkpoint (.pt or .safetensors)")
    parser.add_argument("--task", help="task of a single-task checkpoint when the file name does not say it")
    parser.add_argument("--save-pretrained", metavar="DIR",
                        help="(also) write the model as a shareable folder: safetensors, config.json and a model "
                             "card stating its origin and the evidence that the weights are unchanged (tsn push)")


def _check_arguments(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """Input readable, output a writable file path with a known suffix, not the input itself: before any work."""
    from tsn.errors import TsnError
    from tsn.tasks import get_task
    from tsn.utils.checks import ensure_writable_file, require_existing_file

    if args.output is None and args.save_pretrained is None:
        raise TsnError("give -o OUT.pt (a checkpoint), --save-pretrained DIR (a shareable folder), or both")
    official = require_existing_file(args.official, "the authors' checkpoint")
    if args.save_pretrained is not None:
        from tsn.hub.folder import check_output

        check_output(Path(args.save_pretrained).expanduser(), inputs=(official,))
    if args.task is not None:
        get_task(args.task)  # an unknown task name is refused before the file is read
    if args.output is None:
        return official, None
    output = Path(args.output).expanduser()
    if not output.is_dir() and output.suffix not in _OUTPUT_SUFFIXES:
        raise TsnError(
            f"--output: {output} must end in .pt (a torch checkpoint) or .safetensors (weights only); "
            f"for example {output.with_suffix('.pt')}"
        )
    output = ensure_writable_file(output, "--output", create_parent=False)
    if output.exists() and output.resolve() == official.resolve():
        raise TsnError(f"--output: {output} is the authors' checkpoint itself; choose another output file")
    return official, output


def run(args: argparse.Namespace) -> int:
    from tsn.models.checkpoint import load_model
    from tsn.models.convert import convert_official_checkpoint

    official, output = _check_arguments(args)
    if args.save_pretrained is not None:
        from tsn.hub import save_converted_pretrained

        folder = save_converted_pretrained(official, args.save_pretrained, task=args.task,
                                           notes=None if output else print)
        print(f"wrote {escaped(folder)}: model.safetensors, config.json and a model card (README.md) with the origin; "
              f"publish it with: tsn push {escaped(folder)} ORG/NAME")
    if output is None:
        return 0
    path = convert_official_checkpoint(official, output, task=args.task, notes=print)
    model = load_model(path)
    print(
        f"wrote {escaped(path)}: {model.config.arch} on {model.config.backbone}, tasks {', '.join(model.tasks)}, "
        f"{model.num_parameters():,} parameters"
    )
    return 0
