"""``tsn download``: fetch, verify and extract PASCAL_MT or NYUD_MT into the dataset root."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsn.dataset_catalog import downloadable_datasets
from tsn.errors import TsnError

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "download and extract a dataset (pascal_context, nyud) into the dataset root"
DESCRIPTION = (
    "Download a dataset archive (resuming a partial download), check its SHA-256, extract it safely and mark it "
    "complete. A dataset already downloaded is left alone. The dataset root is --root, else $TSN_DATA_ROOT, "
    "else ~/.cache/tsn/data."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help=f"one of: {', '.join(downloadable_datasets())}")
    parser.add_argument(
        "--root",
        "--data-root",
        dest="root",
        metavar="DIR",
        help="dataset root (default: $TSN_DATA_ROOT, else ~/.cache/tsn/data)",
    )
    parser.add_argument("--url", help="download from this URL instead of the default one (a mirror)")
    parser.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the archive")
    parser.add_argument("--archive", metavar="PATH", help="an already-downloaded archive to verify and extract")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def run(args: argparse.Namespace) -> int:
    from tsn.data.download import check_url, complete_folder, download_dataset, get_source
    from tsn.data.paths import data_root
    from tsn.utils.checks import ensure_writable_dir

    # Everything is checked before the dataset root is created or anything is fetched.
    get_source(args.dataset)
    if args.url is not None:
        check_url(args.url)
    if args.archive is not None and not Path(args.archive).expanduser().is_file():
        archive = Path(args.archive).expanduser()
        problem = "is a folder, not an archive file" if archive.is_dir() else "does not exist"
        raise TsnError(f"archive {archive} {problem}; check the --archive path")
    root = data_root(args.root)
    if complete_folder(args.dataset, root) is None:  # a finished download needs no write access
        ensure_writable_dir(root, "dataset root (--root)", create=False)
    folder = download_dataset(
        args.dataset,
        root,
        url=args.url,
        sha256=args.sha256,
        archive=args.archive,
        progress=not args.no_progress,
    )
    print(f"{args.dataset}: ready in {folder}")
    return 0
