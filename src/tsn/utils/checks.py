"""Up-front checks of user input, each failing with a one-line :class:`~tsn.errors.TsnError`.

Commands call these before any work starts, so that a bad output location or an out-of-range option is
reported at once instead of after a long run whose results would then be lost. Every message names the
option or the path (``what``), says what is wrong and how to fix it.

Writability is *probed* (a temporary file is created and removed) rather than read from mode bits: mode bits
say nothing for root, for read-only mounts or for network file systems, while the probe is what the later
write will actually do.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import tempfile
from numbers import Real
from pathlib import Path

from tsn.errors import TsnError

__all__ = [
    "ensure_writable_dir",
    "ensure_writable_file",
    "require_existing_file",
    "require_existing_dir",
    "require_positive",
    "require_non_negative",
    "require_int",
    "require_fraction",
    "one_line",
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


def ensure_writable_file(path: str | os.PathLike[str], what: str, create_parent: bool = True) -> Path:
    """Check that a file can be written at ``path`` (not a folder, parent folder writable), and return it.

    An existing file is fine (it will be replaced). Nothing is written at ``path`` itself.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise TsnError(f"{what}: {target} is a folder, not a file; give a file path such as {target / 'out'}")
    if target.exists() and not os.access(target, os.W_OK) and _probe_write(target.parent) is not None:
        raise TsnError(f"{what}: cannot replace {target}; choose a path you can write to")
    ancestor = _nearest_existing(target.parent)
    if not ancestor.is_dir():
        raise TsnError(
            f"{what}: cannot write {target} because {ancestor} is a file, not a folder; choose another location"
        )
    ensure_writable_dir(target.parent, what, create=create_parent)
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


def require_existing_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Check that ``path`` is an existing folder, and return it."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise TsnError(f"{what}: the folder {folder} does not exist; check the path")
    if not folder.is_dir():
        raise TsnError(f"{what}: {folder} is a file, not a folder; give a folder path")
    return folder


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
