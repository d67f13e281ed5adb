"""Where datasets and caches live.

* Dataset root: ``--data-root`` on the command line, else ``$TSN_DATA_ROOT``, else ``~/.cache/tsn/data``.
  Real datasets sit in ``<root>/PASCAL_MT`` and ``<root>/NYUD_MT`` (the ASTMT / TSNs layout).
* Cache directory (parts selection lists, generated synthetic scenes): ``$TSN_CACHE_DIR``, else
  ``~/.cache/tsn``. Never the dataset root, which may be read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "cache_dir"]


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The dataset root: ``explicit`` if given, else ``$TSN_DATA_ROOT``, else ``~/.cache/tsn/data``."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("TSN_DATA_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return (Path.home() / ".cache" / "tsn" / "data").resolve()


def cache_dir(sub: str | None = None) -> Path:
    """A writable cache folder (``$TSN_CACHE_DIR`` or ``~/.cache/tsn``), optionally a named sub-folder of it."""
    base = Path(os.environ.get("TSN_CACHE_DIR") or Path.home() / ".cache" / "tsn").expanduser()
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path
