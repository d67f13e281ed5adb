"""Atomic file output: write to a temporary file in the same folder, then rename over the target.

A reader (or a crash) therefore only ever sees the old complete file or the new complete file.

The result behaves like a file written with ``open(path, "w")``: a new file gets ``0o666`` minus the umask (the
kernel applies the umask and any default ACL because the temporary file is created with mode ``0o666``, as
``open`` does; ``tempfile.mkstemp`` would force ``0o600``), and a replaced file keeps its permission bits.

Temporary files are named ``.<name>.tsn-tmp-<host>-<pid>-<random>`` (``host``: 8 hex digits of a hash of the
machine's name). A writer killed mid-write (``kill -9``, power loss) leaves one behind; :func:`remove_stale_temp_files`
recognises them by that pattern and removes those whose writer is gone: a process of this machine that no longer
runs, or, for another machine's writer (a shared file system), a file untouched for a day. The atomic writer runs
it once per process for every folder it writes into, and a training run's start or resume runs it on its folders.

The writer never damages what is at the path (:func:`tsn.utils.checks.output_target`): a symbolic link is written
through (the file it points to is replaced, the link kept), and a device, named pipe, socket or folder at the
path is refused with a one-line :class:`~tsn.errors.TsnError` instead of being replaced by a regular file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tsn.utils.checks import output_target

__all__ = [
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "file_sha256",
    "remove_stale_temp_files",
    "temp_file_name",
]

_TEMP_MARK = ".tsn-tmp-"
_TEMP_PATTERN = re.compile(
    r"^\.(?P<name>.*)" + re.escape(_TEMP_MARK) + r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})$"
)
_MAX_NAME_BYTES = 200  # the target's name is shortened in the temporary name so that it fits NAME_MAX (255)
_FOREIGN_HOST_STALE_S = 24 * 3600.0  # another machine's writer cannot be asked; no save takes a day
_cleaned_folders: set[str] = set()
_cleaned_lock = threading.Lock()


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def temp_file_name(target_name: str, pid: int | None = None, token: str | None = None) -> str:
    """The temporary name the atomic writer uses beside ``target_name`` (public so tests can forge a stale one)."""
    short = target_name.encode("utf-8", "surrogateescape")[:_MAX_NAME_BYTES].decode("utf-8", "ignore")
    pid = os.getpid() if pid is None else pid
    token = secrets.token_hex(4) if token is None else token
    return f".{short}{_TEMP_MARK}{_host_tag()}-{pid}-{token}"


def _process_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: existence and permission check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the atomic writer's temporary files in ``folder`` whose writer is gone; return the deleted paths.

    Only names matching ``.<name>.tsn-tmp-<host>-<pid>-<random>`` are considered, so nothing else is touched; a
    file of a running writer (this process included) is kept.
    """
    removed: list[Path] = []
    here, now = _host_tag(), time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_PATTERN.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                continue
            if match["host"] == here:
                stale = not _process_running(int(match["pid"]))
            else:
                stale = now - info.st_mtime > _FOREIGN_HOST_STALE_S
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # removed meanwhile by another cleaner, or not ours to remove
            continue
    return removed


def _clean_once(folder: Path) -> None:
    """Remove stale temporary files the first time this process writes into ``folder`` (one directory scan)."""
    key = os.path.abspath(folder)
    with _cleaned_lock:
        if key in _cleaned_folders:
            return
        _cleaned_folders.add(key)
    remove_stale_temp_files(folder)


def _create_temp(target: Path) -> tuple[int, Path]:
    """Create the temporary file exclusively with mode 0o666, so the umask (and default ACLs) apply as for open()."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = target.parent / temp_file_name(target.name)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a unique temporary file beside {target}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it to ``path``.

    The file ends up with the permissions ``open(path, mode)`` would give it (see the module docstring).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write writes a whole new file; mode must be 'w', 'wt' or 'wb', got {mode!r}")
    target = output_target(path, "output")
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(target.parent)
    existing_mode = None
    with contextlib.suppress(OSError):
        existing = target.stat()
        if stat.S_ISREG(existing.st_mode):
            existing_mode = stat.S_IMODE(existing.st_mode)
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, mode) as handle:
            if existing_mode is not None and hasattr(os, "fchmod"):  # open() keeps an existing file's permissions
                os.fchmod(handle.fileno(), existing_mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (dataset archives are several GB; the Hub names weights by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch

    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)
