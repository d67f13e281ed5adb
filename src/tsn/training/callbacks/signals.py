"""Ctrl-C and SIGTERM stop a run cleanly: the step in progress finishes, ``last`` is saved, the run can resume."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

from tsn.training.callbacks.base import Callback

if TYPE_CHECKING:
    from tsn.training.loop import RunResult, TrainLoop

__all__ = ["StopOnSignal", "ignore_signals"]


def ignore_signals(_: int) -> None:
    """DataLoader workers leave Ctrl-C / SIGTERM to the training process, which saves before it stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StopOnSignal(Callback):
    """SIGINT / SIGTERM ask the loop to stop after the current step; a second signal aborts at once.

    The handlers are installed for the run only (and only in the main thread, where Python allows them); the
    previous ones are restored when the run ends.
    """

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.loop: TrainLoop | None = None

    def before_train(self, loop: TrainLoop) -> None:
        self.loop = loop
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, _frame: Any) -> None:
        loop = self.loop
        if loop is None or loop.stop_requested:
            raise KeyboardInterrupt
        loop.request_stop()
        loop.log.info("%s received: saving a checkpoint after this step (send it again to abort without saving)",
                      signal.Signals(number).name)

    def after_train(self, loop: TrainLoop, result: RunResult) -> None:
        self.close(loop)  # the loop checks no more: a signal from now on is the caller's again

    def close(self, loop: TrainLoop) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous, self.loop = {}, None
