"""The ``tsn`` command line: one subcommand per module of :mod:`tsn.commands`.

Each module in ``tsn/commands/`` defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Commands are discovered, so adding a command means adding one file. Errors the user can fix
(:class:`~tsn.errors.TsnError`) are printed as one line and exit with status 2, as are argument errors. Commands
validate their input before any work starts; an operating-system error that still escapes (a file vanished or
became unwritable mid-run) is also reported in one line, as a last resort, rather than as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from tsn.errors import TsnError
from tsn.utils.checks import one_line

__all__ = ["main", "build_parser"]


class _OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command and pointing to its ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _command_modules() -> list[str]:
    import tsn.commands

    return sorted(m.name for m in pkgutil.iter_modules(tsn.commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    from tsn import __version__

    parser = _OneLineErrorParser(
        prog="tsn",
        description="Task Switching Networks for multi-task dense prediction.",
    )
    parser.add_argument("--version", action="version", version=f"tsn {__version__}")
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE",
        help="import MODULE (a module name or a .py file) before the command, repeatable: it may register tasks "
        "and datasets (docs/extending.md); installed plugins (entry points 'tsn.plugins') are imported always",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"tsn.commands.{name}")
        command = sub.add_parser(
            name.replace("_", "-"), help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def _plugin_options(argv: Sequence[str]) -> list[str]:
    """The values of ``--plugin`` before the command name (read first: plugins add datasets the help lists)."""
    targets, tokens = [], list(argv)
    for index, token in enumerate(tokens):
        if token == "--plugin" and index + 1 < len(tokens):
            targets.append(tokens[index + 1])
        elif token.startswith("--plugin="):
            targets.append(token.partition("=")[2])
        elif not token.startswith("-") and (index == 0 or tokens[index - 1] != "--plugin"):
            break  # the command: what follows is its own arguments
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    from tsn.plugins import load_plugins

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        load_plugins(_plugin_options(argv))
    except TsnError as error:
        print(f"tsn: error: {one_line(error, limit=1000)}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except TsnError as error:
        print(f"tsn {args.command}: error: {one_line(error, limit=1000)}", file=sys.stderr)
        return 2
    except OSError as error:  # last resort: the real checks happen before the work, in each command
        where = f" ({error.filename})" if error.filename else ""
        reason = error.strerror or type(error).__name__
        print(f"tsn {args.command}: error: {one_line(reason)}{where}; check the path, its permissions and the free "
              "disk space, then run the command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tsn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
