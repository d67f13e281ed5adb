"""``tsn benchmark``: all-task inference and training speed, side by side (see :mod:`tsn.studies.throughput`)."""

from __future__ import annotations

import argparse

from tsn.errors import TsnError
from tsn.utils.checks import ensure_writable_file, require_int

HELP = "measure all-task inference and training speed (authors' way vs all-task path vs fastest options)"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny images (64 px), batches 1 and 2, one repeat, no compilation: a smoke run")
    parser.add_argument("--sizes", type=_ints, help="image sides, comma-separated (default 512)")
    parser.add_argument("--batches", type=_ints, help="inference batch sizes (default 1,8)")
    parser.add_argument("--backbone", metavar="TIMM_NAME",
                        help="measure the preset's TSN with another timm encoder (e.g. convnext_tiny, "
                             "vit_small_patch14_dinov2; random weights)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--repeats", type=int,
                        help="timed repeats per configuration at the first batch size (median reported; default 2; "
                             "1 at the other batch sizes)")
    parser.add_argument("--train-size", type=int, help="training image side (default 512)")
    parser.add_argument("--train-batch", type=int, help="training batch size (default 2)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the fast configurations")
    parser.add_argument("--no-onnx", action="store_true", help="leave onnxruntime out")
    parser.add_argument("--tune-allocator", action="store_true",
                        help="CPU: let glibc keep freed memory in the processes of the fast configurations and "
                             "of the tuned baselines (process-wide mallopt; the documented figures use it)")
    parser.add_argument("-o", "--output", help="results JSON (default benchmarks/results/<device>.json)")


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts and sizes: refused in one line before anything is built or timed."""
    counts = (("--repeats", args.repeats), ("--train-batch", args.train_batch), ("--threads", args.threads))
    for option, value in counts:
        if value is not None:
            require_int(option, value, minimum=1)
    train_sizes = () if args.train_size is None else (args.train_size,)
    checks = [(option, side) for option, sides in (("--sizes", args.sizes or ()), ("--train-size", train_sizes))
              for side in sides]
    if checks:  # every command's size rule (tsn.inference.input_size), for the benchmarked model
        from tsn.inference.input_size import check_input_size
        from tsn.models.registry import create_model
        from tsn.studies.throughput.settings import BenchmarkSettings

        options = {"pretrained": False, **({"backbone": args.backbone} if args.backbone else {})}
        model = create_model(BenchmarkSettings.preset, **options)
        for option, side in checks:
            check_input_size(model, side, option)


def run(args: argparse.Namespace) -> int:
    import torch

    from tsn.studies.throughput import BenchmarkSettings, default_output, run_benchmark

    _check_numbers(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise TsnError(f"--device {args.device}: no CUDA GPU is visible to torch; use --device cpu")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise TsnError(f"unknown device {args.device!r}; use cpu or cuda[:N]")
    overrides = {
        "sizes": args.sizes, "batches": args.batches, "device": args.device, "repeats": args.repeats,
        "train_size": args.train_size, "train_batch": args.train_batch, "threads": args.threads,
        "backbone": args.backbone,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.no_compile:
        overrides["compile"] = False
    if args.no_onnx:
        overrides["onnx"] = False
    if args.tune_allocator:
        overrides["tune_allocator"] = True
    settings = BenchmarkSettings.quick_settings(**overrides) if args.quick else BenchmarkSettings(**overrides)
    # Probed now, created at the end: a benchmark runs for minutes, and its results must not be lost then.
    output = ensure_writable_file(args.output or default_output(settings.device, settings.quick), "-o/--output",
                                  create_parent=False)
    results = run_benchmark(settings, output)
    failed = [e["config"] for e in results["inference"] + results["training"] if "error" in e]
    return 1 if failed else 0
