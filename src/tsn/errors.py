"""User-facing errors.

Every problem a user can fix (a missing folder, a corrupt file, an unknown task, a checkpoint of the wrong
layout) is raised as :class:`TsnError` with a one-line message saying what is wrong and how to fix it. The
command-line entry point prints that line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations

__all__ = ["TsnError"]


class TsnError(Exception):
    """An error caused by the user's input, with a one-line message that says how to fix it."""
