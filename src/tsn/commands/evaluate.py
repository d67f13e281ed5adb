"""``tsn evaluate``: score a checkpoint on a dataset split with the reference protocol, write JSON + markdown."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tsn.commands.predict import TUNE_ALLOCATOR_HELP
from tsn.errors import TsnError

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "parse_options"]

HELP = "evaluate a checkpoint on a dataset split (reference protocol, original resolution) into a JSON + table"
DESCRIPTION = (
    "Run every task of a checkpoint on a dataset split in one pass, resize each prediction back to the image's "
    "original size and score it against the raw labels as the reference evaluators do (edges with the seism-"
    "compatible benchmark). Writes every metric, the protocols, the checkpoint config and image counts to a JSON "
    "file and the paper-style table to a markdown file beside it. See docs/evaluate.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="tsn checkpoint (.pt / .safetensors, or a run folder); convert the authors' files first")
    parser.add_argument("--dataset", default="pascal_context", metavar="NAME",
                        help="synthetic, pascal_context or nyud (default: pascal_context)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help="tasks to score (default: every task of the checkpoint that the dataset has)")
    parser.add_argument("--data-root", metavar="DIR",
                        help="dataset root (default: $TSN_DATA_ROOT, else ~/.cache/tsn/data)")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset constructor option, repeatable (synthetic: size=64 length=300 seed=0)")
    parser.add_argument("--save-predictions", type=Path, metavar="DIR",
                        help="also write every prediction in the authors' format: DIR/<task>/<id>.png (depth .mat)")
    parser.add_argument("--edge-protocol", metavar="P",
                        help="edge benchmark protocol: astmt, mtl-survey, atrc, atrc-nyud, bsds "
                             "(default: astmt; atrc-nyud on nyud)")
    parser.add_argument("--depth-protocol", choices=("astmt", "pooled"), help="depth protocol (default: astmt)")
    parser.add_argument("--baseline", nargs="+", type=Path, metavar="JSON",
                        help="single-task scores: {task: value}, `tsn evaluate` results or a `tsn reproduce` "
                             "table; adds per-task drops and the average drop (TSN sign: positive = worse)")
    parser.add_argument("--size", type=int, nargs="+", metavar="N",
                        help="network input: one side or H W (default: 512; synthetic: the scene size)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument("--workers", type=int, help="processes reading data and matching edges (default: all cores)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("-o", "--output", type=Path, metavar="RESULT.json",
                        help="result file (default: evaluate-DATASET-SPLIT.json); the table goes beside it as .md")
    parser.add_argument("--tune-allocator", action="store_true", help=TUNE_ALLOCATOR_HELP)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a dict, values read as YAML scalars (``64`` -> int, ``true`` -> bool)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TsnError(f"dataset option {pair!r} is not KEY=VALUE; e.g. --dataset-option size=64")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return options


def _check_before_work(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Options, dataset options and output locations, checked before the checkpoint is read: an evaluation can
    take hours, and its results must not be lost to a typo or an unwritable folder at the end."""
    from tsn.data import check_dataset_options
    from tsn.datasets import canonical_dataset_name
    from tsn.utils.checks import ensure_writable_dir, ensure_writable_file, require_int

    require_int("--batch-size", args.batch_size, minimum=1)
    if args.workers is not None:
        require_int("--workers", args.workers, minimum=0)
    dataset = canonical_dataset_name(args.dataset)
    options = parse_options(args.dataset_option)
    check_dataset_options(dataset, options, where="--dataset-option")
    if args.edge_protocol is not None:
        from tsn.metrics.edges import get_protocol

        get_protocol(args.edge_protocol)  # an unknown name fails now, not after every image is predicted
    # Checked, not created: a run that fails before writing its result leaves no empty folder behind.
    output = ensure_writable_file(
        args.output or Path(f"evaluate-{dataset}-{args.split}.json"), "-o/--output", create_parent=False
    )
    ensure_writable_file(output.with_suffix(".md"), "-o/--output (the markdown table beside it)", create_parent=False)
    if args.save_predictions is not None:
        ensure_writable_dir(args.save_predictions, "--save-predictions", create=False)
    return output, options


def run(args: argparse.Namespace) -> int:
    from tsn.evaluation.evaluate import evaluate_checkpoint
    from tsn.evaluation.tables import add_baseline, evaluation_markdown, load_baseline, write_result
    from tsn.inference.speed import exact_options, tune_glibc_allocator

    output, options = _check_before_work(args)
    baseline = load_baseline(args.baseline) if args.baseline else None  # read early: a bad file fails fast
    if args.tune_allocator:
        tune_glibc_allocator()
    record = evaluate_checkpoint(
        args.checkpoint, args.dataset, args.split, tasks=args.tasks, data_root=args.data_root,
        dataset_options=options, size=args.size, batch_size=args.batch_size,
        workers=args.workers, device=args.device, speed=exact_options(), edge_protocol=args.edge_protocol,
        depth_protocol=args.depth_protocol, save_dir=args.save_predictions,
    )
    if baseline is not None:
        record = add_baseline(record, baseline, args.baseline)
    json_path, markdown_path = write_result(record, output)
    print(evaluation_markdown(record))
    print(f"wrote {json_path} and {markdown_path}")
    return 0
