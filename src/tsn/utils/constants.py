"""Conventions shared by every level of the package (labels, metrics, tasks), kept at the bottom so that the pure
array code (:mod:`tsn.metrics`) needs nothing from the task registry."""

from __future__ import annotations

__all__ = ["IGNORE_INDEX"]

IGNORE_INDEX = 255
"""Ignore value of every label map (as in ASTMT / TSNs): pixels holding it are neither trained nor scored."""
