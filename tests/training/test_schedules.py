"""Task schedules: order, coverage and determinism of the plans, and the rank / accumulation split of batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsn.errors import TsnError
from tsn.training.schedules import ALL, PlanDataset, PlanSampler, SampleKey, epoch_plan, plan_streams

TASKS = ("semseg", "human_parts", "edges", "normals", "saliency")


def per_task(length: int) -> dict[str, int]:
    return {task: length for task in TASKS}


def test_epoch_schedule_runs_one_full_pass_per_task_in_a_shuffled_order() -> None:
    plan = epoch_plan("epoch", TASKS, per_task(10), batch_size=3, seed=0, epoch=0)
    assert len(plan) == 5 * 3  # 10 // 3 full batches per task; the partial batch is dropped
    order = [step.tasks[0] for step in plan][::3]
    assert sorted(order) == sorted(TASKS)
    assert all(plan[i].tasks == plan[3 * (i // 3)].tasks for i in range(len(plan)))  # one contiguous pass each
    for task in TASKS:
        seen = [i for step in plan if step.tasks == (task,) for i in step.indices]
        assert len(seen) == len(set(seen)) == 9
    orders = {tuple(s.tasks[0] for s in epoch_plan("epoch", TASKS, per_task(10), 3, 0, e)[::3]) for e in range(8)}
    assert len(orders) > 1  # the task order changes from epoch to epoch


def test_round_robin_cycles_through_the_tasks_and_drops_exhausted_ones() -> None:
    lengths = {"semseg": 6, "normals": 2, "depth": 4}
    plan = epoch_plan("round_robin", list(lengths), lengths, batch_size=2, seed=1, epoch=0)
    assert [s.tasks[0] for s in plan] == ["semseg", "normals", "depth", "semseg", "depth", "semseg"]
    for task, length in lengths.items():
        assert sorted(i for s in plan if s.stream == task for i in s.indices) == list(range(length))


def test_all_tasks_trains_every_task_on_every_batch() -> None:
    plan = epoch_plan("all_tasks", TASKS, {ALL: 7}, batch_size=2, seed=0, epoch=3)
    assert len(plan) == 3 and all(s.tasks == TASKS and s.stream == ALL for s in plan)
    assert plan_streams("all_tasks", TASKS) == (ALL,) and plan_streams("epoch", TASKS) == TASKS


@settings(max_examples=40, deadline=None)
@given(
    schedule=st.sampled_from(["epoch", "round_robin"]),
    lengths=st.lists(st.integers(4, 40), min_size=1, max_size=5),
    batch=st.integers(1, 4),
    seed=st.integers(0, 1000),
    epoch=st.integers(0, 50),
)
def test_plans_are_pure_and_cover_every_full_batch(
    schedule: str, lengths: list[int], batch: int, seed: int, epoch: int
) -> None:
    sizes = dict(zip(TASKS, lengths, strict=False))
    plan = epoch_plan(schedule, list(sizes), sizes, batch, seed, epoch)
    assert plan == epoch_plan(schedule, list(sizes), sizes, batch, seed, epoch)
    for task, length in sizes.items():
        indices = [i for s in plan if s.stream == task for i in s.indices]
        assert len(indices) == (length // batch) * batch == len(set(indices))
        assert all(0 <= i < length for i in indices)
    assert Counter(len(s.indices) for s in plan) == Counter({batch: len(plan)})


def test_a_different_seed_or_epoch_reshuffles() -> None:
    base = epoch_plan("all_tasks", TASKS, {ALL: 64}, 8, seed=0, epoch=0)
    assert base != epoch_plan("all_tasks", TASKS, {ALL: 64}, 8, seed=1, epoch=0)
    assert base != epoch_plan("all_tasks", TASKS, {ALL: 64}, 8, seed=0, epoch=1)


def test_too_little_data_or_an_unknown_schedule_is_an_error() -> None:
    with pytest.raises(TsnError, match="fewer than one batch"):
        epoch_plan("epoch", TASKS, per_task(3), batch_size=4, seed=0, epoch=0)
    with pytest.raises(TsnError, match="unknown task schedule"):
        epoch_plan("random", TASKS, per_task(8), batch_size=4, seed=0, epoch=0)


def micro_batches(sampler: PlanSampler) -> list[list[SampleKey]]:
    return list(sampler)


def test_ranks_see_the_micro_batches_of_gradient_accumulation() -> None:
    plan = epoch_plan("epoch", TASKS, per_task(16), batch_size=8, seed=0, epoch=2)
    single = PlanSampler(rank=0, world_size=1, grad_accum=4, seed=5)
    single.set_epoch(2, plan)
    ranks = []
    for rank in range(2):
        sampler = PlanSampler(rank=rank, world_size=2, grad_accum=2, seed=5)
        sampler.set_epoch(2, plan)
        ranks.append(micro_batches(sampler))
    chunks = micro_batches(single)
    assert len(chunks) == 4 * len(plan) and all(len(c) == 2 for c in chunks)
    for number in range(len(plan)):  # step n: rank 0 takes chunks 0-1, rank 1 chunks 2-3 (seeds included)
        step_chunks = chunks[4 * number : 4 * number + 4]
        assert ranks[0][2 * number : 2 * number + 2] == step_chunks[:2]
        assert ranks[1][2 * number : 2 * number + 2] == step_chunks[2:]
    flat = [key for chunk in chunks[:4] for key in chunk]
    assert [k.index for k in flat] == list(plan[0].indices) and len({k.seed for k in flat}) == 8


def test_a_sampler_resumes_exactly_after_the_steps_already_done() -> None:
    plan = epoch_plan("round_robin", TASKS, per_task(12), batch_size=4, seed=0, epoch=0)
    sampler = PlanSampler(grad_accum=2)
    sampler.set_epoch(0, plan)
    everything = micro_batches(sampler)
    sampler.set_epoch(0, plan, start=5)
    assert len(sampler) == 2 * (len(plan) - 5) and micro_batches(sampler) == everything[10:]


def test_indivisible_batches_are_refused() -> None:
    sampler = PlanSampler(world_size=2, grad_accum=2)
    sampler.set_epoch(0, epoch_plan("all_tasks", TASKS, {ALL: 12}, batch_size=6, seed=0, epoch=0))
    with pytest.raises(TsnError, match="not divisible"):
        micro_batches(sampler)


def test_plan_dataset_transforms_with_the_keys_seed() -> None:
    def noisy(sample: dict, rng: np.random.Generator) -> dict:
        return {**sample, "noise": rng.random()}

    data = PlanDataset({"a": [{"x": 1}, {"x": 2}]}, {"a": noisy})
    first, again, other = data[SampleKey("a", 1, 7)], data[SampleKey("a", 1, 7)], data[SampleKey("a", 1, 8)]
    assert first == again and first["x"] == 2 and first["noise"] != other["noise"]
