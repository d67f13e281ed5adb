"""Running the studies: train (or reuse) every planned run, evaluate and measure it, and write the results."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tsn.datasets import get_dataset
from tsn.errors import TsnError
from tsn.studies.reproduce import (
    PlannedRun,
    complete_runs,
    default_jobs,
    prepare_data,
)
from tsn.studies.scaling.measure import Measurer
from tsn.studies.scaling.report import labels_figure, labels_markdown, tasks_figure, tasks_markdown
from tsn.studies.scaling.settings import (
    ARCHITECTURE_LABELS,
    ARCHITECTURES,
    DEFAULT_FRACTIONS,
    STUDY_FORMAT,
    StudySettings,
    dataset_tasks_by_name,
    labels_key,
    multi_key,
    plan_labels_study,
    plan_tasks_study,
)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

def _header(settings: StudySettings, study: str, started: float) -> dict[str, Any]:
    from tsn import __version__

    return {
        "format": STUDY_FORMAT,
        "format_version": 1,
        "study": study,
        "tsn_version": __version__,
        "settings": {**asdict(settings), "budget_overrides": settings.budget()},
        "split": get_dataset(settings.dataset).evaluation.split,
        "started": datetime.fromtimestamp(started, timezone.utc).strftime(TIME_FORMAT),
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
    from tsn.evaluation.tables import table_values

    return table_values(record)


def _compare(values: Mapping[str, float], single: Mapping[str, float], tasks: Sequence[str]) -> dict[str, Any]:
    from tsn.evaluation.tables import compare_with_baseline

    specs = dataset_tasks_by_name(tasks)
    comparison = compare_with_baseline(values, single, specs)
    return {"drops": comparison["drops"], "average_drop": comparison["average_drop"]}



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
    with Measurer(out / "measurements", settings) as measurer:
        for count in settings.counts:
            tasks = list(settings.tasks[:count])
            singles = [f"single_task-{task}" for task in tasks]
            single_values: dict[str, float] = {}
            for key in singles:
                single_values.update(_values(done[key][1]))
            for kind in ARCHITECTURES:
                keys = singles if kind == "single_task" else [multi_key(kind, count)]
                checkpoints = [str(done[key][0]["checkpoint"]) for key in keys]
                values = single_values if kind == "single_task" else _values(done[keys[0]][1])
                inference = measurer.measure(f"{kind}-T{count}", "inference", checkpoints)
                steps = [measurer.measure(key, "train", [ckpt], by_key[key].config)
                         for key, ckpt in zip(keys, checkpoints, strict=True)]
                row = {
                    "count": count, "tasks": tasks, "architecture": kind, "label": ARCHITECTURE_LABELS[kind],
                    "runs": keys,
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
    tasks_figure(record, out / "study_tasks.png")
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
    labels_figure(record, out / "study_labels.png")
    return record
