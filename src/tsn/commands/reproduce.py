"""``tsn reproduce``: train (or reuse) the single-task, multi-head and TSN runs, evaluate them, write the table."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsn.utils.checks import escaped

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "reproduce the paper's table: single-task baselines, multi-head and TSN, trained, evaluated, compared"
DESCRIPTION = (
    "Train every run of the paper's comparison on a dataset (one single-task network per task, the multi-head "
    "baseline, the TSN; same encoder, recipe and budget), once per seed, evaluate each with the reference protocol "
    "and write the paper-style table over the seeds: every cell as mean +- 95 % interval, paired differences "
    "(OUT/table.md, OUT/table.json, OUT/table.png). Finished runs and seeds in OUT are reused, interrupted ones "
    "resumed: run the same command again after an interruption. See docs/reproduce.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="synthetic", metavar="NAME",
                        help="synthetic (default: minutes on a CPU), pascal_context or nyud (GPU, paper recipe)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder of the runs and the table (default: reproduce-DATASET-BUDGET)")
    parser.add_argument("--data-root", metavar="DIR",
                        help="dataset root (default: $TSN_DATA_ROOT, else ~/.cache/tsn/data)")
    parser.add_argument("--budget", choices=("quick", "full"), default="full",
                        help="full: the documented recipe (default); quick: a short pipeline check")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value of every run, repeatable (e.g. --set epochs=2)")
    parser.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="train every run with seeds 0 .. N-1 (OUT/seed<k>/<run>) and report mean, sd and 95 %% "
                        "intervals over them (default: 3); finished seeds are reused when N grows")
    parser.add_argument("--jobs", type=int,
                        help="runs trained at once (default: 1 on a GPU, one per core on a CPU, one thread each)")
    parser.add_argument("--workers", type=int,
                        help="evaluation processes when one job runs at a time (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or training logs on the console")


def run(args: argparse.Namespace) -> int:
    from tsn.dataset_catalog import canonical_dataset_name
    from tsn.studies.reproduce import reproduce, table_markdown
    from tsn.studies.seeds import check_seeds
    from tsn.utils.checks import ensure_writable_dir, require_int

    if args.workers is not None:
        require_int("--workers", args.workers, minimum=0)
    if args.jobs is not None:
        require_int("--jobs", args.jobs, minimum=1)
    check_seeds(args.seeds, args.overrides)
    dataset = canonical_dataset_name(args.dataset)
    out = args.out or Path(f"reproduce-{dataset}-{args.budget}")
    # Probed before any data is prepared or run trained; the folder itself is created by the first run.
    ensure_writable_dir(out, "--out", create=False)
    table = reproduce(dataset, out, data_root=args.data_root, budget=args.budget, overrides=args.overrides,
                      seeds=args.seeds, jobs=args.jobs, workers=args.workers, progress=not args.quiet)
    print(table_markdown(table))
    print(f"wrote {escaped(out / 'table.md')} and {escaped(out / 'table.json')}")
    return 0
