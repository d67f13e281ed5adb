"""``tsn study``: how a TSN scales with the number of tasks, and with fewer labels, against its baselines.

Two studies on the embedded synthetic scenes (any dataset with a ``tsn_<family>`` recipe works the same way):

* :func:`run_tasks_study` trains the TSN, the shared-encoder multi-head network and one single-task network per
  task on the first ``T`` tasks of a fixed task order, for each ``T`` of :attr:`StudySettings.counts` (2, 4, 8, 12
  by default): nested task lists, so a single-task network is trained once per task and serves every ``T`` (its
  budget does not depend on ``T``). For each ``T`` it reports parameters, training time, all-task inference time,
  peak memory, every task's metric and the average drop against the single-task networks.
* :func:`run_labels_study` trains the TSN on the first ``count`` tasks while only a fraction of the training
  scenes is labelled for some of them (``TrainConfig.label_fractions``), and reports the average drop as that
  fraction falls.

**Budget.** Every run trains :attr:`StudySettings.steps` optimizer steps of :attr:`StudySettings.batch_size` scenes
with the all-tasks schedule (every step trains every task of the network on the same batch), so each task sees the
same number of labelled samples in every architecture, whatever ``T``; the multi-task networks' cost per step grows
with ``T`` (one decoder pass per task), as the cost of the set of single-task networks does.

**Reuse.** The runs are those of ``tsn reproduce`` (:mod:`tsn.studies.reproduce`: the same presets, the same
reuse of finished runs, resume of interrupted ones and refusal of a folder trained with another recipe), kept in
``<out>/runs/<key>``: ``single_task-<task>``, ``multi_head-T<T>``, ``tsn-T<T>`` and, for the labels study,
``tsn-T<T>-<task><fraction>...``. Both studies share them: the labels study's fully labelled TSN and its
single-task baselines are the tasks study's runs when both write to the same ``out``. Evaluations are cached next
to each run, measurements in ``<out>/measurements``; the results (``tasks.json`` / ``labels.json``, a markdown
table, a figure) are written atomically at the end. Run the same command again after an interruption.

**Measurements.** Each measurement runs in a fresh process of one thread (forked from a server that has imported
torch), so that its peak memory is its own: the peak resident set (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``; elsewhere ``ru_maxrss``) minus the resident set before the model is built. It includes
the weights (and for training the gradients and Adam's state) and everything the step allocates. All-task
inference: every task of a batch of images (float32, eager, no gradient; a TSN runs :meth:`predict_tasks`: the
encoder once, the task passes batched; the single-task networks run one after another, all held in memory), best
of a few repeats. Training: one optimizer step on a batch of real training scenes with the run's precision, best
of a few steps; the single-task networks train one at a time, so their peak is the largest network's. Training
time is also reported as the runs took it (wall seconds of each run, several runs side by side).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from tsn.datasets import canonical_dataset_name, dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.studies.reproduce import (
    PRESET_FAMILIES,
    PlannedRun,
    complete_runs,
    default_jobs,
    prepare_data,
)

__all__ = [
    "STUDY_FORMAT",
    "DEFAULT_COUNTS",
    "DEFAULT_FRACTIONS",
    "ARCHITECTURES",
    "StudySettings",
    "default_counts",
    "plan_tasks_study",
    "plan_labels_study",
    "run_tasks_study",
    "run_labels_study",
    "tasks_markdown",
    "labels_markdown",
]

STUDY_FORMAT = "tsn-study"
DEFAULT_COUNTS = (2, 4, 8, 12)
"""The task counts ``T`` of the tasks study (those the dataset has; its full count is added when it has fewer)."""
DEFAULT_FRACTIONS = (1.0, 0.5, 0.25, 0.1)
"""Labelled fractions of the labels study."""
ARCHITECTURES = ("single_task", "multi_head", "tsn")
_LABELS = {"single_task": "Single task", "multi_head": "Multi-head", "tsn": "TSN"}
_PRESETS = {"single_task": "single_{family}.{task}", "multi_head": "multihead_{family}", "tsn": "tsn_{family}"}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_MEASURE_FORMAT = 1
"""Version of the cached measurement records (a change re-measures)."""


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
    steps: int = 80
    """Optimizer steps of every run (the per-task budget: each step trains every task of the network)."""
    batch_size: int = 8
    size: int = 64
    """Scene and network input side, pixels (the demo's 64; the encoder's deepest features are 2 x 2 there)."""
    train_images: int = 2000
    """Training scenes (the dataset's default split length)."""
    test_images: int = 100
    """Scenes of the validation split (one loss validation at the end) and of the scored test split."""
    seed: int = 0
    overrides: tuple[str, ...] = ()
    """``--set KEY=VALUE`` applied to every run after the study's budget."""
    measure_batch: int = 16
    """Images per batch of the all-task inference measurement (a training step uses :attr:`batch_size`)."""
    measure_repeats: int = 5
    """Timed repeats of each measurement (the best one is reported)."""

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
        require_int("--seed", self.seed, minimum=0)
        require_int("--size", self.size, minimum=64)
        if self.train_images < self.batch_size:
            raise TsnError(f"--train-images ({self.train_images}) must hold at least one batch of --batch-size "
                           f"({self.batch_size})")
        object.__setattr__(self, "overrides", tuple(self.overrides))

    def budget(self) -> list[str]:
        """The ``--set`` overrides every run of the studies trains with (before :attr:`overrides`)."""
        per_epoch = self.train_images // self.batch_size
        return [
            f"max_steps={self.steps}", f"epochs={math.ceil(self.steps / per_epoch)}", f"batch_size={self.batch_size}",
            f"data.size={self.size}", f"data.options.size={self.size}", f"seed={self.seed}",
            f"data.train_options.length={self.train_images}", f"data.val_options.length={self.test_images}",
            # one loss validation at the end (the checkpoint); the metrics are the test split's evaluation
            "validation.every=0", "validation.metrics=false", "tensorboard=false",
            f"checkpoint_every={max(25, self.steps // 4)}",  # an interrupted run loses at most a quarter
        ]


def default_counts(available: int) -> tuple[int, ...]:
    """:data:`DEFAULT_COUNTS` up to ``available`` tasks, ending with ``available`` when it has fewer than the largest:
    (2, 4, 8, 12) for 12 or 13 tasks, (2, 4, 6) for 6."""
    counts = tuple(count for count in DEFAULT_COUNTS if count <= available)
    return counts if available >= DEFAULT_COUNTS[-1] or available in counts else (*counts, available)


# ------------------------------------------------------------------------------------------------ planning


def _run(settings: StudySettings, kind: str, tasks: Sequence[str], key: str, extra: Sequence[str] = ()) -> PlannedRun:
    """One run: the family's preset of ``kind`` on the study's dataset and ``tasks`` (their channels from the
    dataset), with the study's budget."""
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
    config = load_config(preset, [*own, *settings.budget(), *extra, *settings.overrides])
    return PlannedRun(key, kind, config)


def _single_runs(settings: StudySettings, count: int) -> list[PlannedRun]:
    return [_run(settings, "single_task", [task], f"single_task-{task}") for task in settings.tasks[:count]]


def _multi_key(kind: str, count: int) -> str:
    return f"{kind}-T{count}"


def plan_tasks_study(settings: StudySettings) -> list[PlannedRun]:
    """The runs of the tasks study: one single-task network per task of the largest ``T``, then the multi-head
    network and the TSN of each ``T`` (largest last: :func:`tsn.studies.reproduce.complete_runs` starts it first)."""
    runs = _single_runs(settings, settings.counts[-1])
    for count in settings.counts:
        tasks = settings.tasks[:count]
        runs += [_run(settings, kind, tasks, _multi_key(kind, count)) for kind in ("multi_head", "tsn")]
    return runs


def _fraction_text(fraction: float) -> str:
    return f"{fraction:g}"


def labels_key(count: int, fractions: Mapping[str, float]) -> str:
    """Run folder of the labels study's TSN: ``tsn-T<count>`` when fully labelled, else with the fractions."""
    partial = {task: f for task, f in fractions.items() if f < 1}
    suffix = "".join(f"-{task}{_fraction_text(f)}" for task, f in partial.items())
    return _multi_key("tsn", count) + suffix


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
    """The runs of the labels study: the single-task networks of the first ``count`` tasks (fully labelled) and
    one TSN per fraction, ``partial``'s tasks labelled on that fraction of the training scenes."""
    _check_labels(settings, count, partial, fractions)
    runs = _single_runs(settings, count)
    tasks = settings.tasks[:count]
    for fraction in sorted(set(fractions), reverse=True):
        thinned = {task: float(fraction) for task in partial}
        extra = [] if fraction >= 1 else ["label_fractions={" + ", ".join(f"{t}: {f}" for t, f in thinned.items())
                                          + "}"]
        runs.append(_run(settings, "tsn", tasks, labels_key(count, thinned), extra))
    return runs


# -------------------------------------------------------------------------------------------- measurements


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class _PeakMemory:
    """Peak resident memory of what runs after construction, in MB (see the module doc)."""

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := the current resident set
            self.source = "VmHWM"
        except OSError:
            self.source = "ru_maxrss"
        current = _status_kib("VmRSS")
        self.base_kib = current if current is not None else self._peak_kib()

    def _peak_kib(self) -> int:
        import resource
        import sys

        hwm = _status_kib("VmHWM") if self.source == "VmHWM" else None
        if hwm is not None:
            return hwm
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux

    def peak_mb(self) -> float:
        return round(max(0, self._peak_kib() - self.base_kib) / 1024, 1)


def _best_seconds(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm-up: first-call allocations and kernel choices
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def _training_batch(config: Any, batch: int) -> dict[str, Any]:
    """``batch`` real training scenes of ``config``'s data, transformed and collated as the trainer does."""
    from tsn.data import build_dataset, build_transforms, collate

    d = config.data
    specs = list(config.model.task_specs)
    # generated scenes: render just the batch (scene i does not depend on the split's length) instead of loading
    # the cached split
    few = {"length": batch, "cache": False} if get_dataset(d.dataset).generated else {}
    data = build_dataset(d.dataset, d.train_split, tasks=[s.name for s in specs], root=d.root,
                         **{**d.options, **d.train_options, **few})
    transform = build_transforms("eval", d.input_size, tasks=specs)
    import numpy as np

    length = len(cast(Sized, data))
    samples = [transform(data[index % length], np.random.default_rng(index)) for index in range(batch)]
    return collate(samples)


def _measure(job: Mapping[str, Any]) -> dict[str, Any]:
    """One measurement (the body of a fresh worker process): ``inference`` of every task by the models of
    ``checkpoints``, or one ``train`` step of ``config``'s network from its checkpoint."""
    import torch

    from tsn.models.checkpoint import load_model

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    if job["phase"] == "inference":
        image = torch.randn(job["batch"], 3, job["size"], job["size"])
        memory = _PeakMemory()
        models = [load_model(path) for path in job["checkpoints"]]

        def infer() -> None:
            with torch.no_grad():
                for model in models:
                    model(image)

        seconds = _best_seconds(infer, job["repeats"])
        return {"seconds": round(seconds, 5), "peak_mb": memory.peak_mb(), "memory_source": memory.source}
    from tsn.training.losses import loss_weights, multitask_loss
    from tsn.training.trainer import build_optimizer
    from tsn.training.validation import autocast

    config = job["config"]
    batch = _training_batch(config, job["batch"])
    memory = _PeakMemory()
    model = load_model(job["checkpoints"][0]).train()
    optimizer = build_optimizer(model, config)
    specs = model.task_specs
    weights = loss_weights(specs, config.loss_weights)
    names = list(specs)
    labels = {name: batch[name] for name in names}

    def step() -> None:
        with autocast(torch.device("cpu"), config.amp):
            outputs = model(batch["image"], names)
        loss, _ = multitask_loss(outputs, labels, specs, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = _best_seconds(step, max(1, job["repeats"] // 2))
    return {"seconds": round(seconds, 5), "peak_mb": memory.peak_mb(), "memory_source": memory.source}


def _stamp(paths: Sequence[str]) -> list[list[Any]]:
    return [[str(path), os.stat(path).st_mtime_ns] for path in paths]


class _Measurer:
    """Measurements cached in ``folder`` (redone when a checkpoint changed), each in a fresh process."""

    def __init__(self, folder: Path, settings: StudySettings) -> None:
        self.folder, self.settings = folder, settings
        self._pool: Any = None

    def __enter__(self) -> _Measurer:
        return self

    def __exit__(self, *_: Any) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()

    def _submit(self, job: dict[str, Any]) -> dict[str, Any]:
        import multiprocessing

        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:  # every measurement forks from a server that has imported torch once
                context.set_forkserver_preload(["torch", "tsn.models", "tsn.training", "tsn.data"])
            self._pool = context.Pool(1, maxtasksperchild=1)  # a fresh process for every measurement
        result: dict[str, Any] = self._pool.apply(_measure, (job,))
        return result

    def measure(self, name: str, phase: str, checkpoints: Sequence[str], config: Any = None) -> dict[str, Any]:
        from tsn.utils.io import atomic_write_json

        s = self.settings
        path = self.folder / f"{phase}-{name}.json"
        stamp = _stamp(checkpoints)
        batch = s.measure_batch if phase == "inference" else s.batch_size  # training: the runs' own batch
        what = {"format": _MEASURE_FORMAT, "checkpoints": stamp, "batch": batch, "size": s.size}
        if path.is_file():
            try:
                cached = json.loads(path.read_text())
                if {key: cached.get(key) for key in what} == json.loads(json.dumps(what)):
                    return dict(cached["result"])
            except (OSError, ValueError, AttributeError):
                pass  # unreadable: measure again
        job = {"phase": phase, "checkpoints": list(checkpoints), "config": config, "batch": batch,
               "size": s.size, "repeats": s.measure_repeats, "threads": 1}
        result = self._submit(job)
        atomic_write_json(path, {**what, "result": result})
        return result


# ------------------------------------------------------------------------------------------------- running


def _header(settings: StudySettings, study: str, started: float) -> dict[str, Any]:
    from tsn import __version__

    return {
        "format": STUDY_FORMAT,
        "format_version": 1,
        "study": study,
        "tsn_version": __version__,
        "settings": {**asdict(settings), "budget_overrides": settings.budget()},
        "split": get_dataset(settings.dataset).evaluation.split,
        "started": datetime.fromtimestamp(started, timezone.utc).strftime(_TIME_FORMAT),
    }


def _train_all(
    runs: Sequence[PlannedRun], out: Path, settings: StudySettings, jobs: int | None, progress: bool,
    log: Callable[[str], None], tag: str,
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    if jobs is not None and jobs < 1:
        raise TsnError(f"--jobs must be at least 1, got {jobs}")
    split = get_dataset(settings.dataset).evaluation.split
    prepare_data(runs[0].config, split)  # rendered once, before the parallel runs
    jobs = jobs or default_jobs(runs[0].config)
    # workers=0: the study's small evaluations score in the job's own process
    return complete_runs(runs, out / "runs", split, jobs, 0, progress and jobs == 1, log, tag)


def _values(record: Mapping[str, Any]) -> dict[str, float]:
    from tsn.evaluation.evaluate import table_values

    return table_values(record)


def _compare(values: Mapping[str, float], single: Mapping[str, float], tasks: Sequence[str]) -> dict[str, Any]:
    from tsn.evaluation.evaluate import compare_with_baseline

    specs = dataset_tasks_by_name(tasks)
    comparison = compare_with_baseline(values, single, specs)
    return {"drops": comparison["drops"], "average_drop": comparison["average_drop"]}


def dataset_tasks_by_name(tasks: Sequence[str]) -> list[Any]:
    """The task specs of ``tasks``, in that order."""
    from tsn.tasks import get_task

    return [get_task(task) for task in tasks]


def run_tasks_study(
    settings: StudySettings,
    out_dir: str | os.PathLike[str],
    *,
    jobs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or reuse) every run of the tasks study into ``out_dir/runs``, evaluate and measure them, and write
    ``tasks.json``, ``tasks.md`` and ``study_tasks.png`` into ``out_dir``; returns the results record."""
    from tsn.utils.io import atomic_write_json, atomic_write_text

    started, clock = time.time(), time.perf_counter()
    runs = plan_tasks_study(settings)  # every config checked before anything is trained
    out = Path(out_dir).expanduser()
    done = _train_all(runs, out, settings, jobs, progress, log, "study tasks")
    trained = time.perf_counter() - clock
    by_key = {run.key: run for run in runs}
    rows = []
    with _Measurer(out / "measurements", settings) as measurer:
        for count in settings.counts:
            tasks = list(settings.tasks[:count])
            singles = [f"single_task-{task}" for task in tasks]
            single_values: dict[str, float] = {}
            for key in singles:
                single_values.update(_values(done[key][1]))
            for kind in ARCHITECTURES:
                keys = singles if kind == "single_task" else [_multi_key(kind, count)]
                checkpoints = [str(done[key][0]["checkpoint"]) for key in keys]
                values = single_values if kind == "single_task" else _values(done[keys[0]][1])
                inference = measurer.measure(f"{kind}-T{count}", "inference", checkpoints)
                steps = [measurer.measure(key, "train", [ckpt], by_key[key].config)
                         for key, ckpt in zip(keys, checkpoints, strict=True)]
                row = {
                    "count": count, "tasks": tasks, "architecture": kind, "label": _LABELS[kind], "runs": keys,
                    "parameters": sum(int(done[key][1]["checkpoint"]["parameters"]) for key in keys),
                    "train_seconds": round(sum(float(done[key][0]["seconds"]) for key in keys), 1),
                    "train_step_seconds": round(sum(step["seconds"] for step in steps), 4),
                    "train_peak_mb": max(step["peak_mb"] for step in steps),
                    "inference_seconds": inference["seconds"],
                    "inference_peak_mb": inference["peak_mb"],
                    "memory_source": inference["memory_source"],
                    "values": values,
                    "drops": {task: 0.0 for task in tasks}, "average_drop": 0.0,
                }
                if kind != "single_task":
                    row.update(_compare(values, single_values, tasks))
                rows.append(row)
                log(f"[study tasks] T={count} {kind}: {row['parameters']:,} parameters, average drop "
                    f"{row['average_drop']:+.2f} %")
    record = {
        **_header(settings, "tasks", started),
        "tasks": list(settings.tasks[: settings.counts[-1]]),
        "counts": list(settings.counts),
        "rows": rows,
        "runs": _runs_record(done),
        "time": {"seconds": round(time.perf_counter() - clock, 1), "training_seconds": round(trained, 1)},
    }
    atomic_write_json(out / "tasks.json", record)
    atomic_write_text(out / "tasks.md", tasks_markdown(record))
    _tasks_figure(record, out / "study_tasks.png")
    return record


def _runs_record(done: Mapping[str, tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    return {
        key: {"action": summary["action"], "run_dir": str(summary["run_dir"]), "steps": summary["step"],
              "train_seconds": summary["seconds"], "evaluation_seconds": record["time"]["seconds"]}
        for key, (summary, record) in done.items()
    }


def run_labels_study(
    settings: StudySettings,
    out_dir: str | os.PathLike[str],
    *,
    count: int = 4,
    partial: Sequence[str] = (),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    jobs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or reuse) the labels study's runs into ``out_dir/runs`` and write ``labels.json``, ``labels.md`` and
    ``study_labels.png``: the TSN on the first ``count`` tasks with ``partial``'s tasks (default: the first two)
    labelled on each of ``fractions`` of the training scenes, against fully labelled single-task networks."""
    from tsn.utils.io import atomic_write_json, atomic_write_text

    started, clock = time.time(), time.perf_counter()
    partial = tuple(partial) or tuple(settings.tasks[:2])
    runs = plan_labels_study(settings, count, partial, fractions)
    out = Path(out_dir).expanduser()
    done = _train_all(runs, out, settings, jobs, progress, log, "study labels")
    tasks = list(settings.tasks[:count])
    single_values: dict[str, float] = {}
    for task in tasks:
        single_values.update(_values(done[f"single_task-{task}"][1]))
    rows = []
    for fraction in sorted(set(fractions), reverse=True):
        key = labels_key(count, {task: float(fraction) for task in partial})
        values = _values(done[key][1])
        comparison = _compare(values, single_values, tasks)
        drops = comparison["drops"]
        rows.append({
            "fraction": float(fraction), "run": key, "values": values, **comparison,
            "partial_drop": sum(drops[t] for t in partial) / len(partial),
            "other_drop": (sum(drops[t] for t in tasks if t not in partial) / (len(tasks) - len(partial))
                           if len(tasks) > len(partial) else None),
        })
        log(f"[study labels] fraction {fraction:g}: average drop {comparison['average_drop']:+.2f} %")
    record = {
        **_header(settings, "labels", started),
        "tasks": tasks, "partial": list(partial), "single_task": single_values,
        "rows": rows,
        "runs": _runs_record(done),
        "time": {"seconds": round(time.perf_counter() - clock, 1)},
    }
    atomic_write_json(out / "labels.json", record)
    atomic_write_text(out / "labels.md", labels_markdown(record))
    _labels_figure(record, out / "study_labels.png")
    return record


# ---------------------------------------------------------------------------------------------- reporting


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _header_cells(tasks: Sequence[str]) -> list[str]:
    return [f"{spec.name} {spec.metric} {'↑' if spec.higher_is_better else '↓'}"
            for spec in dataset_tasks_by_name(tasks)]


def tasks_markdown(record: Mapping[str, Any]) -> str:
    """The tasks study as markdown: cost and average drop per ``T`` and architecture, then every metric."""
    s = record["settings"]
    lines = [
        f"## Task scaling on {s['dataset']} ({record['split']} split, {s['test_images']} scenes; {s['steps']} steps "
        f"of {s['batch_size']} scenes at {s['size']} px per run)", "",
        "| T | model | parameters | train s (runs) | train step ms | all-task inference ms | train peak MB "
        "| inference peak MB | avg. drop % ↓ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        drop = "-" if row["architecture"] == "single_task" else f"{row['average_drop']:+.2f}"
        lines.append(
            f"| {row['count']} | {row['label']} | {row['parameters']:,} | {row['train_seconds']:.0f} "
            f"| {1000 * row['train_step_seconds']:.0f} | {1000 * row['inference_seconds']:.0f} "
            f"| {row['train_peak_mb']:.0f} | {row['inference_peak_mb']:.0f} | {drop} |"
        )
    tasks = record["tasks"]
    lines += ["", "| T | model | " + " | ".join(_header_cells(tasks)) + " |",
              "|---|---|" + "---|" * len(tasks)]
    for row in record["rows"]:
        cells = [_cell(row["values"].get(task)) for task in tasks]
        lines.append(f"| {row['count']} | {row['label']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Values: table units (mIoU and F-measures x100). Avg. drop %: mean over the T tasks of "
        f"100 * s * (single - multi) / single, positive = worse than the single-task networks. "
        f"Single task: the sum of T networks (parameters, training, inference one after another) and the "
        f"largest training step. Times and memory: one thread; inference: batch {s['measure_batch']}, float32, "
        f"best of {s['measure_repeats']}; training step: batch {s['batch_size']}, the runs' precision; peak memory "
        f"= peak resident set ({record['rows'][0]['memory_source']}) above the process before the model was "
        f"built. Train s: the runs' wall time, several runs side by side.",
        f"Wall time {record['time']['seconds'] / 60:.1f} min ({_actions(record)}).",
        "",
    ]
    return "\n".join(lines)


def _actions(record: Mapping[str, Any]) -> str:
    counts: dict[str, int] = {}
    for run in record["runs"].values():
        counts[run["action"]] = counts.get(run["action"], 0) + 1
    return ", ".join(f"{n} runs {action}" for action, n in counts.items())


def labels_markdown(record: Mapping[str, Any]) -> str:
    """The labels study as markdown: per labelled fraction, every metric and the drops."""
    s, tasks, partial = record["settings"], record["tasks"], record["partial"]
    lines = [
        f"## Partially labelled TSN on {s['dataset']}: {', '.join(partial)} labelled on a fraction of the "
        f"{s['train_images']} training scenes ({len(tasks)} tasks, {s['steps']} steps of {s['batch_size']})", "",
        "| labelled fraction | " + " | ".join(_header_cells(tasks))
        + " | avg. drop % ↓ | drop, thinned tasks | drop, other tasks |",
        "|---|" + "---|" * (len(tasks) + 3),
        "| single task (all labelled) | " + " | ".join(_cell(record["single_task"][t]) for t in tasks)
        + " | - | - | - |",
    ]
    for row in record["rows"]:
        cells = [_cell(row["values"][t]) for t in tasks]
        lines.append(f"| {row['fraction']:g} | " + " | ".join(cells) + f" | {row['average_drop']:+.2f} "
                     f"| {row['partial_drop']:+.2f} | " + (f"{row['other_drop']:+.2f}" if row["other_drop"] is not None
                                                            else "-") + " |")
    lines += ["", "Drops against the fully labelled single-task networks, positive = worse. "
              f"Wall time {record['time']['seconds'] / 60:.1f} min ({_actions(record)}).", ""]
    return "\n".join(lines)


_COLORS = {"single_task": "tab:gray", "multi_head": "tab:blue", "tsn": "tab:red"}


def _save(figure: Any, path: Path) -> None:
    from tsn.inference.predict import save_figure

    save_figure(figure, path, dpi=110)


def _tasks_figure(record: Mapping[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # slow to import; only the figures need it

    figure = Figure(figsize=(13, 3.8), layout="constrained")
    drop, params, speed = figure.subplots(1, 3)
    counts = record["counts"]
    for kind in ARCHITECTURES:
        rows = [row for row in record["rows"] if row["architecture"] == kind]
        style = {"color": _COLORS[kind], "marker": "o", "label": _LABELS[kind]}
        drop.plot(counts, [row["average_drop"] for row in rows], **style)
        params.plot(counts, [row["parameters"] / 1e6 for row in rows], **style)
        speed.plot(counts, [1000 * row["inference_seconds"] for row in rows], **style)
    for axis, title in ((drop, "average drop % vs single task (lower is better)"), (params, "parameters (M)"),
                        (speed, f"all-task inference, ms per batch of {record['settings']['measure_batch']}")):
        axis.set_xlabel("tasks T")
        axis.set_xticks(counts)
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    drop.legend(fontsize=9)
    _save(figure, path)


def _labels_figure(record: Mapping[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axis = figure.subplots()
    rows = sorted(record["rows"], key=lambda row: row["fraction"])
    fractions = [row["fraction"] for row in rows]
    axis.plot(fractions, [row["average_drop"] for row in rows], marker="o", color="black",
              label=f"average drop, all {len(record['tasks'])} tasks")
    for task in record["partial"]:
        axis.plot(fractions, [row["drops"][task] for row in rows], marker=".", linestyle="--", label=f"{task} drop")
    if rows and rows[0]["other_drop"] is not None:
        axis.plot(fractions, [row["other_drop"] for row in rows], marker=".", linestyle=":",
                  label="mean drop, fully labelled tasks")
    axis.set_xscale("log")
    axis.set_xticks(fractions, [f"{f:g}" for f in fractions])
    axis.set_xlabel(f"labelled fraction of {', '.join(record['partial'])}")
    axis.set_ylabel("drop % vs single task (lower is better)")
    axis.axhline(0, color="gray", linewidth=0.8)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    _save(figure, path)

