"""Up-front checks of user input, each failing with a one-line :class:`~tsn.errors.TsnError`.

Commands call these before any work starts, so that a bad output location or an out-of-range option is
reported at once instead of after a long run whose results would then be lost. Every message names the
option or the path (``what``), says what is wrong and how to fix it.

Writability is *probed* (a temporary file is created and removed) rather than read from mode bits: mode bits
say nothing for root, for read-only mounts or for network file systems, while the probe is what the later
write will actually do.

Outputs never damage (:func:`ensure_writable_file`): only a regular file or a new path is written; a device, a
named pipe or a socket at an output path is refused, even for root, who could otherwise replace ``/dev/null``;
an output that is also one of the command's inputs is refused; a symbolic link is written *through* (the file
it points to is replaced and the link is kept, as ``open(path, "w")`` would do), never replaced itself, and a
link loop is refused. :func:`tsn.utils.io.atomic_write`, the one way results are written, applies the same rules.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from numbers import Real
from pathlib import Path

from tsn.errors import TsnError

__all__ = [
    "ensure_writable_dir",
    "ensure_writable_file",
    "file_kind",
    "input_problem",
    "output_target",
    "require_existing_file",
    "require_positive",
    "require_non_negative",
    "require_int",
    "require_fraction",
    "one_line",
    "escaped",
]

# CSI sequences (colours, cursor moves), OSC sequences (titles, links) and any other escape or control byte.
_TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: object, limit: int = 400) -> str:
    """``text`` as a single printable line: escape codes removed, newlines and control bytes turned to spaces."""
    cleaned = _TERMINAL_ESCAPES.sub("", str(text))
    cleaned = _CONTROL_CHARACTERS.sub(" ", cleaned)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escaped(name: object) -> str:
    """A file name (or any text from outside) made safe to print on one line: printable characters as they are,
    newlines and tabs as ``\\n`` and ``\\t``, escape and other control characters as ``\\x1b``-style codes, and
    bytes that are not UTF-8 (kept by Python as surrogates) as ``\\xff``. A terminal escape sequence in a name is
    therefore shown, never executed, and a newline in a name cannot split a line into two."""
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if text.isprintable():
        return text
    parts = []
    for character in text:
        code = ord(character)
        if character.isprintable():
            parts.append(character)
        elif character in _NAMED_ESCAPES:
            parts.append(_NAMED_ESCAPES[character])
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of the name, as surrogateescape keeps it
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif code <= 0xFF:
            parts.append(f"\\x{code:02x}")
        else:
            parts.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return "".join(parts)


def _nearest_existing(path: Path) -> Path:
    """The deepest ancestor of ``path`` (``path`` included) that exists, or that is not a folder."""
    current = path
    while not current.exists() and current.parent != current:
        current = current.parent
    return current


def _probe_write(folder: Path) -> OSError | None:
    """Create and remove a temporary file in ``folder``; the OSError if that fails."""
    try:
        fd, name = tempfile.mkstemp(prefix=".tsn-write-probe-", dir=folder)
    except OSError as error:
        return error
    os.close(fd)
    with contextlib.suppress(OSError):  # created but not removable: still writable, which is what we check
        os.unlink(name)
    return None


def ensure_writable_dir(path: str | os.PathLike[str], what: str, create: bool = True) -> Path:
    """Check that ``path`` is (or can become) a folder this process can write into, and return it.

    With ``create`` (the default) a missing folder is created, then probed. Without it nothing is created:
    the nearest existing ancestor is probed instead, so a later ``mkdir`` + write will succeed.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise TsnError(f"{what}: {folder} is an existing file, not a folder; give a folder path or move the file")
    ancestor = _nearest_existing(folder)
    if ancestor != folder and not ancestor.is_dir():
        raise TsnError(
            f"{what}: cannot create the folder {folder} because {ancestor} is a file, not a folder; "
            "choose another location"
        )
    if create and not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TsnError(
                f"{what}: cannot create the folder {folder} ({one_line(error.strerror or error)}); "
                "choose a location you can write to"
            ) from None
        ancestor = folder
    probe_error = _probe_write(ancestor)
    if probe_error is not None:
        where = folder if ancestor == folder else f"{ancestor} (to create {folder})"
        # ENOENT from an existing folder: a virtual file system (/proc, /sys) that takes no new files.
        if probe_error.errno == errno.ENOENT:
            reason = "it takes no new files"
        else:
            reason = one_line(probe_error.strerror or probe_error)
        raise TsnError(f"{what}: cannot write into {where} ({reason}); choose a folder you can write to or fix its "
                       "permissions")
    return folder


_SPECIAL_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt", ".onnx")


def file_kind(mode: int) -> str:
    """``"a regular file"``, ``"a character device"``, ``"a named pipe (FIFO)"``... for an ``st_mode``."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), "a special file")


def output_target(path: str | os.PathLike[str], what: str) -> Path:
    """The file a write to ``path`` must replace: ``path``, or for a symbolic link the file it points to.

    Refuses, in one line, a link loop and anything at the target that is not a regular file (a device, a named
    pipe, a socket, a folder): replacing it would destroy it, and writing into it is not a result.
    """
    target = Path(path).expanduser()
    if target.is_symlink():
        try:
            resolved = Path(os.path.realpath(target, strict=True))
        except (FileNotFoundError, NotADirectoryError):  # dangling: the link names the file to create
            resolved = Path(os.path.realpath(target))
        except OSError as error:  # ELOOP
            raise TsnError(f"{what}: {escaped(target)} is a symbolic link that cannot be followed "
                           f"({one_line(error.strerror or error)}); give a regular file path") from None
        target = resolved
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new path (the folder checks report a file in the way)
        return target
    except OSError as error:
        raise TsnError(f"{what}: cannot inspect {escaped(target)} ({one_line(error.strerror or error)}); "
                       "choose another path") from None
    if not stat.S_ISREG(mode):
        raise TsnError(f"{what}: {escaped(path)} is {file_kind(mode)}, not a regular file; tsn writes results only "
                       "to regular files or new paths: give a file path")
    return target


def input_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path``, met in an input folder, cannot be read as a file; None for a regular file (or a link to one).

    The reasons: a symbolic link loop, a dangling symbolic link, a named pipe (reading it would block), a socket,
    a device, a folder, or an error of the file system; callers list them with the skipped inputs.
    """
    target = Path(path)
    try:
        mode = os.stat(target).st_mode
    except OSError as error:
        if target.is_symlink():
            if error.errno == errno.ELOOP:
                return "a symbolic link loop"
            with contextlib.suppress(OSError):
                return f"a dangling symbolic link (to {escaped(os.readlink(target))})"
            return "a dangling symbolic link"
        return f"cannot be read ({one_line(error.strerror or error)})"
    return None if stat.S_ISREG(mode) else file_kind(mode)


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(first) == os.path.realpath(second)


def _refuse_inputs(target: Path, path: Path, what: str, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Refuse an output that is one of the inputs, or a checkpoint inside an input folder (a run folder)."""
    for given in inputs:
        if given is None:
            continue
        source = Path(given).expanduser()
        if _same_file(target, source):
            raise TsnError(f"{what}: {escaped(path)} is also an input of this command ({escaped(source)}); writing "
                           "it would destroy the input: choose another output file")
        if (source.is_dir() and target.suffix in _CHECKPOINT_SUFFIXES and target.exists()
                and os.path.realpath(source) in (os.path.realpath(p) for p in target.parents)):
            raise TsnError(f"{what}: {escaped(path)} is a checkpoint inside the input folder {escaped(source)}; "
                           "choose an output outside it")


def ensure_writable_file(
    path: str | os.PathLike[str],
    what: str,
    create_parent: bool = True,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Check that a file can be written at ``path`` (not a folder, parent folder writable), and return it.

    An existing regular file is fine (it will be replaced); a device, pipe or socket, an output that is one of
    ``inputs`` (the command's input files or folders) and a link loop are refused; a symbolic link is written
    through (see the module docstring). Nothing is written at ``path`` itself.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise TsnError(f"{what}: {escaped(target)} is a folder, not a file; give a file path such as "
                       f"{escaped(target / 'out')}")
    real = output_target(target, what)
    _refuse_inputs(real, target, what, inputs)
    if real.exists() and not os.access(real, os.W_OK) and _probe_write(real.parent) is not None:
        raise TsnError(f"{what}: cannot replace {escaped(target)}; choose a path you can write to")
    ancestor = _nearest_existing(real.parent)
    if not ancestor.is_dir():
        raise TsnError(
            f"{what}: cannot write {escaped(target)} because {escaped(ancestor)} is a file, not a folder; choose "
            "another location"
        )
    ensure_writable_dir(real.parent, what, create=create_parent)
    return target


def require_existing_file(path: str | os.PathLike[str], what: str) -> Path:
    """Check that ``path`` is an existing, readable file, and return it."""
    target = Path(path).expanduser()
    if not target.exists():
        raise TsnError(f"{what}: {target} does not exist; check the path")
    if target.is_dir():
        raise TsnError(f"{what}: {target} is a folder, not a file; give the path of a file")
    if not os.access(target, os.R_OK):
        raise TsnError(f"{what}: {target} cannot be read (permission denied); fix its permissions")
    return target



def _require_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TsnError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise TsnError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def require_int(name: str, value: object, minimum: int | None = None) -> int:
    """Check that ``value`` is an integer (not a bool, not a float), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TsnError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise TsnError(f"{name} must be at least {minimum}, got {value}")
    return value


def require_positive(name: str, value: object) -> float | int:
    """Check that ``value`` is a finite number > 0 and return it unchanged."""
    if _require_number(name, value) <= 0:
        raise TsnError(f"{name} must be greater than 0, got {value}")
    return value  # type: ignore[return-value]


def require_non_negative(name: str, value: object) -> float | int:
    """Check that ``value`` is a finite number >= 0 and return it unchanged."""
    if _require_number(name, value) < 0:
        raise TsnError(f"{name} must be 0 or more, got {value}")
    return value  # type: ignore[return-value]


def require_fraction(name: str, value: object, *, include_zero: bool = True, include_one: bool = True) -> float:
    """Check that ``value`` lies in the interval [0, 1] (ends as requested) and return it."""
    number = _require_number(name, value)
    low_ok = number > 0 or (include_zero and number == 0)
    high_ok = number < 1 or (include_one and number == 1)
    if not (low_ok and high_ok):
        interval = f"{'[' if include_zero else '('}0, 1{']' if include_one else ')'}"
        raise TsnError(f"{name} must lie in {interval}, got {value}")
    return value  # type: ignore[return-value]
