"""``tsn reproduce``: the paper's comparison in one command - single-task baselines, multi-head, TSN, one table.

For a dataset, :func:`plan_runs` lists the training runs of the comparison, all with the same encoder, recipe and
budget: one single-task network per task, the shared-encoder multi-head baseline and the TSN. :func:`reproduce`
trains each run in ``<out>/<run>`` (or reuses it: a run whose ``result.json`` says ``finished`` is never trained
again; an interrupted one is resumed from its ``checkpoints/last.pt``), evaluates each with the reference protocol
(:mod:`tsn.evaluation.evaluate`, cached as ``<run>/evaluation.json``) and writes the paper-style table as
``<out>/table.json`` and ``<out>/table.md``: per-task headline metrics (x100 where the paper prints percentages),
parameter counts (the TSN, the sum of the single-task networks, the multi-head network) and the average drop of
the multi-head network and of the TSN against the single-task networks (the paper's sign: positive = worse).

Recipes (``budget``):

* real datasets (``pascal_context``, ``nyud``): the packaged presets ``tsn_r18_<dataset>``,
  ``multihead_r18_<dataset>`` and ``single_r18_<dataset>.<task>`` (the paper's recipe: ImageNet ResNet-18, 512 x 512,
  Adam 1e-4 / 1e-6, 300 epochs); ``quick`` trains 5 epochs instead, a pipeline check far from the paper's numbers.
  Scored on ``val``, as the paper.
* ``synthetic``: the ``tsn_r10t_synthetic`` preset of ``tsn demo`` (ResNet-10-T from scratch, 64 x 64 scenes, all tasks
  per batch; ``full`` trains 4 epochs of 2,000 scenes, one more than the demo) and its derived baselines
  ``multihead_r10t_synthetic`` and ``single_r10t_synthetic.<task>`` (:data:`PRESET_FAMILIES`); ``quick`` trains
  one epoch of 512 scenes. The checkpoints are chosen on ``val`` and
  scored on the separate ``test`` split.

``overrides`` (``--set key=value``, the trainer's syntax) apply to every run after the budget, e.g. to shrink a run
for a test. On a CPU the runs go in parallel, one per core on one thread each (:func:`default_jobs`); each job
trains its run, then evaluates it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tsn.datasets import canonical_dataset_name, dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.tasks import TaskSpec

__all__ = [
    "TABLE_FORMAT",
    "BUDGETS",
    "PRESET_FAMILIES",
    "EVALUATION_SPLITS",
    "PlannedRun",
    "plan_runs",
    "run_status",
    "train_or_reuse",
    "evaluate_or_reuse",
    "build_table",
    "table_markdown",
    "default_jobs",
    "complete_runs",
    "prepare_data",
    "reproduce",
]

TABLE_FORMAT = "tsn-reproduce"

BUDGETS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    # 4 epochs (500 steps): the budget of the recorded table in docs/reproduce.md; the demo preset trains 3.
    "synthetic": {"full": ("epochs=4",), "quick": ("epochs=1", "data.train_options.length=512")},
    "pascal_context": {"full": (), "quick": ("epochs=5",)},
    "nyud": {"full": (), "quick": ("epochs=5",)},
    "nyuv2_13": {"full": (), "quick": ("epochs=5",)},
    "cityscapes_7": {"full": (), "quick": ("epochs=5",)},
}
"""Per dataset and budget: the ``--set`` overrides applied to every run's preset."""

PRESET_FAMILIES: Mapping[str, str] = {
    name: family for name in BUDGETS if (family := get_dataset(name).preset_family) is not None
}
"""The ``<backbone>_<dataset>`` part of the presets each dataset's runs train: ``single_<family>.<task>``,
``multihead_<family>`` and ``tsn_<family>`` (:func:`tsn.training.list_presets`)."""

EVALUATION_SPLITS: Mapping[str, str] = {name: get_dataset(name).evaluation.split for name in BUDGETS}
"""The split each dataset's table is scored on (the paper reports PASCAL-Context val)."""

_ROW_LABELS = {"single_task": "Single task", "multi_head": "Multi-head", "tsn": "TSN"}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the comparison."""

    key: str
    """Run folder name: ``single_task-<task>``, ``multi_head`` or ``tsn``."""
    kind: str
    """``single_task``, ``multi_head`` or ``tsn`` (the table row it feeds)."""
    config: Any
    """The :class:`tsn.training.TrainConfig` to train."""


def _dataset_key(dataset: str) -> str:
    key = canonical_dataset_name(dataset)
    if key not in BUDGETS:
        raise TsnError(f"unknown dataset {dataset!r}; tsn reproduce runs on: {', '.join(BUDGETS)}")
    return key


def _sources(dataset: str, specs: Sequence[TaskSpec]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """``(key, kind, preset, overrides)`` of every run: single-task runs in the dataset's task order, then the
    multi-head baseline, then the TSN."""
    runs = [(f"single_task-{spec.name}", "single_task", spec.name) for spec in specs]
    runs += [("multi_head", "multi_head", ""), ("tsn", "tsn", "")]
    family = PRESET_FAMILIES[dataset]
    names = {"single_task": f"single_{family}.{{}}", "multi_head": f"multihead_{family}", "tsn": f"tsn_{family}"}
    return [(key, kind, names[kind].format(task), ()) for key, kind, task in runs]


def plan_runs(
    dataset: str,
    budget: str = "full",
    data_root: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> list[PlannedRun]:
    """The runs of the comparison on ``dataset`` with ``budget``, their configs checked (see the module doc)."""
    from tsn.training import load_config

    dataset = _dataset_key(dataset)
    if budget not in BUDGETS[dataset]:
        raise TsnError(f"unknown budget {budget!r}; choose one of: {', '.join(BUDGETS[dataset])}")
    root = [f"data.root={Path(data_root).expanduser().resolve()}"] if data_root else []
    planned = []
    for key, kind, preset, own in _sources(dataset, dataset_tasks(dataset)):
        config = load_config(preset, [*own, *BUDGETS[dataset][budget], *root, *overrides])
        planned.append(PlannedRun(key, kind, config))
    return planned


# -------------------------------------------------------------------------------------------------- runs


def run_status(run_dir: str | os.PathLike[str]) -> str:
    """``finished`` (``result.json`` says so), ``interrupted`` (a ``checkpoints/last.pt`` to resume) or ``new``."""
    from tsn.training.checkpointing import RunPaths

    paths = RunPaths(Path(run_dir))
    if paths.result.is_file():
        try:
            if json.loads(paths.result.read_text()).get("status") == "finished":
                return "finished"
        except (OSError, ValueError, AttributeError):
            pass  # an unreadable summary: judge by the checkpoints
    return "interrupted" if paths.last.is_file() else "new"


def _recipe(config: Any) -> dict[str, Any]:
    """A config as a dict without where the data lives (a moved dataset is still the same recipe)."""
    data = config.to_dict()
    data["data"].pop("root")
    return data


def _check_same_config(run: PlannedRun, run_dir: Path) -> None:
    """Refuse to reuse or resume a run trained with another recipe (e.g. the other budget) in this folder."""
    from tsn.training import resume_config

    if _recipe(resume_config(run_dir)) != _recipe(run.config):
        raise TsnError(
            f"{run_dir} holds a run with another config than this reproduction's {run.key}; "
            "use another --out (or delete that folder)"
        )


def train_or_reuse(run: PlannedRun, run_dir: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Train ``run`` into ``run_dir``, resume it there, or reuse it when finished; returns the run summary
    (``result.json``'s content plus ``action``: ``trained``, ``resumed`` or ``reused``)."""
    from tsn.training import train
    from tsn.training.checkpointing import RunPaths

    paths = RunPaths(Path(run_dir))
    status = run_status(paths.root)
    if status != "new" or paths.config.is_file():
        _check_same_config(run, paths.root)
    if status == "finished":
        return {**json.loads(paths.result.read_text()), "action": "reused"}
    result = train(run.config, paths.root, resume=status == "interrupted", progress=progress)
    if result.status != "finished":
        raise TsnError(f"training of {run.key} was interrupted; run the same command again to resume it")
    return {**result.to_dict(), "action": "resumed" if status == "interrupted" else "trained"}


def evaluate_or_reuse(
    run: PlannedRun, summary: Mapping[str, Any], split: str, workers: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """The ``tsn evaluate`` record of a finished run's checkpoint on ``split``, cached as ``<run>/evaluation.json``
    (recomputed when the checkpoint is newer than the cache)."""
    from tsn.evaluation.evaluate import evaluate_checkpoint
    from tsn.evaluation.tables import write_result

    checkpoint = Path(summary["checkpoint"])
    cache = Path(summary["run_dir"]) / "evaluation.json"
    if cache.is_file() and cache.stat().st_mtime >= checkpoint.stat().st_mtime:
        record = json.loads(cache.read_text())
        if record.get("dataset", {}).get("split") == split:
            return record
    data, options = run.config.data, run.config.validation.metric_options  # score as the run validated
    record = evaluate_checkpoint(
        checkpoint, data.dataset, split, data_root=data.root, dataset_options={**data.options, **data.val_options},
        size=data.size, workers=workers, device=run.config.device, progress=progress,
        edge_protocol=options.get("edge_protocol"), depth_protocol=options.get("depth_protocol"),
    )
    write_result(record, cache)
    return record


# ------------------------------------------------------------------------------------------------- table


def _row(kind: str, records: Sequence[Mapping[str, Any]], runs: Sequence[str]) -> dict[str, Any]:
    from tsn.evaluation.tables import table_values

    values: dict[str, float] = {}
    for record in records:
        values.update(table_values(record))
    return {
        "label": _ROW_LABELS[kind],
        "values": values,
        "parameters": sum(int(record["checkpoint"]["parameters"]) for record in records),
        "runs": list(runs),
    }


def build_table(
    dataset: str, records: Mapping[str, Mapping[str, Any]], runs: Sequence[PlannedRun]
) -> dict[str, Any]:
    """The table's rows from each run's evaluation record: values in table units, parameters (single task: the
    sum over tasks), and for the multi-task rows the per-task drops and average drop against the single-task row."""
    from tsn.evaluation.tables import SIGN_CONVENTION, compare_with_baseline

    specs = dataset_tasks(dataset)
    rows = {}
    for kind in _ROW_LABELS:
        keys = [run.key for run in runs if run.kind == kind]
        rows[kind] = _row(kind, [records[key] for key in keys], keys)
    for kind in ("multi_head", "tsn"):
        comparison = compare_with_baseline(rows[kind]["values"], rows["single_task"]["values"], specs)
        rows[kind].update(drops=comparison["drops"], average_drop=comparison["average_drop"])
    return {"tasks": [spec.name for spec in specs], "rows": rows, "sign": SIGN_CONVENTION}


def table_markdown(table: Mapping[str, Any]) -> str:
    """The reproduction table as markdown, with its protocol notes."""
    from tsn.evaluation.tables import TableRow, markdown_table

    specs = dataset_tasks(table["dataset"], table["tasks"])
    rows = [TableRow(row["label"], row["values"], row.get("average_drop"), row["parameters"])
            for row in table["rows"].values()]
    minutes = table["time"]["seconds"] / 60
    actions = ", ".join(f"{key} {run['action']}" for key, run in table["runs"].items())
    lines = [
        f"## {table['dataset']} ({table['split']} split, budget {table['budget']})", "",
        markdown_table(rows, specs),
        "Values: mIoU and odsF x100, normals mean angular error in degrees, depth RMSE in metres. Parameters: "
        "the single-task row sums its networks. Avg. drop %: the paper's sign, positive = worse than single task.",
        "",
        f"Protocols: {table['protocols']}.",
        f"Runs: {actions}; wall time {minutes:.1f} min.",
        "",
    ]
    return "\n".join(lines)


def _protocols(record: Mapping[str, Any]) -> str:
    parts = [f"{task} {entry['protocol']}" for task, entry in record["protocols"].items() if isinstance(entry, dict)]
    height, width = record["input_size"]
    return ", ".join(parts) + f"; input {height} x {width} px; scored at the original image size"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_jobs(config: Any) -> int:
    """Runs trained at once: one on a GPU; on a CPU one per core, each on one thread.

    The comparison's networks are small for a CPU's thread team: on two cores, two single-threaded runs side by
    side finish sooner than one run on two threads, and they degrade gracefully when other programs load the
    machine (a two-thread team waits for its slowest thread at every layer).
    """
    from tsn.utils.device import resolve_device

    return 1 if resolve_device(config.device).type == "cuda" else _cores()


def _complete_run(
    run: PlannedRun, run_dir: Path, split: str, workers: int | None, progress: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or reuse) one run, then evaluate it (or reuse its evaluation): one job of :func:`reproduce`."""
    summary = train_or_reuse(run, run_dir, progress=progress)
    return summary, evaluate_or_reuse(run, summary, split, workers, progress)


def complete_runs(
    runs: Sequence[PlannedRun], out: Path, split: str, jobs: int, workers: int | None, progress: bool,
    log: Callable[[str], None], tag: str = "reproduce",
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Every run's (summary, evaluation), each trained (or reused) in ``out/<run.key>`` and scored on ``split``,
    ``jobs`` runs at a time on worker processes of one thread each; ``log`` gets one line per run, tagged ``tag``.
    Shared by :func:`reproduce` and the studies (:mod:`tsn.studies.scaling`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    done: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def report(key: str) -> None:
        summary, record = done[key]
        log(f"[{tag} {len(done)}/{len(runs)}] {key}: {summary['action']} ({summary['step']} steps, "
            f"{summary['seconds']:.0f} s), scored on {split} in {record['time']['seconds']:.0f} s")

    if jobs <= 1:
        for run in runs:
            done[run.key] = _complete_run(run, out / run.key, split, workers, progress)
            report(run.key)
        return done
    threads = max(1, _cores() // jobs)
    # spawn: fresh interpreters, so no thread pool or CUDA state of this process is inherited by a fork.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        # The multi-task runs are the longest: started first, they leave the short ones to fill the gaps.
        futures = {pool.submit(_complete_run, run, out / run.key, split, 0, False): run.key for run in reversed(runs)}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            report(futures[future])
    return {run.key: done[run.key] for run in runs}


def reproduce(
    dataset: str,
    out_dir: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    budget: str = "full",
    overrides: Sequence[str] = (),
    jobs: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or reuse) every run of the comparison into ``out_dir``, evaluate them, write the table.

    ``jobs`` runs are trained and evaluated at once (default :func:`default_jobs`); with one job, ``workers``
    processes read data and match edges during each evaluation (default: every core) and ``progress`` shows the
    trainer's bars and logs. ``log`` receives one line per completed run. Returns the table record, also written as
    ``<out_dir>/table.json`` and ``<out_dir>/table.md``. A missing dataset folder is a one-line error before
    anything is trained.
    """
    from tsn import __version__
    from tsn.utils.io import atomic_write_json, atomic_write_text

    started, clock = time.time(), time.perf_counter()
    if jobs is not None and jobs < 1:  # checked before any data is prepared
        raise TsnError(f"jobs must be at least 1, got {jobs}")
    dataset = _dataset_key(dataset)
    runs = plan_runs(dataset, budget, data_root, overrides)
    split = EVALUATION_SPLITS[dataset]
    prepare_data(runs[0].config, split)
    _check_device(runs[0].config, budget)
    out = Path(out_dir).expanduser()
    done = complete_runs(runs, out, split, jobs or default_jobs(runs[0].config), workers, progress, log)
    records = {key: record for key, (_, record) in done.items()}
    table = {
        "format": TABLE_FORMAT,
        "format_version": 1,
        "tsn_version": __version__,
        "dataset": dataset,
        "split": split,
        "budget": budget,
        "overrides": list(overrides),
        **build_table(dataset, records, runs),
        "protocols": _protocols(records[runs[-1].key]),
        "runs": {
            key: {"action": s["action"], "run_dir": str(s["run_dir"]), "checkpoint": str(s["checkpoint"]),
                  "train_seconds": s["seconds"], "steps": s["step"],
                  "evaluation": str(Path(s["run_dir"]) / "evaluation.json")}
            for key, (s, _) in done.items()
        },
        "time": {
            "started": datetime.fromtimestamp(started, timezone.utc).strftime(_TIME_FORMAT),
            "seconds": round(time.perf_counter() - clock, 3),
        },
    }
    atomic_write_json(out / "table.json", table)
    atomic_write_text(out / "table.md", table_markdown(table))
    return table


def prepare_data(config: Any, split: str) -> None:
    """Open every split the runs read, before any training: a missing dataset folder fails here in one line, and
    the synthetic scenes are rendered and cached once rather than by each parallel run."""
    from tsn.data import build_dataset

    d = config.data
    # Real datasets: the folder and split lists are what is checked here (the file scan is each run's).
    extra: dict[str, Any] = {} if get_dataset(d.dataset).generated else {"check_files": False}
    tasks = list(config.model.tasks[:1])
    for name, options in ((d.train_split, d.train_options), (d.val_split, d.val_options), (split, d.val_options)):
        build_dataset(d.dataset, name, tasks=tasks, root=d.root, **extra, **{**d.options, **options})


def _check_device(config: Any, budget: str) -> None:
    """Refuse the paper's full recipe on a real dataset without a GPU (300 epochs at 512 px: weeks on a CPU)."""
    from tsn.utils.device import resolve_device

    generated = get_dataset(config.data.dataset).generated
    if not generated and budget == "full" and resolve_device(config.device).type != "cuda":
        raise TsnError(
            f"the paper's recipe on {config.data.dataset} needs a CUDA GPU; run it on a GPU machine, try "
            "--budget quick, or use --dataset synthetic on a CPU"
        )
