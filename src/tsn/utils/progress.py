"""Whether progress bars are shown: ``--no-progress`` reaches every bar, including those deep in the data layer.

A command's ``--no-progress`` is passed as ``progress=False`` to the functions it calls, but some bars belong to
work those functions start indirectly (rendering the synthetic scene cache, listing PASCAL-Part persons, a
library's download). :func:`showing_progress` sets, for the duration of a command, whether bars may be shown at
all, and :func:`progress_enabled` is what every bar of the package consults. ``tsn``'s command line enters
``showing_progress(False)`` for ``--no-progress`` (every command has the option); it also sets ``TQDM_DISABLE``
for that time, so that bars of libraries and of worker processes stay hidden too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["progress_enabled", "showing_progress"]

_enabled = True


def progress_enabled() -> bool:
    """False inside :func:`showing_progress` ``(False)``: no progress bar may be shown."""
    return _enabled


@contextlib.contextmanager
def showing_progress(enabled: bool) -> Iterator[None]:
    """Within the block, progress bars are shown (where a terminal shows them) only if ``enabled``."""
    global _enabled
    before, environment = _enabled, os.environ.get("TQDM_DISABLE")
    _enabled = enabled and before
    if not enabled:
        os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        _enabled = before
        if not enabled:
            if environment is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = environment
