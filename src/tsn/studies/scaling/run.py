"""Running the studies: train (or reuse) every planned run, evaluate and measure it, and write the results."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tsn.dataset_catalog import get_dataset
from tsn.errors import TsnError
from tsn.studies.reproduce import (
    PlannedRun,
    complete_runs,
    default_jobs,
    prepare_data,
)
from tsn.studies.reproduce_report import protocol_of, protocol_text
from tsn.studies.scaling.measure import Measurer
from tsn.studies.scaling.report import curves_figure, labels_figure, labels_markdown, tasks_figure, tasks_markdown
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
from tsn.studies.seeds import seed_folder

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



def _folder(seed: int, key: str) -> str:
    return f"{seed_folder(seed)}/{key}"


def _timing(measurements: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several networks' timings one after another: the sum of their medians and of their range ends."""
    return {"seconds": round(sum(m["seconds"] for m in measurements), 5),
            "min": round(sum(m.get("min", m["seconds"]) for m in measurements), 5),
            "max": round(sum(m.get("max", m["seconds"]) for m in measurements), 5),
            "repeats": min(m.get("repeats", 1) for m in measurements)}


def _single_values(done: Mapping[str, Any], seed: int, tasks: Sequence[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for task in tasks:
        values.update(_values(done[_folder(seed, f"single_task-{task}")][1]))
    return values


def _curves(out: Path, settings: StudySettings, tasks: Sequence[str]) -> dict[str, Any]:
    from tsn.studies.reproduce_report import single_task_convergence

    return single_task_convergence({
        task: [out / "runs" / _folder(seed, f"single_task-{task}") for seed in range(settings.seeds)]
        for task in tasks})


def run_tasks_study(
    settings: StudySettings,
    out_dir: str | os.PathLike[str],
    *,
    jobs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or reuse) every run of the tasks study, for every seed, into ``out_dir/runs/seed<k>``, evaluate them,
    measure the seed-0 networks, and write ``tasks.json``, ``tasks.md``, ``study_tasks.png`` and
    ``study_tasks_curves.png`` into ``out_dir``; returns the results record (every metric and drop as mean, sd and
    95 % interval over the seeds, paired comparisons per ``T``, the single-task validation curves)."""
    from tsn.studies.reproduce_report import paired_comparisons
    from tsn.studies.seeds import summarize_rows
    from tsn.studies.statistics import summarize
    from tsn.utils.io import atomic_write_json, atomic_write_text

    started, clock = time.time(), time.perf_counter()
    runs = plan_tasks_study(settings)  # every config checked before anything is trained
    out = Path(out_dir).expanduser()
    done = _train_all(runs, out, settings, jobs, progress, log, "study tasks")
    trained = time.perf_counter() - clock
    configs = {run.folder: run.config for run in runs}
    seeds = range(settings.seeds)
    rows, comparisons = [], {}
    with Measurer(out / "measurements", settings) as measurer:
        for count in settings.counts:
            tasks = list(settings.tasks[:count])
            singles = [f"single_task-{task}" for task in tasks]
            keys = {kind: singles if kind == "single_task" else [multi_key(kind, count)] for kind in ARCHITECTURES}
            per_seed: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ARCHITECTURES}
            for seed in seeds:
                single_values = _single_values(done, seed, tasks)
                for kind in ARCHITECTURES:
                    if kind == "single_task":
                        row: dict[str, Any] = {"values": single_values}
                    else:
                        values = _values(done[_folder(seed, keys[kind][0])][1])
                        row = {"values": values, **_compare(values, single_values, tasks)}
                    row["train_seconds"] = sum(float(done[_folder(seed, key)][0]["seconds"]) for key in keys[kind])
                    per_seed[kind].append(row)
            for kind in ARCHITECTURES:
                # timings and memory: the seed-0 networks, each measurement repeated (median and range)
                checkpoints = [str(done[_folder(0, key)][0]["checkpoint"]) for key in keys[kind]]
                inference = measurer.measure(f"{kind}-T{count}", "inference", checkpoints)
                steps = [measurer.measure(key, "train", [ckpt], configs[_folder(0, key)])
                         for key, ckpt in zip(keys[kind], checkpoints, strict=True)]
                row = {
                    "count": count, "tasks": tasks, "architecture": kind, "label": ARCHITECTURE_LABELS[kind],
                    "runs": keys[kind],
                    "parameters": sum(int(done[_folder(0, key)][1]["checkpoint"]["parameters"]) for key in keys[kind]),
                    "train_seconds": summarize([r["train_seconds"] for r in per_seed[kind]]),
                    "train_step": _timing(steps),
                    "train_peak_mb": max(step["peak_mb"] for step in steps),
                    "inference": _timing([inference]),
                    "inference_peak_mb": inference["peak_mb"],
                    "memory_source": inference["memory_source"],
                    **summarize_rows(per_seed[kind]),
                }
                rows.append(row)
                drop = row.get("average_drop")
                log(f"[study tasks] T={count} {kind}: {row['parameters']:,} parameters"
                    + (f", average drop {drop['mean']:+.2f} %" if drop else ""))
            comparisons[str(count)] = paired_comparisons(per_seed, tasks)
    tasks = list(settings.tasks[: settings.counts[-1]])
    record = {
        **_header(settings, "tasks", started),
        "tasks": tasks,
        "counts": list(settings.counts),
        "seeds": list(seeds),
        "rows": rows,
        "comparisons": comparisons,
        "convergence": _curves(out, settings, tasks),
        "protocol": protocol_of(done[runs[-1].folder][1]),
        "protocols": protocol_text(done[runs[-1].folder][1]),
        "runs": _runs_record(done),
        "time": {"seconds": round(time.perf_counter() - clock, 1), "training_seconds": round(trained, 1)},
    }
    atomic_write_json(out / "tasks.json", record)
    atomic_write_text(out / "tasks.md", tasks_markdown(record))
    tasks_figure(record, out / "study_tasks.png")
    curves_figure(record, out / "study_tasks_curves.png")
    return record


def _runs_record(done: Mapping[str, tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    return {
        key: {"action": summary["action"], "run_dir": str(summary["run_dir"]), "steps": summary["step"],
              "train_seconds": summary["seconds"], "evaluation_seconds": record["time"]["seconds"]}
        for key, (summary, record) in done.items()
    }


def _fraction_row(values: Mapping[str, float], single: Mapping[str, float], tasks: Sequence[str],
                  partial: Sequence[str]) -> dict[str, Any]:
    comparison = _compare(values, single, tasks)
    drops = comparison["drops"]
    others = [t for t in tasks if t not in partial]
    return {"values": dict(values), **comparison,
            "partial_drop": sum(drops[t] for t in partial) / len(partial),
            "other_drop": sum(drops[t] for t in others) / len(others) if others else None}


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
    """Train (or reuse) the labels study's runs, for every seed, into ``out_dir/runs/seed<k>`` and write
    ``labels.json``, ``labels.md`` and ``study_labels.png``: the TSN on the first ``count`` tasks with
    ``partial``'s tasks (default: the first two) labelled on each of ``fractions`` of the training scenes, against
    fully labelled single-task networks of the same seed; every fraction is also compared, paired, with the fully
    labelled TSN."""
    from tsn.studies.seeds import summarize_rows
    from tsn.studies.statistics import paired_difference, summarize
    from tsn.utils.io import atomic_write_json, atomic_write_text

    started, clock = time.time(), time.perf_counter()
    partial = tuple(partial) or tuple(settings.tasks[:2])
    runs = plan_labels_study(settings, count, partial, fractions)
    out = Path(out_dir).expanduser()
    done = _train_all(runs, out, settings, jobs, progress, log, "study labels")
    tasks = list(settings.tasks[:count])
    seeds = range(settings.seeds)
    singles = [_single_values(done, seed, tasks) for seed in seeds]
    ordered = sorted(set(fractions), reverse=True)
    per_fraction = {}
    for fraction in ordered:
        key = labels_key(count, {task: float(fraction) for task in partial})
        per_fraction[fraction] = (key, [_fraction_row(_values(done[_folder(seed, key)][1]), singles[seed], tasks,
                                                      partial) for seed in seeds])
    rows = []
    full = per_fraction.get(1.0)
    for fraction, (key, seed_rows) in per_fraction.items():
        row: dict[str, Any] = {
            "fraction": float(fraction), "run": key, **summarize_rows(seed_rows),
            "partial_drop": summarize([r["partial_drop"] for r in seed_rows]),
            "other_drop": (summarize([r["other_drop"] for r in seed_rows])
                           if seed_rows[0]["other_drop"] is not None else None),
        }
        if full is not None and fraction < 1:  # paired with the fully labelled TSN of the same seed
            row["versus_full"] = {
                name: paired_difference([r[name] for r in seed_rows], [r[name] for r in full[1]])
                for name in ("average_drop", "partial_drop", "other_drop") if seed_rows[0][name] is not None}
        rows.append(row)
        log(f"[study labels] fraction {fraction:g}: average drop {row['average_drop']['mean']:+.2f} %")
    record = {
        **_header(settings, "labels", started),
        "tasks": tasks, "partial": list(partial), "seeds": list(seeds),
        "single_task": summarize_rows([{"values": values} for values in singles])["values"],
        "rows": rows,
        "protocol": protocol_of(done[runs[-1].folder][1]),
        "protocols": protocol_text(done[runs[-1].folder][1]),
        "runs": _runs_record(done),
        "time": {"seconds": round(time.perf_counter() - clock, 1)},
    }
    atomic_write_json(out / "labels.json", record)
    atomic_write_text(out / "labels.md", labels_markdown(record))
    labels_figure(record, out / "study_labels.png")
    return record
