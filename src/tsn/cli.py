"""The ``tsn`` command line: one subcommand per module of :mod:`tsn.commands`.

Each module in ``tsn/commands/`` defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Commands are discovered, so adding a command means adding one file. Errors the user can fix
(:class:`~tsn.errors.TsnError`) are printed as one line and exit with status 2, as are argument errors. Commands
validate their input before any work starts; an operating-system error that still escapes (a file vanished or
became unwritable mid-run) is also reported in one line, as a last resort, rather than as a traceback.

The one-line error stays the only line: warnings that libraries raise while a command runs (deprecations,
notes of torch or timm) are held back, shown after the command's own output when it succeeds (one line each,
repeats once), and dropped when it fails with a one-line error. Every command takes ``--no-progress``, which
hides every progress bar of the command (:mod:`tsn.utils.progress`). What a command prints on stdout passes
through :class:`_PrintableStdout`: a control character (the start of a terminal escape sequence in a file name) is
shown escaped, never executed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO

from tsn.errors import TsnError
from tsn.utils.checks import escaped, one_line

__all__ = ["main", "build_parser"]


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _PrintableStdout:
    """A text stream in front of ``stream`` that writes control characters other than newline and tab escaped
    (``\\x1b``), so that a name printed by a command cannot move the cursor, recolour or retitle the terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_UNPRINTABLE.sub(lambda match: escaped(match.group()), text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding... of the real stream
        return getattr(self._stream, name)


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
        _add_no_progress(command)
        command.set_defaults(_run=module.run)
    return parser


def _add_no_progress(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` (or, for a command with subcommands, each subcommand) ``--no-progress`` if it lacks it."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in nested:
        for child in action.choices.values():
            _add_no_progress(child)
    if not nested and "--no-progress" not in parser._option_string_actions:
        parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


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


@contextlib.contextmanager
def _held_warnings(command: str) -> Iterator[None]:
    """Hold back the warnings raised inside the block; print them (one line each) only if it ends normally, so
    that a one-line error is never preceded by a library's warning."""
    with warnings.catch_warnings(record=True) as caught:
        yield
    shown: set[str] = set()
    for warning in caught:
        line = f"tsn {command}: warning: {one_line(warning.message)} ({warning.category.__name__})"
        if line not in shown:
            shown.add(line)
            print(line, file=sys.stderr)


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
    from tsn.utils.progress import showing_progress

    try:
        with _held_warnings(args.command), showing_progress(not getattr(args, "no_progress", False)), \
                contextlib.redirect_stdout(_PrintableStdout(sys.stdout)):
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
