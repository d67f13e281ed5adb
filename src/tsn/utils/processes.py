"""Worker processes that end with their parent, even when the parent is killed with ``kill -9``.

A killed command must leave no process behind. PyTorch's DataLoader workers check for a dead parent only between
batches, and then wait to flush the batches they already made into a pipe nobody reads; ``concurrent.futures`` /
``multiprocessing`` pool workers wait on their task queue, whose write end they hold themselves. So after
``kill -9`` of ``tsn predict`` or ``tsn evaluate`` their workers lived on (two of ``tsn evaluate`` still ran 15 s
later, holding their memory). Every worker process the package starts is therefore started through this module:

* :func:`data_loader` builds a ``torch.utils.data.DataLoader`` whose workers run :func:`end_with_parent` first;
* :func:`process_pool` and :func:`multiprocessing_pool` build pools whose workers do the same.

:func:`end_with_parent` asks Linux to send the worker ``SIGKILL`` when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, through ctypes), then checks that the parent is still alive, closing the race in
which the parent died before the request was made. Elsewhere (macOS, Windows) the request is not available and
the libraries' own checks remain.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["end_with_parent", "data_loader", "process_pool", "multiprocessing_pool", "WorkerInit"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _parent_alive(parent_pid: int) -> bool:
    if os.getppid() == parent_pid:
        return True
    try:  # a forkserver's child has the server as parent: ask about the process that asked for the worker
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def end_with_parent(parent_pid: int) -> None:
    """Make this process end when ``parent_pid`` (the process that started it) ends; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if not _parent_alive(parent_pid):
        os._exit(1)


class WorkerInit:
    """A picklable DataLoader ``worker_init_fn``: :func:`end_with_parent`, then the caller's own function."""

    def __init__(self, parent_pid: int, then: Callable[[int], Any] | None = None) -> None:
        self.parent_pid, self.then = parent_pid, then

    def __call__(self, worker_id: int) -> None:
        end_with_parent(self.parent_pid)
        if self.then is not None:
            self.then(worker_id)


def data_loader(dataset: Any, **options: Any) -> Any:
    """``torch.utils.data.DataLoader(dataset, **options)`` whose workers end with this process."""
    from torch.utils.data import DataLoader

    if options.get("num_workers", 0) > 0:
        options["worker_init_fn"] = WorkerInit(os.getpid(), options.get("worker_init_fn"))
    return DataLoader(dataset, **options)


def _pool_initializer(parent_pid: int, then: Callable[..., Any] | None, *args: Any) -> None:
    end_with_parent(parent_pid)
    if then is not None:
        then(*args)


def process_pool(workers: int, *, initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (),
                 **options: Any) -> Any:
    """A ``concurrent.futures.ProcessPoolExecutor`` whose workers end with this process."""
    from concurrent.futures import ProcessPoolExecutor

    start = functools.partial(_pool_initializer, os.getpid(), initializer)
    return ProcessPoolExecutor(workers, initializer=start, initargs=initargs, **options)


def multiprocessing_pool(processes: int, *, context: Any = None, initializer: Callable[..., Any] | None = None,
                         initargs: tuple[Any, ...] = (), **options: Any) -> Any:
    """A ``multiprocessing`` pool (of ``context``, default the default context) whose workers end with this
    process."""
    import multiprocessing

    context = context or multiprocessing.get_context()
    start = functools.partial(_pool_initializer, os.getpid(), initializer)
    return context.Pool(processes, initializer=start, initargs=initargs, **options)
