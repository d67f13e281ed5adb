"""``tsn data show``: draw a few samples of a dataset with every task label, as the network will see them."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsn.dataset_catalog import get_dataset, list_datasets
from tsn.utils.checks import ensure_writable_file, escaped, require_int

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "inspect a dataset: `tsn data show DATASET -o grid.png` draws samples with their labels"
DESCRIPTION = "Inspect a dataset (any registered one: `tsn data show --help` lists them). Actions: show."
_SHOW_DESCRIPTION = (
    "Draw the first N samples of a split, one row each: the image and every task label after the evaluation "
    "transform (resized to SIZE x SIZE; ignored pixels white in class maps, black otherwise)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="draw samples and their labels into a PNG grid",
                               description=_SHOW_DESCRIPTION)
    show.add_argument("dataset", metavar="DATASET", help=f"one of: {', '.join(list_datasets())}")
    show.add_argument("--split", default="val", help="split to draw from (default: val)")
    show.add_argument("--n", type=int, default=8, help="number of samples, one row each (default: 8)")
    show.add_argument("--data-root", metavar="DIR",
                      help="dataset root (default: $TSN_DATA_ROOT, else ~/.cache/tsn/data)")
    show.add_argument("--size", type=int, default=64, help="side of each drawn picture in pixels (default: 64)")
    show.add_argument("-o", "--output", type=Path, default=None, help="PNG to write (default: DATASET-SPLIT.png)")


def _show(args: argparse.Namespace) -> int:
    from tsn.data.preview import write_sample_grid  # matplotlib and torch: only when the command runs

    require_int("--n", args.n, minimum=1)
    require_int("--size", args.size, minimum=1)
    spec = get_dataset(args.dataset)
    dataset_name = spec.name
    # Checked before the data is read; the folder is created only when the picture is written.
    output = ensure_writable_file(args.output or Path(f"{dataset_name}-{args.split}.png"), "-o/--output",
                                  create_parent=False)
    drawn = write_sample_grid(dataset_name, output, split=args.split, n=args.n, size=args.size, root=args.data_root)
    print(f"wrote {escaped(output)} ({drawn} samples of {dataset_name} {args.split})")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"show": _show}[args.action](args)
