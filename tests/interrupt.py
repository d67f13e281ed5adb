"""Ctrl-C for end-to-end tests: run ``tsn ...`` in a subprocess, send SIGINT to its process group (what a terminal
does) once a condition holds, and report what was left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux ``/proc/<pid>/task/*/children``)."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = {int(child) for child in (task / "children").read_text().split()}
            except OSError:
                continue
            stack += list(children - found)
            found |= children
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def ctrl_c_when(argv: Sequence[str], ready: Callable[[], bool], timeout: float = 600.0) -> tuple[int, str, set[int]]:
    """Run ``python -m tsn *argv``; when ``ready()`` turns true, Ctrl-C it. Returns its exit status, its stderr and
    every process it had started (all must be gone once it has exited)."""
    # The child gets Ctrl-C's default disposition, as from a terminal: a shell without job control starts its
    # background commands (a test suite run with `&` in a script) with SIGINT ignored, and children inherit that.
    process = subprocess.Popen([sys.executable, "-m", "tsn", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    started, seen = time.monotonic(), set()
    try:
        while not ready():
            if process.poll() is not None:
                raise AssertionError(f"tsn {' '.join(argv)} ended before it could be interrupted: "
                                     f"{process.stderr.read() if process.stderr else ''}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"tsn {' '.join(argv)}: the condition did not hold within {timeout} s")
            seen |= descendants(process.pid)
            time.sleep(0.05)
        seen |= descendants(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    deadline = time.monotonic() + 10  # reparented children are reaped by init shortly after
    while any(alive(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.1)
    return process.returncode, err, seen
