"""``tsn predict``: run a checkpoint's tasks on image files and folders, save per-task maps and overview panels."""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "parse_size"]

HELP = "predict every task of a checkpoint on images; save per-task maps (and overview panels)"
DESCRIPTION = (
    "Run a tsn checkpoint on image files and folders (any size, any format Pillow reads). Writes "
    "OUT/<task>/<name>.png for every task at the image's original size (depth also as <name>.mat, key 'depth') "
    "and one overview OUT/panels/<name>.png per image. --save-format authors writes exactly the TSNs/ASTMT "
    "evaluation files instead. Unreadable files are reported and skipped."
)


TUNE_ALLOCATOR_HELP = (
    "faster on CPU: let glibc keep freed memory instead of page-faulting fresh memory in for every large tensor "
    "(process-wide; the process keeps its peak memory until it exits; results unchanged)"
)


def parse_size(text: str) -> tuple[int, int]:
    """``512`` -> (512, 512); ``480x640`` -> (480, 640) as (H, W): the syntax and the largest side of
    :func:`tsn.inference.input_size.input_size`; the model's smallest side is checked once it is loaded."""
    from tsn.inference.input_size import parse_size_text

    return parse_size_text(text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="tsn checkpoint (.pt/.safetensors)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    parser.add_argument(
        "--tasks", default="all", help="comma-separated task names or aliases (e.g. seg,normals), or all (default)"
    )
    parser.add_argument(
        "--size", type=parse_size, default=(512, 512), metavar="N|HxW",
        help="network input size; images are resized to it and predictions back (default 512, the paper's; at "
        "least twice the encoder's largest stride, e.g. 64 for ResNets, and at most 2048)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=1,
        help="images per forward pass (default 1; each image of the paper's model at 512 needs ~2 GB for its "
        "5 tasks, so raise it on a large GPU)",
    )
    parser.add_argument("--device", default="auto", help="auto (default: GPU if any), cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, default=2, help="image-reading processes (default 2; 0: none)")
    parser.add_argument(
        # tsn.inference.predict.SAVE_FORMATS, spelled out so that building the parser imports no engine code
        "--save-format", choices=("visual", "authors"), default="visual",
        help="visual (default): palette PNGs, depth picture, panels; authors: exactly the reference's files "
        "(grey index PNGs, 255*sigmoid, RGB normals, depth .mat), ready for evaluation",
    )
    parser.add_argument(
        # tsn.inference.conventions.list_conventions(), spelled out so that building the parser imports no engine code
        "--format", choices=("authors", "astmt", "invpt"), dest="convention",
        help="write the authors' files (as --save-format authors, no panels) in a codebase's folder convention: "
        "authors (tsn's task names), astmt (ASTMT / the MTL survey: sal/, edge/), invpt (the InvPT family's, "
        "the same files); read back by tsn evaluate --predictions DIR --format X",
    )
    parser.add_argument("--no-panels", action="store_true", help="do not draw the per-image overview panels")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.add_argument("--tune-allocator", action="store_true", help=TUNE_ALLOCATOR_HELP)


def _check_inputs_and_output(args: argparse.Namespace) -> None:
    """Before the model is loaded: worker count, at least one existing input, a writable output folder (that it
    holds no input, :func:`tsn.inference.predict.predict_checkpoint` checks first)."""
    from pathlib import Path

    from tsn.errors import TsnError
    from tsn.utils.checks import ensure_writable_dir, require_int

    require_int("--workers", args.workers, minimum=0)
    if not any(Path(item).expanduser().exists() for item in args.inputs):
        shown = ", ".join(str(item) for item in args.inputs[:3]) + (", ..." if len(args.inputs) > 3 else "")
        raise TsnError(f"none of the inputs exist ({shown}); give image files or folders of images")
    # Not created yet: a run that fails before writing anything leaves no empty folder behind.
    ensure_writable_dir(args.output, "-o/--output", create=False)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tsn.errors import TsnError
    from tsn.inference.predict import Skipped, predict_checkpoint
    from tsn.inference.speed import exact_options, tune_glibc_allocator
    from tsn.utils.checks import escaped
    from tsn.utils.device import resolve_device

    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    if not names:
        raise TsnError("--tasks is empty; give task names (e.g. seg,normals) or all")
    _check_inputs_and_output(args)
    tasks = None if [name.lower() for name in names] == ["all"] else names
    device = resolve_device(args.device)
    if args.tune_allocator:
        tune_glibc_allocator()

    def report(item: Skipped) -> None:
        tqdm.write(f"tsn predict: skipped {item.message}", file=sys.stderr)

    summary = predict_checkpoint(
        args.checkpoint,
        args.inputs,
        args.output,
        device=device,
        speed=exact_options(device),
        tasks=tasks,
        size=args.size,
        batch_size=args.batch_size,
        workers=args.workers,
        save_format="authors" if args.convention else args.save_format,
        panels=args.save_format == "visual" and not args.convention and not args.no_panels,
        progress=not args.no_progress,
        on_skip=report,
        convention=args.convention or "authors",
    )
    if not summary.processed:
        raise TsnError(f"none of the {len(summary.skipped)} input(s) could be read as an image; nothing written")
    for path, (height, width), (saved_h, saved_w) in summary.reduced:
        tqdm.write(f"tsn predict: note: {escaped(path)} is {height}x{width}, over the pixel budget; its predictions "
                   f"are {saved_h}x{saved_w}", file=sys.stderr)
    print(
        f"wrote {', '.join(summary.tasks)} predictions of {len(summary.processed)} image(s) to "
        f"{escaped(args.output)} ({args.convention or args.save_format} format); skipped {len(summary.skipped)}"
    )
    return 0
