"""Datasets and transforms.

Every dataset (``synthetic``, ``pascal_context``, ``nyud``) returns the same sample dict::

    {"image": uint8 H x W x 3 RGB, <task>: float32 label, ..., "meta": {"id": str, "size": (H, W), "dataset": str}}

and :func:`tsn.data.transforms.build_transforms` turns it into tensors. :func:`build_dataset` builds any of them
by name; :func:`collate` batches transformed samples (``meta`` stays a list of dicts).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from torch.utils.data import Dataset, default_collate

from tsn.data.nyud import NYUD
from tsn.data.pascal_context import PascalContext
from tsn.data.readers import Transform
from tsn.data.transforms import build_transforms
from tsn.errors import TsnError
from tsn.tasks import TaskSpec

__all__ = ["DATASETS", "build_dataset", "collate", "build_transforms", "PascalContext", "NYUD"]

DATASETS = ("synthetic", "pascal_context", "nyud")
"""Names accepted by :func:`build_dataset` (and the ``DATASET`` argument of the commands)."""

_REAL = {"pascal_context": PascalContext, "nyud": NYUD}


def build_dataset(
    name: str,
    split: str | Sequence[str] = "val",
    tasks: Sequence[str | TaskSpec] | None = None,
    root: str | os.PathLike[str] | None = None,
    transform: Transform | None = None,
    **kwargs: Any,
) -> Dataset:
    """The dataset called ``name`` (one of :data:`DATASETS`).

    ``root`` is the data root of the real datasets (default ``$TSN_DATA_ROOT`` / ``~/.cache/tsn/data``); the
    synthetic scenes ignore it (they are generated and cached in the cache folder). ``kwargs`` go to the dataset
    class (e.g. ``size``, ``length``, ``seed`` for :class:`~tsn.data.synthetic.SyntheticScenes`,
    ``parts_cache_dir`` for :class:`PascalContext`).
    """
    key = name.strip().lower().replace("-", "_")
    names = None if tasks is None else [t.name if isinstance(t, TaskSpec) else t for t in tasks]
    if key == "synthetic":
        if not isinstance(split, str):
            raise TsnError(f"the synthetic dataset takes one split at a time, got {list(split)}")
        # Imported here: the generator is optional for the real datasets and heavier to import.
        from tsn.data.synthetic import SyntheticScenes

        return SyntheticScenes(split=split, tasks=names, transform=transform, **kwargs)
    if key not in _REAL:
        raise TsnError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _REAL[key](root=root, split=split, tasks=names, transform=transform, **kwargs)


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of transformed samples; ``meta`` becomes a list of the samples' meta dicts.

    (``default_collate`` would turn the ``size`` tuples into two tensors and the ids into a tuple.)
    """
    metas = [sample["meta"] for sample in batch if "meta" in sample]
    out = default_collate([{k: v for k, v in sample.items() if k != "meta"} for sample in batch])
    if metas:
        out["meta"] = metas
    return out
