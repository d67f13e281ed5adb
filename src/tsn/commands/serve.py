"""``tsn serve``: an interactive page for a checkpoint on http://127.0.0.1:7860 (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse

from tsn.commands.predict import parse_size

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "open a checkpoint in a browser: upload an image, see every task, slide through the task space"
DESCRIPTION = (
    "Serve a local web page for a checkpoint: upload an image (or pick a synthetic scene) and see every task's "
    "prediction beside it, download each in the authors' file convention, and for a TSN slide between two tasks "
    "through its task space. Without --checkpoint it serves the latest `tsn demo` run under runs/, training one "
    "first when there is none. Needs the web extra: pip install 'tsn[serve]'."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="tsn checkpoint (.pt/.safetensors) or tsn train run folder (default: the latest "
                        "`tsn demo` run under runs/, trained first when there is none)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--size", type=parse_size, metavar="N|HxW",
                        help="network input size (default: the size the run was trained at, else 512)")
    parser.add_argument("--device", default="auto", help="auto (default: GPU if any), cpu, cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    from tsn.serving.launch import serve

    serve(args.checkpoint, host=args.host, port=args.port, size=args.size, device=args.device)
    return 0
