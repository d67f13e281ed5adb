"""``tsn data show``: draw a few samples of a dataset with every task label, as the network will see them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from tsn.data import DATASETS, build_dataset
from tsn.data.transforms import build_transforms, denormalize_image
from tsn.errors import TsnError
from tsn.tasks import get_task
from tsn.utils.checks import ensure_writable_file, require_int
from tsn.utils.io import atomic_write

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "sample_grid"]

HELP = "inspect a dataset: `tsn data show DATASET -o grid.png` draws samples with their labels"
DESCRIPTION = "Inspect a dataset (synthetic, pascal_context, nyud). Actions: show."
_SHOW_DESCRIPTION = (
    "Draw the first N samples of a split, one row each: the image and every task label after the evaluation "
    "transform (resized to SIZE x SIZE; ignored pixels white in class maps, black otherwise)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="draw samples and their labels into a PNG grid",
                               description=_SHOW_DESCRIPTION)
    show.add_argument("dataset", metavar="DATASET", help=f"one of: {', '.join(DATASETS)}")
    show.add_argument("--split", default="val", help="split to draw from (default: val)")
    show.add_argument("--n", type=int, default=8, help="number of samples, one row each (default: 8)")
    show.add_argument("--data-root", metavar="DIR",
                      help="dataset root (default: $TSN_DATA_ROOT, else ~/.cache/tsn/data)")
    show.add_argument("--size", type=int, default=64, help="side of each drawn picture in pixels (default: 64)")
    show.add_argument("-o", "--output", type=Path, default=None, help="PNG to write (default: DATASET-SPLIT.png)")


def sample_grid(dataset: Any, n: int, size: int) -> Figure:
    """A figure with one row per sample (the first ``n``): the image, then each task label, titled."""
    transform = build_transforms("eval", size=(size, size), tasks=dataset.tasks)
    samples = [transform(dataset[index]) for index in range(min(n, len(dataset)))]
    if not samples:
        raise TsnError("the dataset split is empty; nothing to show")
    specs = [get_task(key) for key in samples[0] if key not in ("image", "meta")]
    figure = Figure(figsize=(1.8 * (1 + len(specs)), 1.8 * len(samples)), layout="constrained")
    axes = figure.subplots(len(samples), 1 + len(specs), squeeze=False)
    for row, sample in zip(axes, samples):
        pictures = [denormalize_image(sample["image"])]
        pictures += [spec.render(sample[spec.name].numpy(), is_label=True) for spec in specs]
        for ax, picture in zip(row, pictures):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(str(sample["meta"]["id"]), fontsize=8)
    for ax, title in zip(axes[0], ["image", *(spec.title for spec in specs)]):
        ax.set_title(title, fontsize=9)
    return figure


def _show(args: argparse.Namespace) -> int:
    require_int("--n", args.n, minimum=1)
    require_int("--size", args.size, minimum=1)
    dataset_name = args.dataset.strip().lower().replace("-", "_")
    if dataset_name not in DATASETS:
        raise TsnError(f"unknown dataset {args.dataset!r}; choose one of: {', '.join(DATASETS)}")
    # Checked before the data is read; the folder is created only when the picture is written.
    output = ensure_writable_file(args.output or Path(f"{dataset_name}-{args.split}.png"), "-o/--output",
                                  create_parent=False)
    # Synthetic scenes are rendered on demand here: drawing a few must not render and cache a whole split.
    options = {"size": args.size, "cache": False} if dataset_name == "synthetic" else {}
    dataset = build_dataset(dataset_name, split=args.split, root=args.data_root, **options)
    figure = sample_grid(dataset, args.n, args.size)
    with atomic_write(output, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    print(f"wrote {output} ({min(args.n, len(dataset))} samples of {dataset_name} {args.split})")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"show": _show}[args.action](args)
