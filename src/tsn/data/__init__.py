"""Datasets and transforms.

Every dataset of the registry (:mod:`tsn.dataset_catalog`: ``synthetic``, ``pascal_context``, ``nyud``, ``nyuv2_13``,
``cityscapes_7`` and any registered by user code) returns the same sample dict::

    {"image": uint8 H x W x 3 RGB, <task>: float32 label, ..., "meta": {"id": str, "size": (H, W), "dataset": str}}

(plus, for partially labelled data, ``"labelled": {task: bool}``: :mod:`tsn.data.partial`) and
:func:`tsn.data.transforms.build_transforms` turns it into tensors. :func:`build_dataset` builds any of them
by name (the class is the one its :class:`~tsn.dataset_catalog.DatasetSpec` names); :func:`collate` batches transformed
samples (``meta`` stays a list of dicts).
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union

from torch.utils.data import Dataset, default_collate

from tsn.data.nyud import NYUD
from tsn.data.partial import PartialLabels
from tsn.data.pascal_context import PascalContext
from tsn.data.readers import Transform
from tsn.data.transforms import build_transforms
from tsn.dataset_catalog import DatasetSpec, get_dataset
from tsn.errors import TsnError
from tsn.tasks import TaskSpec

__all__ = [
    "build_dataset",
    "dataset_options",
    "check_dataset_options",
    "collate",
    "build_transforms",
    "PascalContext",
    "NYUD",
    "PartialLabels",
]

_PASSED_BY_BUILD_DATASET = ("self", "split", "tasks", "transform", "root")
"""Constructor arguments that :func:`build_dataset` fills itself: not options a user may give."""


def dataset_options(name: str) -> dict[str, Any]:
    """The options (constructor keyword arguments beyond split / tasks / transform / root) of dataset ``name``,
    with their type hints."""
    cls = get_dataset(name).loader_class()
    hints = typing.get_type_hints(cls.__init__)
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in _PASSED_BY_BUILD_DATASET]
    return {option: hints.get(option, Any) for option in names}


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` can be passed where the constructor declares ``hint`` (simple scalar types only)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is os.PathLike or typing.get_origin(hint) is os.PathLike:
        return isinstance(value, os.PathLike)
    return True  # sequences, callables...: left to the dataset's own checks


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_hint_name(option) for option in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if hint is os.PathLike or typing.get_origin(hint) is os.PathLike:
        return "path"
    return getattr(hint, "__name__", str(hint))


def check_dataset_options(name: str, options: Mapping[str, Any], where: str = "dataset option") -> None:
    """Refuse, in one line, an option dataset ``name`` does not take or a value of the wrong type."""
    known = dataset_options(name)
    key = get_dataset(name).name
    for option, value in options.items():
        if option not in known:
            valid = ", ".join(known) or "none"
            raise TsnError(f"{where} {option!r} is not an option of the {key} dataset; valid options: {valid}")
        if not _fits(value, known[option]):
            expected = _hint_name(known[option])
            raise TsnError(f"{where} {option}={value!r} has the wrong type for the {key} dataset; expected {expected}")


def build_dataset(
    name: str,
    split: str | Sequence[str] = "val",
    tasks: Sequence[str | TaskSpec] | None = None,
    root: str | os.PathLike[str] | None = None,
    transform: Transform | None = None,
    **kwargs: Any,
) -> Dataset:
    """The dataset called ``name`` (a name or alias of the registry, :func:`tsn.dataset_catalog.list_datasets`).

    ``root`` is the data root of the real datasets (default ``$TSN_DATA_ROOT`` / ``~/.cache/tsn/data``); generated
    datasets (the synthetic scenes) ignore it (they are cached in the cache folder). ``kwargs`` go to the dataset
    class (e.g. ``size``, ``length``, ``seed`` for :class:`~tsn.data.synthetic.SyntheticScenes`,
    ``parts_cache_dir`` for :class:`PascalContext`, ``augment`` for the MTAN datasets).
    """
    spec: DatasetSpec = get_dataset(name)
    check_dataset_options(spec.name, kwargs)
    names = None if tasks is None else [t.name if isinstance(t, TaskSpec) else t for t in tasks]
    cls = spec.loader_class()
    if spec.generated:
        if not isinstance(split, str):
            raise TsnError(f"the {spec.name} dataset takes one split at a time, got {list(split)}")
        return cls(split=split, tasks=names, transform=transform, **kwargs)
    return cls(root=root, split=split, tasks=names, transform=transform, **kwargs)


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of transformed samples; ``meta`` becomes a list of the samples' meta dicts.

    (``default_collate`` would turn the ``size`` tuples into two tensors and the ids into a tuple.)
    """
    metas = [sample["meta"] for sample in batch if "meta" in sample]
    out = default_collate([{k: v for k, v in sample.items() if k != "meta"} for sample in batch])
    if metas:
        out["meta"] = metas
    return out
