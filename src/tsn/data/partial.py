"""Partially labelled data: which tasks each training image is labelled for.

A dataset sample may carry ``sample["labelled"]``, a dict ``{task: bool}`` with an entry for every task the
dataset serves (default collation turns it into ``{task: BoolTensor[B]}``). A dataset that does not set it is
fully labelled. A sample that is not labelled for a task still holds an array for that task (any values: the
training loss never reads it), so that every sample of a batch has the same keys.

Two sources of masks take the same path through training:

* a real dataset's own (an image whose label file is missing): it sets ``sample["labelled"]`` and, so that the
  per-task schedules can draw only labelled images without reading every sample, a method
  ``labelled_indices(task) -> Sequence[int]``;
* an experiment's configured fractions (``TrainConfig.label_fractions``): :class:`PartialLabels` wraps a dataset
  and keeps the labels of a fraction of its images per task.

Which images keep their labels is a pure function of ``(seed, task, dataset length)``: every rank, every epoch
and a resumed run see the same subset. Per task, the images are ranked once by a permutation drawn from the seed
and the first ``round(fraction * n)`` (at least one) are labelled, so the subsets are *nested*: the images
labelled at fraction 0.25 are among those labelled at 0.5, and a curve over fractions adds labels, never swaps
them. Fraction 1 labels every image.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from tsn.errors import TsnError
from tsn.tasks import TaskSpec

__all__ = ["LABELLED", "PartialLabels", "labelled_subset", "labelled_indices", "dataset_task_names"]

LABELLED = "labelled"
"""The sample key of the per-task label mask."""


def labelled_subset(length: int, fraction: float, seed: int, task: str) -> np.ndarray:
    """The sorted indices of the ``round(fraction * length)`` images (at least one) labelled for ``task``.

    The ranking depends on ``(seed, task)`` only (CRC-32 of the name: stable across processes, unlike ``hash``),
    so a smaller fraction gives a prefix of the same ranking: nested subsets.
    """
    if not 0 < fraction <= 1:
        raise TsnError(f"the labelled fraction of {task} must lie in (0, 1], got {fraction}")
    if length <= 0:
        return np.zeros(0, dtype=np.int64)
    count = min(length, max(1, round(fraction * length)))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(f"labels:{task}".encode())]))
    return np.sort(rng.permutation(length)[:count])


def dataset_task_names(dataset: Dataset) -> tuple[str, ...]:
    """The tasks a dataset serves, from its ``tasks`` attribute (names or :class:`TaskSpec`)."""
    tasks = getattr(dataset, "tasks", None)
    if tasks is None:
        raise TsnError(f"{type(dataset).__name__} does not say which tasks it serves (no `tasks` attribute); "
                       "pass tasks=[...]")
    return tuple(t.name if isinstance(t, TaskSpec) else str(t) for t in tasks)


def labelled_indices(dataset: Dataset, task: str) -> Sequence[int]:
    """The indices of ``dataset`` whose samples are labelled for ``task``: the dataset's own
    ``labelled_indices(task)`` when it has one, else all of them (a dataset without masks is fully labelled)."""
    own = getattr(dataset, "labelled_indices", None)
    if callable(own):
        return [int(i) for i in own(task)]
    return range(len(dataset))  # type: ignore[arg-type]  # map-style datasets have a length


class PartialLabels(Dataset):
    """``dataset`` with only a fraction of its images labelled per task (``fractions``: ``{task: f}``, 0 < f <= 1).

    Sets ``sample["labelled"]`` for every task the dataset serves (a task not in ``fractions`` keeps all its
    labels), combined with any mask the wrapped dataset sets itself: a sample is labelled for a task when both
    say so. The label arrays themselves are passed through unchanged; the training loss excludes the unlabelled
    ones (:func:`tsn.training.losses.multitask_loss`), and the per-task schedules draw from
    :meth:`labelled_indices` only.
    """

    def __init__(
        self, dataset: Dataset, fractions: Mapping[str, float], seed: int, tasks: Sequence[str] | None = None
    ) -> None:
        self.dataset, self.seed = dataset, int(seed)
        self.tasks: tuple[str, ...] = tuple(tasks) if tasks is not None else dataset_task_names(dataset)
        unknown = sorted(set(fractions) - set(self.tasks))
        if unknown:
            raise TsnError(f"a labelled fraction is given for {unknown[0]!r}, which this dataset does not serve "
                           f"({', '.join(self.tasks)})")
        self.fractions = {task: float(f) for task, f in fractions.items()}
        n = len(self)
        inner = {task: labelled_indices(dataset, task) for task in self.tasks}
        self._labelled: dict[str, np.ndarray] = {}
        for task in self.tasks:
            mask = np.zeros(n, dtype=bool)
            mask[np.asarray(inner[task], dtype=np.int64)] = True
            if task in self.fractions:
                keep = np.zeros(n, dtype=bool)
                keep[labelled_subset(n, self.fractions[task], self.seed, task)] = True
                mask &= keep
            self._labelled[task] = mask

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def labelled_indices(self, task: str) -> Sequence[int]:
        """The indices labelled for ``task``, in increasing order."""
        if task not in self._labelled:
            raise TsnError(f"this dataset does not serve task {task!r} ({', '.join(self.tasks)})")
        return np.flatnonzero(self._labelled[task]).tolist()

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        own = sample.get(LABELLED, {})
        sample[LABELLED] = {task: bool(own.get(task, True)) and bool(self._labelled[task][index])
                            for task in self.tasks}
        return sample

    def __repr__(self) -> str:
        return f"PartialLabels({self.dataset!r}, fractions={self.fractions}, seed={self.seed})"
