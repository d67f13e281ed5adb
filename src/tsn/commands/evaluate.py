"""``tsn evaluate``: score a checkpoint or saved predictions on a dataset split under a named protocol, write
JSON + markdown."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tsn.commands.predict import TUNE_ALLOCATOR_HELP
from tsn.errors import TsnError
from tsn.utils.checks import escaped

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "parse_options"]

HELP = "score a checkpoint, or saved predictions, on a dataset split under a named evaluation protocol"
DESCRIPTION = (
    "Run every task of a checkpoint on a dataset split in one pass (or read predictions saved by any method with "
    "--predictions), bring each prediction back to the image's original size and score it against the raw labels "
    "under an evaluation protocol (--protocol: the TSN paper's ASTMT protocol, the MTL survey's, the InvPT "
    "family's, LibMTL's). Writes every metric, the protocol, the source and image counts to a JSON file and the "
    "paper-style table to a markdown file beside it. See docs/evaluate.md and docs/protocols.md."
)


def _dataset_defaults() -> str:
    """Each dataset's default protocol and network size, from the registries (what --help shows)."""
    from tsn.dataset_catalog import get_dataset, list_datasets
    from tsn.evaluation.protocols import default_protocol

    parts = []
    for name in list_datasets():
        spec = get_dataset(name)
        size = f"{spec.eval_size[0]}x{spec.eval_size[1]}" if spec.eval_size else "its own size"
        parts.append(f"{name} ({default_protocol(name).name}, {size})")
    return ", ".join(parts)


def _protocol_values(option: str) -> str:
    from tsn.evaluation.protocols import get_protocol, list_protocols

    values: set[str] = set()
    for name in list_protocols():
        protocol = get_protocol(name)
        if option == "edge_protocol":
            values.update(protocol.edge_presets.values())
        elif option in protocol.metric_options:
            values.add(str(protocol.metric_options[option]))
    return ", ".join(sorted(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tsn.dataset_catalog import list_datasets
    from tsn.evaluation.protocols import list_protocols, protocol_help
    from tsn.inference.conventions import list_conventions

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT",
                        help="tsn checkpoint (.pt / .safetensors, or a run folder); convert the authors' files first")
    source.add_argument("--predictions", type=Path, metavar="DIR",
                        help="score predictions saved by any method instead: DIR/<task>/<id>.png (depth .mat), "
                             "at the original image size, in the --format convention")
    parser.add_argument("--dataset", default="pascal_context", metavar="NAME",
                        help=f"one of: {', '.join(list_datasets())} (default: pascal_context); each with its "
                             f"default protocol and evaluation size: {_dataset_defaults()}")
    parser.add_argument("--protocol", choices=list_protocols(), metavar="NAME",
                        help=f"evaluation protocol (default: the dataset's): {protocol_help()}")
    parser.add_argument("--format", default="authors", choices=list_conventions(), dest="convention",
                        help="saved-prediction convention of --predictions and --save-predictions: "
                             f"{', '.join(list_conventions())} (default: authors)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help="tasks to score (default: every task of the checkpoint, or with a --predictions "
                             "folder, that the dataset has)")
    parser.add_argument("--data-root", metavar="DIR",
                        help="dataset root (default: $TSN_DATA_ROOT, else ~/.cache/tsn/data)")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset constructor option, repeatable (synthetic: size=64 length=300 seed=0)")
    parser.add_argument("--save-predictions", type=Path, metavar="DIR",
                        help="also write every prediction in the --format convention: DIR/<task>/<id>.png "
                             "(depth .mat)")
    parser.add_argument("--edge-protocol", metavar="P",
                        help=f"replace the protocol's edge benchmark preset ({_protocol_values('edge_protocol')}, "
                             "bsds)")
    parser.add_argument("--depth-protocol", metavar="P",
                        help=f"replace the protocol's depth variant ({_protocol_values('depth_protocol')})")
    parser.add_argument("--baseline", nargs="+", type=Path, metavar="JSON",
                        help="single-task scores: {task: value}, `tsn evaluate` results or a `tsn reproduce` "
                             "table; adds per-task drops and the average drop (TSN sign: positive = worse); "
                             "results of another protocol are refused")
    parser.add_argument("--size", type=int, nargs="+", metavar="N",
                        help="network input: one side or H W; the resize target of a resize protocol, or the "
                             "fixed size a pad-to-size protocol (invpt) pads to (default: the dataset's evaluation "
                             "size above, or the protocol's fixed size)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument("--workers", type=int, help="processes reading data and matching edges (default: all cores)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("-o", "--output", type=Path, metavar="RESULT.json",
                        help="result file (default: evaluate-DATASET-SPLIT.json); the table goes beside it as .md")
    parser.add_argument("--tune-allocator", action="store_true", help=TUNE_ALLOCATOR_HELP)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a dict, values read as YAML scalars (``64`` -> int, ``true`` -> bool)."""
    from tsn.utils.parsing import parse_yaml  # bounded depth and size, one-line errors

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TsnError(f"dataset option {pair!r} is not KEY=VALUE; e.g. --dataset-option size=64")
        options[key.strip()] = parse_yaml(value, f"--dataset-option {key.strip()}") if value.strip() else None
    return options


def _check_before_work(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Options, dataset options and output locations, checked before the checkpoint is read: an evaluation can
    take hours, and its results must not be lost to a typo or an unwritable folder at the end."""
    from tsn.data import check_dataset_options
    from tsn.dataset_catalog import canonical_dataset_name
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
    if args.depth_protocol is not None:
        from tsn.metrics.depth import DEPTH_PROTOCOLS

        if args.depth_protocol not in DEPTH_PROTOCOLS:
            raise TsnError(f"unknown --depth-protocol {args.depth_protocol!r}; choose one of: "
                           f"{', '.join(DEPTH_PROTOCOLS)}")
    if args.predictions is not None and not args.predictions.is_dir():
        raise TsnError(f"--predictions {args.predictions} is not a folder; give the folder with one sub-folder "
                       "per task")
    # Checked, not created: a run that fails before writing its result leaves no empty folder behind.
    output = ensure_writable_file(
        args.output or Path(f"evaluate-{dataset}-{args.split}.json"), "-o/--output", create_parent=False,
        inputs=[args.checkpoint or args.predictions, *(args.baseline or [])],
    )
    ensure_writable_file(output.with_suffix(".md"), "-o/--output (the markdown table beside it)", create_parent=False)
    if args.save_predictions is not None:
        ensure_writable_dir(args.save_predictions, "--save-predictions", create=False)
    return output, options


def run(args: argparse.Namespace) -> int:
    from tsn.evaluation.evaluate import evaluate_checkpoint
    from tsn.evaluation.tables import (
        add_baseline,
        baseline_protocols,
        evaluation_markdown,
        load_baseline,
        write_result,
    )
    from tsn.inference.speed import exact_options, tune_glibc_allocator

    output, options = _check_before_work(args)
    baseline = load_baseline(args.baseline) if args.baseline else None  # read early: a bad file fails fast
    if args.baseline:
        from tsn.dataset_catalog import canonical_dataset_name
        from tsn.evaluation.protocols import default_protocol
        from tsn.evaluation.records import check_same_protocol

        ours = args.protocol or default_protocol(canonical_dataset_name(args.dataset)).name
        check_same_protocol([ours, *baseline_protocols(args.baseline)], "an average drop against --baseline")
    if args.tune_allocator:
        tune_glibc_allocator()
    if args.predictions is not None:
        from tsn.evaluation.saved_predictions import evaluate_predictions

        record = evaluate_predictions(
            args.predictions, args.dataset, args.split, protocol=args.protocol, convention=args.convention,
            tasks=args.tasks, data_root=args.data_root, dataset_options=options, workers=args.workers or 0,
            edge_protocol=args.edge_protocol, depth_protocol=args.depth_protocol,
        )
    else:
        record = evaluate_checkpoint(
            args.checkpoint, args.dataset, args.split, tasks=args.tasks, data_root=args.data_root,
            dataset_options=options, size=args.size, batch_size=args.batch_size, workers=args.workers,
            device=args.device, speed=exact_options(), protocol=args.protocol, edge_protocol=args.edge_protocol,
            depth_protocol=args.depth_protocol, save_dir=args.save_predictions, save_convention=args.convention,
        )
    if baseline is not None:
        record = add_baseline(record, baseline, args.baseline)
    json_path, markdown_path = write_result(record, output)
    print(evaluation_markdown(record))
    print(f"wrote {escaped(json_path)} and {escaped(markdown_path)}")
    return 0
