"""Partially labelled data (:mod:`tsn.data.partial`): the labelled subset, the schedules' pools, the masked loss, and
training runs on tiny synthetic scenes (fraction 1 = no option, NaN-poisoned missing labels, exact resume)."""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_runs import tiny_run
from torch.utils.data import Dataset

import tsn.data
from error_model import assert_close_float32
from tsn.data.partial import LABELLED, PartialLabels, labelled_indices, labelled_subset
from tsn.errors import TsnError
from tsn.models.checkpoint import read_checkpoint
from tsn.tasks import get_task
from tsn.training import load_config, train
from tsn.training.losses import multitask_loss
from tsn.training.schedules import ALL, PlanSampler, epoch_plan, plan_streams, stream_pools

TINY: dict[str, Any] = tiny_run({
    "name": "tiny-partial",
    "schedule": "epoch",  # TrainConfig's default; the tests name the schedule they train
    "epochs": 3,
    "max_steps": 4,
    "scheduler": {"name": "constant"},
    "validation": {"every": 0, "metrics": False},
    "checkpoint_every": 0,
    "tensorboard": False,
    "seed": 5,
})
SCHEDULES = ("epoch", "round_robin", "all_tasks")


# One torch thread and a module-wide scene cache (tests/training/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread", "synthetic_cache")


class Toy(Dataset):
    """``n`` tiny samples of ``tasks`` (label = the index), optionally with its own masks (missing label files)."""

    def __init__(self, n: int, tasks: tuple[str, ...], missing: dict[str, set[int]] | None = None) -> None:
        self.n, self.tasks, self.missing = n, tasks, missing

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"image": np.zeros((2, 2, 3), np.uint8)}
        sample.update({task: np.full((2, 2), float(index), np.float32) for task in self.tasks})
        if self.missing is not None:
            sample[LABELLED] = {task: index not in self.missing.get(task, set()) for task in self.tasks}
        return sample

    def labelled_indices(self, task: str) -> list[int]:
        return [i for i in range(self.n) if self.missing is None or i not in self.missing.get(task, set())]


# ----------------------------------------------------------------------------------------------------- subset


def test_the_labelled_subset_is_deterministic_nested_and_sized_by_the_fraction() -> None:
    subsets = {f: set(labelled_subset(40, f, seed=7, task="semseg").tolist()) for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
    assert {f: len(s) for f, s in subsets.items()} == {0.1: 4, 0.25: 10, 0.5: 20, 0.75: 30, 1.0: 40}
    assert subsets[0.1] <= subsets[0.25] <= subsets[0.5] <= subsets[0.75] <= subsets[1.0] == set(range(40))
    assert set(labelled_subset(40, 0.25, seed=7, task="semseg").tolist()) == subsets[0.25]  # a pure function
    assert set(labelled_subset(40, 0.25, seed=8, task="semseg").tolist()) != subsets[0.25]  # of the seed
    assert set(labelled_subset(40, 0.25, seed=7, task="depth").tolist()) != subsets[0.25]  # and the task
    assert len(labelled_subset(40, 0.001, seed=7, task="semseg")) == 1  # a positive fraction labels something
    with pytest.raises(TsnError, match=r"must lie in \(0, 1\]"):
        labelled_subset(40, 0.0, seed=7, task="semseg")


def test_partial_labels_marks_samples_and_combines_with_the_datasets_own_masks() -> None:
    toy = Toy(20, ("semseg", "depth"), missing={"semseg": {0, 1, 2, 3}, "depth": {5}})
    partial = PartialLabels(toy, {"semseg": 0.5}, seed=3)
    chosen = set(labelled_subset(20, 0.5, seed=3, task="semseg").tolist())
    assert partial.labelled_indices("semseg") == sorted(chosen - {0, 1, 2, 3})
    assert partial.labelled_indices("depth") == [i for i in range(20) if i != 5]  # no fraction: its own mask only
    for index in range(20):
        sample = partial[index]
        assert sample[LABELLED] == {"semseg": index in chosen and index > 3, "depth": index != 5}
        assert sample["semseg"][0, 0] == index  # the labels themselves pass through
    assert list(labelled_indices(Toy(6, ("semseg",)), "semseg")) == list(range(6))  # no masks: fully labelled
    assert PartialLabels(toy, {"semseg": 0.5}, seed=3).labelled_indices("semseg") == partial.labelled_indices("semseg")
    with pytest.raises(TsnError, match="does not serve"):
        PartialLabels(toy, {"normals": 0.5}, seed=3)


# -------------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_each_schedule_draws_only_labelled_samples_for_a_task(schedule: str) -> None:
    tasks = ("semseg", "depth")
    fractions = {"semseg": 0.25, "depth": 0.5}
    streams = plan_streams(schedule, tasks)
    datasets = {s: PartialLabels(Toy(48, tasks if s == ALL else (s,)), {t: fractions[t] for t in tasks
                                                                        if s in (ALL, t)}, seed=1) for s in streams}
    pools = stream_pools(schedule, datasets)
    for epoch in range(3):
        plan = epoch_plan(schedule, tasks, pools, batch_size=4, seed=1, epoch=epoch)
        drawn: dict[str, list[int]] = {}
        for step in plan:
            for task in step.tasks:
                drawn.setdefault(task, []).extend(step.indices)
        for task in tasks:
            labelled = set(datasets[task if schedule != "all_tasks" else ALL].labelled_indices(task))
            if schedule == "all_tasks":  # every image is drawn; the loss masks the unlabelled ones
                assert sorted(drawn[task]) == list(range(48))
            else:  # one pass over exactly the labelled images (48 * f is a multiple of the batch)
                assert sorted(drawn[task]) == sorted(labelled) and len(labelled) == 48 * fractions[task]
        # Two ranks share every step: together they draw the step's global batch, nothing else.
        ranks = [PlanSampler(rank=r, world_size=2, seed=1) for r in range(2)]
        for sampler in ranks:
            sampler.set_epoch(epoch, plan)
        for step, (a, b) in zip(plan, zip(*ranks, strict=True), strict=True):
            assert [key.index for key in a + b] == list(step.indices)


def test_a_pool_of_every_index_gives_the_plan_of_the_plain_length() -> None:
    tasks = ("semseg", "depth")
    for schedule in SCHEDULES:
        streams = plan_streams(schedule, tasks)
        full = {s: PartialLabels(Toy(20, tasks if s == ALL else (s,)), {}, seed=0) for s in streams}
        assert stream_pools(schedule, full) == {s: 20 for s in streams}
        listed = {s: list(range(20)) for s in streams}
        assert epoch_plan(schedule, tasks, listed, 4, 2, 1) == epoch_plan(schedule, tasks, {s: 20 for s in streams},
                                                                          4, 2, 1)
    with pytest.raises(TsnError, match="3 samples labelled for semseg, fewer than one batch of 4"):
        epoch_plan("epoch", ["semseg"], {"semseg": [1, 5, 7]}, 4, 0, 0)


# ------------------------------------------------------------------------------------------------------- loss


def _batch(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    n, h, w = 6, 5, 7
    outputs = {"semseg": torch.randn(n, 21, h, w, generator=generator), "saliency": torch.randn(n, 1, h, w,
               generator=generator), "normals": torch.randn(n, 3, h, w, generator=generator),
               "depth": torch.randn(n, 1, h, w, generator=generator)}
    normals = torch.nn.functional.normalize(torch.randn(n, 3, h, w, generator=generator), dim=1)
    labels = {"semseg": torch.randint(0, 21, (n, 1, h, w), generator=generator).float(),
              "saliency": (torch.rand(n, 1, h, w, generator=generator) > 0.6).float(),
              "normals": normals, "depth": torch.rand(n, 1, h, w, generator=generator) + 0.5}
    return outputs, labels


def test_an_unlabelled_samples_label_never_reaches_the_loss_or_the_gradient() -> None:
    specs = {name: get_task(name) for name in ("semseg", "saliency", "normals", "depth")}
    weights = {name: 1.0 + i for i, name in enumerate(specs)}
    outputs, labels = _batch(torch.Generator().manual_seed(0))
    labelled = {"semseg": torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool),
                "saliency": torch.tensor([0, 1, 1, 0, 1, 1], dtype=torch.bool),
                "normals": torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool),
                "depth": torch.zeros(6, dtype=torch.bool)}  # no labelled sample: no loss, no gradient
    poisoned = {t: torch.where(labelled[t].view(-1, 1, 1, 1), label, float("nan")) for t, label in labels.items()}
    raw = {t: o.clone().requires_grad_() for t, o in outputs.items()}
    total, losses = multitask_loss(raw, poisoned, specs, weights, labelled)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in losses.values())
    assert losses["depth"].item() == 0.0 and torch.count_nonzero(raw["depth"].grad) == 0
    for task in ("semseg", "saliency", "normals"):
        keep = labelled[task]
        alone = outputs[task][keep].clone().requires_grad_()
        _, expected = multitask_loss({task: alone}, {task: labels[task][keep]}, specs, weights)
        expected[task].backward()
        pixels = int(keep.sum()) * 5 * 7
        assert_close_float32(losses[task].detach(), expected[task].detach(), reduction=pixels, what=f"{task} loss")
        grad = raw[task].grad
        assert grad is not None and torch.isfinite(grad).all()
        assert torch.count_nonzero(grad[~keep]) == 0  # the unlabelled samples get no gradient
        assert alone.grad is not None
        assert_close_float32(grad[keep] / weights[task], alone.grad, reduction=pixels, scale=alone.grad.abs().max(),
                             what=f"{task} gradient")
    # All labelled: exactly the loss without a mask.
    everyone = {t: torch.ones(6, dtype=torch.bool) for t in specs}
    plain_total, _ = multitask_loss(outputs, labels, specs, weights)
    assert multitask_loss(outputs, labels, specs, weights, everyone)[0].item() == plain_total.item()


# --------------------------------------------------------------------------------------------------- training


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "checkpoints" / "last.pt")["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("schedule", ["epoch", "all_tasks"])  # round_robin shares epoch's per-task pools
def test_fraction_one_trains_bit_identically_to_no_option(tmp_path: Path, schedule: str) -> None:
    plain = train(load_config(TINY, [f"schedule={schedule}"]), tmp_path / "plain", progress=False)
    ones = load_config(TINY, [f"schedule={schedule}", "label_fractions.semseg=1", "label_fractions.depth=1.0"])
    full = train(ones, tmp_path / "ones", progress=False)
    assert plain.step == full.step == 4
    assert _same(_weights(tmp_path / "plain"), _weights(tmp_path / "ones"))


class MissingLabelFiles(Dataset):
    """The synthetic scenes with a third of each task's label files "missing": NaN labels, the dataset's own mask
    and ``labelled_indices``; records what the loader drew."""

    def __init__(self, dataset: Any, drawn: list[tuple[tuple[str, ...], int]]) -> None:
        self.dataset, self.tasks, self.drawn = dataset, tuple(dataset.tasks), drawn

    @staticmethod
    def has_label(index: int, task: str) -> bool:
        return (index + zlib.crc32(task.encode())) % 3 != 0

    def __len__(self) -> int:
        return len(self.dataset)

    def labelled_indices(self, task: str) -> list[int]:
        return [i for i in range(len(self)) if self.has_label(i, task)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.drawn.append((self.tasks, index))
        sample = dict(self.dataset[index])
        sample[LABELLED] = {task: self.has_label(index, task) for task in self.tasks}
        for task, present in sample[LABELLED].items():
            if not present:
                sample[task] = np.full_like(sample[task], np.nan)
        return sample


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_missing_labels_poisoned_with_nan_never_reach_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, schedule: str
) -> None:
    drawn: list[tuple[tuple[str, ...], int]] = []
    build = tsn.data.build_dataset

    def build_with_missing_labels(name: str, split: Any = "val", *args: Any, **kwargs: Any) -> Any:
        dataset = build(name, split, *args, **kwargs)
        return MissingLabelFiles(dataset, drawn) if split == "train" else dataset

    monkeypatch.setattr(tsn.data, "build_dataset", build_with_missing_labels)
    result = train(load_config(TINY, [f"schedule={schedule}"]), tmp_path / "run", progress=False)
    assert result.status == "finished" and result.step == 4  # a NaN in the loss would have stopped the run
    assert all(torch.isfinite(w).all() for w in _weights(tmp_path / "run").values() if w.is_floating_point())
    assert drawn
    if schedule == "all_tasks":  # every image comes, unlabelled tasks included: the loss masks them
        assert any(not MissingLabelFiles.has_label(i, t) for tasks, i in drawn for t in tasks)
    else:  # a task's stream only ever draws images labelled for it
        assert all(len(tasks) == 1 and MissingLabelFiles.has_label(i, tasks[0]) for tasks, i in drawn)


def test_a_partially_labelled_run_resumes_exactly(tmp_path: Path) -> None:
    config = load_config(TINY, ["schedule=epoch", "max_steps=6", "label_fractions.semseg=0.5",
                                "label_fractions.normals=0.5"])
    full = train(config, tmp_path / "full", progress=False)
    paused = train(config, tmp_path / "resumed", stop_at_step=3, progress=False)
    assert paused.status == "interrupted" and paused.step == 3
    resumed = train(None, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.status == full.status == "finished" and resumed.step == full.step == 6
    assert _same(_weights(tmp_path / "full"), _weights(tmp_path / "resumed"))


def test_bad_label_fractions_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(TsnError, match="has 3 samples labelled for depth, fewer than one batch of 4"):
        train(load_config(TINY, ["schedule=epoch", "label_fractions.depth=0.25"]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
    for override, message in {
        "label_fractions.semseg=0": r"config label_fractions.semseg must lie in \(0, 1\], got 0.0",
        "label_fractions.semseg=1.5": r"must lie in \(0, 1\]",
        "label_fractions.edges=0.5": "names 'edges', which is not a task of this run",
        "label_fractions.semseg=half": "config label_fractions.semseg: expected float",
    }.items():
        with pytest.raises(TsnError, match=message) as caught:
            load_config(TINY, [override])
        assert "\n" not in str(caught.value)
    assert math.isclose(load_config(TINY, ["label_fractions.semseg=0.25"]).label_fractions["semseg"], 0.25)
