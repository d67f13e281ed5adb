"""Study settings and plans: the task order, the per-task budget, the data, and the runs each study trains."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tsn.dataset_catalog import canonical_dataset_name, dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.studies.reproduce import (
    PRESET_FAMILIES,
    PlannedRun,
)
from tsn.studies.seeds import check_seeds, seed_override

STUDY_FORMAT = "tsn-study"
DEFAULT_COUNTS = (2, 4, 8, 12)
"""The task counts ``T`` of the tasks study (those the dataset has; its full count is added when it has fewer)."""
DEFAULT_FRACTIONS = (1.0, 0.5, 0.25, 0.1)
"""Labelled fractions of the labels study."""
ARCHITECTURES = ("single_task", "multi_head", "tsn")
ARCHITECTURE_LABELS = {"single_task": "Single task", "multi_head": "Multi-head", "tsn": "TSN"}
_PRESETS = {"single_task": "single_{family}.{task}", "multi_head": "multihead_{family}", "tsn": "tsn_{family}"}


@dataclass(frozen=True)
class StudySettings:
    """What both studies train: the task order, the per-task budget and the data. Checked when built."""

    dataset: str = "synthetic_full"
    """The scenes: ``synthetic_full`` (all 13 synthetic tasks) by default."""
    family: str = ""
    """The ``<backbone>_<dataset>`` recipe family every run starts from (``tsn_<family>``, ``multihead_<family>``,
    ``single_<family>.<task>``), its dataset replaced by :attr:`dataset`; empty: the dataset's own family, else
    ``r10t_synthetic`` (the demo's recipe) for a generated dataset."""
    tasks: tuple[str, ...] = ()
    """The fixed task order; the first ``T`` tasks are the study's ``T``-task set (empty: the dataset's tasks)."""
    counts: tuple[int, ...] = ()
    """Task counts ``T`` of the tasks study (empty: :func:`default_counts`)."""
    steps: int = 300
    """Optimizer steps of every run (the per-task budget: each step trains every task of the network)."""
    batch_size: int = 8
    size: int = 64
    """Scene and network input side, pixels (the demo's 64; the encoder's deepest features are 2 x 2 there)."""
    train_images: int = 480
    """Training scenes: with the default budget, 5 epochs of 60 steps, so that every run is validated at every
    fifth of its training (the curves behind the budget)."""
    test_images: int = 100
    """Scenes of the validation split (a validation every epoch) and of the scored test split."""
    seeds: int = 3
    """Training seeds ``0 .. seeds-1``: every network is trained once per seed (:mod:`tsn.studies.seeds`)."""
    overrides: tuple[str, ...] = ()
    """``--set KEY=VALUE`` applied to every run after the study's budget."""
    measure_batch: int = 16
    """Images per batch of the all-task inference measurement (a training step uses :attr:`batch_size`)."""
    measure_repeats: int = 7
    """Timed repeats of each measurement (their median and range are reported)."""

    def __post_init__(self) -> None:
        from tsn.utils.checks import require_int

        dataset = canonical_dataset_name(self.dataset)
        spec = get_dataset(dataset)
        family = self.family or spec.preset_family or ("r10t_synthetic" if spec.generated else "")
        if family not in PRESET_FAMILIES.values():
            raise TsnError(f"no recipe family {family!r} for the study on {dataset}; choose one of: "
                           f"{', '.join(sorted(set(PRESET_FAMILIES.values())))}")
        object.__setattr__(self, "dataset", dataset)
        object.__setattr__(self, "family", family)
        known = [spec.name for spec in dataset_tasks(dataset)]
        tasks = tuple(self.tasks) or tuple(known)
        unknown = [task for task in tasks if task not in known]
        if unknown:
            raise TsnError(f"--tasks: {', '.join(unknown)} not a task of {dataset}; its tasks: {', '.join(known)}")
        if len(set(tasks)) != len(tasks):
            raise TsnError(f"--tasks names a task twice: {','.join(tasks)}")
        object.__setattr__(self, "tasks", tasks)
        counts = tuple(self.counts) or default_counts(len(tasks))
        for count in counts:
            require_int("--counts", count, minimum=1)
        if list(counts) != sorted(set(counts)) or counts[-1] > len(tasks):
            example = ",".join(map(str, default_counts(len(tasks))))
            raise TsnError(f"--counts must rise and stay within the {len(tasks)} tasks of the study, got "
                           f"{','.join(map(str, counts))}; e.g. --counts {example}")
        object.__setattr__(self, "counts", counts)
        for name in ("steps", "batch_size", "train_images", "test_images", "measure_batch", "measure_repeats"):
            flag = "--budget" if name == "steps" else f"--{name.replace('_', '-')}"  # the command's option
            require_int(flag, getattr(self, name), minimum=1)
        check_seeds(self.seeds, self.overrides)
        require_int("--size", self.size, minimum=64)
        if self.train_images < self.batch_size:
            raise TsnError(f"--train-images ({self.train_images}) must hold at least one batch of --batch-size "
                           f"({self.batch_size})")
        object.__setattr__(self, "overrides", tuple(self.overrides))

    def budget(self) -> list[str]:
        """The ``--set`` overrides every run of the studies trains with (before :attr:`overrides`).

        Every run validates after every epoch (``train_images / batch_size`` steps) and keeps the checkpoint of
        lowest validation loss, which is then scored on the test split; the single-task runs also compute their
        metric at each validation: the curves behind the budget (:func:`tsn.studies.seeds.convergence`)."""
        per_epoch = self.train_images // self.batch_size
        return [
            f"max_steps={self.steps}", f"epochs={math.ceil(self.steps / per_epoch)}", f"batch_size={self.batch_size}",
            f"data.size={self.size}", f"data.options.size={self.size}",
            f"data.train_options.length={self.train_images}", f"data.val_options.length={self.test_images}",
            "validation.every=1", "validation.metrics=false", "tensorboard=false",
            f"checkpoint_every={max(25, self.steps // 4)}",  # an interrupted run loses at most a quarter
        ]


def default_counts(available: int) -> tuple[int, ...]:
    """:data:`DEFAULT_COUNTS` up to ``available`` tasks, ending with ``available`` when it has fewer than the largest:
    (2, 4, 8, 12) for 12 or 13 tasks, (2, 4, 6) for 6."""
    counts = tuple(count for count in DEFAULT_COUNTS if count <= available)
    return counts if available >= DEFAULT_COUNTS[-1] or available in counts else (*counts, available)



def dataset_tasks_by_name(tasks: Sequence[str]) -> list[Any]:
    """The task specs of ``tasks``, in that order."""
    from tsn.tasks import get_task

    return [get_task(task) for task in tasks]




def _run(settings: StudySettings, kind: str, tasks: Sequence[str], key: str, seed: int,
         extra: Sequence[str] = ()) -> PlannedRun:
    """One run of seed ``seed``: the family's preset of ``kind`` on the study's dataset and ``tasks`` (their
    channels from the dataset), with the study's budget; a single-task run also scores its metric at every
    validation (its curve)."""
    from tsn.models import list_models
    from tsn.training import load_config

    family = settings.family
    # a single-task recipe of the family (any: the task is set below), so that tasks outside the family work too
    first = list_models(f"single_{family}.*")[0].partition(".")[2]
    preset = _PRESETS[kind].format(family=family, task=first)
    channels = {spec.name: spec.channels for spec in dataset_tasks(settings.dataset, list(tasks))}
    own = [
        f"name=study:{key}", f"data.dataset={settings.dataset}", f"model.tasks=[{', '.join(tasks)}]",
        "model.task_channels={" + ", ".join(f"{task}: {n}" for task, n in channels.items()) + "}",
    ]
    curve = ["validation.metrics=true"] if kind == "single_task" else []
    config = load_config(preset, [*own, *settings.budget(), *curve, *extra, *settings.overrides,
                                  seed_override(seed)])
    return PlannedRun(key, kind, config, seed)


def _single_runs(settings: StudySettings, count: int, seed: int) -> list[PlannedRun]:
    return [_run(settings, "single_task", [task], f"single_task-{task}", seed) for task in settings.tasks[:count]]


def multi_key(kind: str, count: int) -> str:
    return f"{kind}-T{count}"


def plan_tasks_study(settings: StudySettings) -> list[PlannedRun]:
    """The runs of the tasks study, seed by seed: one single-task network per task of the largest ``T``, then the
    multi-head network and the TSN of each ``T`` (largest last: :func:`tsn.studies.reproduce.complete_runs` starts
    it first)."""
    runs = []
    for seed in range(settings.seeds):
        runs += _single_runs(settings, settings.counts[-1], seed)
        for count in settings.counts:
            tasks = settings.tasks[:count]
            runs += [_run(settings, kind, tasks, multi_key(kind, count), seed) for kind in ("multi_head", "tsn")]
    return runs


def _fraction_text(fraction: float) -> str:
    return f"{fraction:g}"


def labels_key(count: int, fractions: Mapping[str, float]) -> str:
    """Run folder of the labels study's TSN: ``tsn-T<count>`` when fully labelled, else with the fractions."""
    partial = {task: f for task, f in fractions.items() if f < 1}
    suffix = "".join(f"-{task}{_fraction_text(f)}" for task, f in partial.items())
    return multi_key("tsn", count) + suffix


def _check_labels(settings: StudySettings, count: int, partial: Sequence[str], fractions: Sequence[float]) -> None:
    from tsn.utils.checks import require_fraction, require_int

    require_int("--count", count, minimum=2)
    if count > len(settings.tasks):
        raise TsnError(f"--count {count} is more than the study's {len(settings.tasks)} tasks")
    tasks = settings.tasks[:count]
    if not partial:
        raise TsnError("--partial must name at least one task whose labels are thinned")
    outside = [task for task in partial if task not in tasks]
    if outside:
        raise TsnError(f"--partial: {', '.join(outside)} not among the study's first {count} tasks "
                       f"({', '.join(tasks)})")
    if not fractions:
        raise TsnError("--fractions must give at least one labelled fraction, e.g. 1,0.5,0.25,0.1")
    for fraction in fractions:
        require_fraction("--fractions", fraction, include_zero=False, include_one=True)


def plan_labels_study(
    settings: StudySettings, count: int, partial: Sequence[str], fractions: Sequence[float]
) -> list[PlannedRun]:
    """The runs of the labels study, seed by seed: the single-task networks of the first ``count`` tasks (fully
    labelled) and one TSN per fraction, ``partial``'s tasks labelled on that fraction of the training scenes (the
    labelled subset drawn from the run's seed)."""
    _check_labels(settings, count, partial, fractions)
    tasks = settings.tasks[:count]
    runs = []
    for seed in range(settings.seeds):
        runs += _single_runs(settings, count, seed)
        for fraction in sorted(set(fractions), reverse=True):
            thinned = {task: float(fraction) for task in partial}
            extra = [] if fraction >= 1 else [
                "label_fractions={" + ", ".join(f"{t}: {f}" for t, f in thinned.items()) + "}"]
            runs.append(_run(settings, "tsn", tasks, labels_key(count, thinned), seed, extra))
    return runs
