"""``tsn demo``: switch the paper's TSN through every task on one image (smoke run until training lands)."""

from __future__ import annotations

import argparse
import time

HELP = "build the paper's TSN and switch it through every task on one image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=512, help="image side (default 512, the paper's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def run(args: argparse.Namespace) -> int:
    import torch

    from tsn.models import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("tsn_r18_pascal").eval()
    image = torch.randn(1, 3, args.size, args.size)
    print(f"TSN (paper preset tsn_r18_pascal): {model.num_parameters():,} parameters, tasks {', '.join(model.tasks)}")
    with torch.inference_mode():
        model(image, "semseg")  # warm-up
        for task in model.tasks:
            start = time.perf_counter()
            out = model(image, task)
            print(f"  {task:<12} -> {tuple(out.shape)}  {time.perf_counter() - start:6.2f} s")
        start = time.perf_counter()
        model(image)
        print(f"  all tasks in one pass: {time.perf_counter() - start:6.2f} s")
    return 0
