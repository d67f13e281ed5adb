"""The ``tsn`` command line: one subcommand per module of :mod:`tsn.commands`.

Each module in ``tsn/commands/`` defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Commands are discovered, so adding a command means adding one file. Errors the user can fix
(:class:`~tsn.errors.TsnError`) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from tsn.errors import TsnError

__all__ = ["main", "build_parser"]


def _command_modules() -> list[str]:
    import tsn.commands

    return sorted(m.name for m in pkgutil.iter_modules(tsn.commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    from tsn import __version__

    parser = argparse.ArgumentParser(
        prog="tsn",
        description="Task Switching Networks for multi-task dense prediction.",
    )
    parser.add_argument("--version", action="version", version=f"tsn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"tsn.commands.{name}")
        command = sub.add_parser(
            name.replace("_", "-"), help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except TsnError as error:
        print(f"tsn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tsn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
