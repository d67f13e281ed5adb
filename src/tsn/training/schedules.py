"""Task schedules: which task(s) each optimizer step trains, on which samples, in which order.

An epoch is planned in advance as a list of :class:`Step` (the *plan*), a pure function of ``(schedule, tasks,
dataset lengths, batch size, seed, epoch)``. Every process of a distributed run computes the same plan, so all
ranks train the same task at every step; a resumed run recomputes the plan and skips the steps already done, so
it sees exactly the batches the interrupted run would have seen.

* ``epoch`` (the authors'): the task order is shuffled every epoch; each task in turn makes one full pass over
  its own data (one task per batch).
* ``round_robin``: one task per batch, cycling through the tasks in the model's order; each task still makes one
  full pass per epoch (a task whose data is exhausted drops out of the cycle).
* ``all_tasks``: every batch trains every task (the encoder runs once, the decoder for every task) with one
  weighted loss and one step; an epoch is one pass over the data.

Data streams: the per-task schedules draw batches from one stream per task (the dataset built for that task
alone); ``all_tasks`` draws from the single stream :data:`ALL`. Every stream is shuffled by its own permutation of
``(seed, epoch, stream)`` and cut into full global batches (a trailing partial batch is dropped so that every
step, and every rank, has the same batch size).

Partially labelled data (:mod:`tsn.data.partial`): a stream's *pool* is either its dataset's length (every index)
or the dataset indices it may draw from. The per-task schedules pool a task's stream over the images labelled for
that task (:func:`stream_pools`), so they never draw an unlabelled sample; ``all_tasks`` draws every image and the
loss masks each sample's unlabelled tasks. A pool holding every index gives exactly the plan of the plain length.

:class:`PlanSampler` plays ``DistributedSampler``'s role for a plan: it reshuffles per epoch and gives each rank
its share of every global batch, cut into gradient-accumulation micro-batches. The global batch is split into
``world_size * grad_accum`` contiguous chunks and rank ``r`` takes chunks ``r * grad_accum ... + grad_accum - 1``,
so a run on 2 processes sees, chunk for chunk, the micro-batches of a 1-process run with ``grad_accum = 2``.
Each sample also gets its own augmentation seed, a function of ``(seed, epoch, step, position in the batch)``, so
augmentations do not depend on worker processes, rank count or interruptions.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from torch.utils.data import Dataset, Sampler

from tsn.errors import TsnError
from tsn.training.train_config import SCHEDULES

__all__ = [
    "ALL",
    "Step",
    "SampleKey",
    "Pool",
    "plan_streams",
    "stream_pools",
    "epoch_plan",
    "micro_batch_size",
    "sample_seed",
    "PlanSampler",
    "PlanDataset",
]

ALL = "all"
"""Stream name of the ``all_tasks`` schedule (one dataset carrying every task's labels)."""


@dataclass(frozen=True)
class Step:
    """One optimizer step of a plan: the task(s) it trains and the global batch it uses."""

    tasks: tuple[str, ...]
    stream: str
    """The data stream the batch comes from: a task name, or :data:`ALL`."""
    indices: tuple[int, ...]
    """Dataset indices of the global batch (all ranks and accumulation steps together)."""


@dataclass(frozen=True)
class SampleKey:
    """What a :class:`PlanDataset` is indexed with: the stream, the index in it, the augmentation seed.

    A frozen dataclass rather than a NamedTuple, whose ``index`` field would shadow ``tuple.index``.
    """

    stream: str
    index: int
    seed: int


def _generator(seed: int, epoch: int, tag: str) -> np.random.Generator:
    # CRC-32 of the tag (stable across processes, unlike hash()) keeps the streams' permutations independent.
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), zlib.crc32(tag.encode())]))


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise TsnError(f"unknown task schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")


def plan_streams(schedule: str, tasks: Sequence[str]) -> tuple[str, ...]:
    """The data streams a schedule reads: one per task, or :data:`ALL`."""
    _check_schedule(schedule)
    return (ALL,) if schedule == "all_tasks" else tuple(tasks)


Pool = int | Sequence[int]
"""The samples a stream draws from: every index of a dataset of that length, or these dataset indices."""


def stream_pools(schedule: str, datasets: Mapping[str, Dataset]) -> dict[str, Pool]:
    """Each stream's pool: a per-task stream's labelled indices (:func:`tsn.data.partial.labelled_indices`), the
    :data:`ALL` stream's length (it draws every image; the loss masks the unlabelled tasks per sample)."""
    from tsn.data.partial import labelled_indices

    _check_schedule(schedule)
    pools: dict[str, Pool] = {}
    for stream, dataset in datasets.items():
        length = len(cast(Sized, dataset))
        indices = length if stream == ALL else labelled_indices(dataset, stream)
        # A pool of every index is kept as the length: the same plan, and a small checkpoint-free object.
        pools[stream] = length if isinstance(indices, int) or list(indices) == list(range(length)) else indices
    return pools


def _batches(pool: Pool, batch_size: int, rng: np.random.Generator, stream: str) -> list[tuple[int, ...]]:
    length = pool if isinstance(pool, int) else len(pool)
    if length < batch_size:
        what = "samples" if isinstance(pool, int) else f"samples labelled for {stream}"
        raise TsnError(
            f"the training data for {stream!r} has {length} {what}, fewer than one batch of {batch_size}; "
            "lower batch_size, use more data" + ("" if isinstance(pool, int) else " or label more of it")
        )
    order = rng.permutation(length).tolist()
    if not isinstance(pool, int):
        order = [int(pool[i]) for i in order]
    return [tuple(order[start : start + batch_size]) for start in range(0, length - batch_size + 1, batch_size)]


def epoch_plan(
    schedule: str,
    tasks: Sequence[str],
    lengths: Mapping[str, Pool],
    batch_size: int,
    seed: int,
    epoch: int,
) -> list[Step]:
    """The steps of ``epoch`` (0-based); ``lengths`` gives the pool of every stream of :func:`plan_streams`: its
    size (every index), or the dataset indices it draws from (:func:`stream_pools`)."""
    streams = plan_streams(schedule, tasks)
    batches = {s: _batches(lengths[s], batch_size, _generator(seed, epoch, f"stream:{s}"), s) for s in streams}
    if schedule == "all_tasks":
        return [Step(tuple(tasks), ALL, batch) for batch in batches[ALL]]
    if schedule == "epoch":
        order = [tasks[i] for i in _generator(seed, epoch, "task-order").permutation(len(tasks))]
        return [Step((task,), task, batch) for task in order for batch in batches[task]]
    rounds = max(len(b) for b in batches.values())
    return [
        Step((task,), task, batches[task][k]) for k in range(rounds) for task in tasks if k < len(batches[task])
    ]


def micro_batch_size(batch_size: int, world_size: int, grad_accum: int) -> int:
    """Samples per forward pass on each rank: the global batch split over ranks and accumulation steps."""
    chunks = world_size * grad_accum
    if batch_size % chunks:
        raise TsnError(
            f"batch_size {batch_size} is not divisible by world size x grad_accum = {chunks}; choose one that is"
        )
    return batch_size // chunks


def sample_seed(seed: int, epoch: int, step: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of the global batch of ``step`` in ``epoch``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(step), int(position)]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


class PlanSampler(Sampler[list[SampleKey]]):
    """Batch sampler over a plan: this rank's micro-batches of every step from ``start`` on, in order.

    Call :meth:`set_epoch` before each epoch (like ``DistributedSampler.set_epoch``); one instance can then serve a
    DataLoader with persistent workers for the whole run.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, grad_accum: int = 1, seed: int = 0) -> None:
        self.rank, self.world_size, self.grad_accum, self.seed = rank, world_size, grad_accum, seed
        self.plan: list[Step] = []
        self.start = 0
        self.epoch = 0

    def set_epoch(self, epoch: int, plan: list[Step], start: int = 0) -> None:
        """Serve ``plan`` (the plan of ``epoch``) from step ``start`` (the steps before are already done)."""
        self.epoch, self.plan, self.start = epoch, plan, start

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for number in range(self.start, len(self.plan)):
            step = self.plan[number]
            size = micro_batch_size(len(step.indices), self.world_size, self.grad_accum)
            for accum in range(self.grad_accum):
                first = (self.rank * self.grad_accum + accum) * size
                yield [
                    SampleKey(step.stream, step.indices[p], sample_seed(self.seed, self.epoch, number, p))
                    for p in range(first, first + size)
                ]

    def __len__(self) -> int:
        return (len(self.plan) - self.start) * self.grad_accum


Transform = Callable[[dict[str, Any], np.random.Generator], Any]


class PlanDataset(Dataset):
    """Raw datasets by stream, each with its transform, indexed by :class:`SampleKey`.

    The transform draws its randomness from a generator seeded with the key's seed (never from a global or
    per-worker RNG), which is what makes an augmented run reproducible across interruptions and rank counts.
    A sample's label mask (``sample["labelled"]``, :mod:`tsn.data.partial`) is not the transform's business (the
    resize drops keys it does not know): it is set aside and put back on the transformed sample.
    """

    def __init__(self, datasets: Mapping[str, Dataset], transforms: Mapping[str, Transform]) -> None:
        self.datasets, self.transforms = dict(datasets), dict(transforms)

    def __getitem__(self, key: SampleKey) -> Any:
        from tsn.data.partial import LABELLED

        sample = self.datasets[key.stream][key.index]
        labelled = sample.get(LABELLED)
        if labelled is not None:
            sample = {k: v for k, v in sample.items() if k != LABELLED}
        out = self.transforms[key.stream](sample, np.random.default_rng(key.seed))
        if labelled is not None:
            out[LABELLED] = {task: bool(flag) for task, flag in labelled.items()}
        return out
