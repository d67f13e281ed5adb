"""``tsn reproduce``: the paper's comparison in one command - single-task baselines, multi-head, TSN, one table.

For a dataset, :func:`plan_runs` lists the training runs of the comparison, all with the same encoder, recipe and
budget: one single-task network per task, the shared-encoder multi-head baseline and the TSN. :func:`reproduce`
trains each run in ``<out>/seed<k>/<run>`` (or reuses it: a run whose ``result.json`` says ``finished`` is never
trained again; an interrupted one is resumed from its ``checkpoints/last.pt``), evaluates each with the reference
protocol (:mod:`tsn.evaluation.evaluate`, cached as ``<run>/evaluation.json``) and writes the paper-style table
over seeds as ``<out>/table.json``, ``<out>/table.md`` and ``<out>/table.png`` (the single-task validation curves:
``<out>/curves.png``): per-task headline metrics (x100 where the paper prints percentages), parameter counts (the
TSN, the sum of the single-task networks, the multi-head network) and the average drop of the multi-head network
and of the TSN against the single-task networks (the paper's sign: positive = worse).

Recipes (``budget``):

* real datasets (``pascal_context``, ``nyud``): the packaged presets ``tsn_r18_<dataset>``,
  ``multihead_r18_<dataset>`` and ``single_r18_<dataset>.<task>`` (the paper's recipe: ImageNet ResNet-18, 512 x 512,
  Adam 1e-4 / 1e-6, 300 epochs); ``quick`` trains 5 epochs instead, a pipeline check far from the paper's numbers.
  Scored on ``val``, as the paper.
* ``synthetic``: the ``tsn_r10t_synthetic`` preset of ``tsn demo`` (ResNet-10-T from scratch, 64 x 64 scenes, all tasks
  per batch) and its derived baselines ``multihead_r10t_synthetic`` and ``single_r10t_synthetic.<task>``
  (:data:`PRESET_FAMILIES`); ``full`` trains 5 epochs of 480 scenes (300 steps of 8), validated after each
  (the single-task runs' metric curves), ``quick`` one epoch of 512 scenes. The checkpoints are chosen on ``val`` (100
  scenes) and scored on the separate ``test`` split (100 scenes).

**Seeds.** ``seeds`` runs of every network (seed ``k`` in ``<out>/seed<k>/<run>``, :mod:`tsn.studies.seeds`);
the table gives every cell as mean, sd and 95 % interval over the seeds and the paired comparisons
(:mod:`tsn.studies.reproduce_report`, :mod:`tsn.studies.statistics`).

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

from tsn.dataset_catalog import canonical_dataset_name, dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.evaluation.tables import SIGN_CONVENTION
from tsn.studies.reproduce_report import seed_table, table_markdown
from tsn.studies.seeds import check_seeds, seed_folder, seed_override
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
    "seed_table",
    "table_markdown",
    "default_jobs",
    "complete_runs",
    "prepare_data",
    "reproduce",
]

TABLE_FORMAT = "tsn-reproduce"

BUDGETS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    # 5 epochs of 480 scenes (300 steps of 8), validated after each: the budget of the recorded table in
    # docs/reproduce.md. At 60 steps the single-task baselines were still falling steeply (depth 6 m RMSE, worse
    # than predicting the mean depth); at 300 their last fifth changes less than the spread over seeds (the
    # validation curves there) and several seeds still fit a 2-core machine. 100 validation and test scenes.
    "synthetic": {"full": ("epochs=5", "batch_size=8", "data.train_options.length=480", "data.val_options.length=100",
                           "validation.every=1"),
                  "quick": ("epochs=1", "data.train_options.length=512")},
    "pascal_context": {"full": (), "quick": ("epochs=5",)},
    "nyud": {"full": (), "quick": ("epochs=5",)},
    "nyuv2_13": {"full": (), "quick": ("epochs=5",)},
    "cityscapes_7": {"full": (), "quick": ("epochs=5",)},
}
"""Per dataset and budget: the ``--set`` overrides applied to every run's preset."""

KIND_OVERRIDES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    # the single-task runs keep the preset's metrics at every validation (their curves); the multi-task runs
    # validate their loss only (it picks their checkpoint), which saves the edge benchmark at every epoch
    "synthetic": {"multi_head": ("validation.metrics=false",), "tsn": ("validation.metrics=false",)},
}
"""Per dataset and kind of run: ``--set`` overrides applied before the budget."""

PRESET_FAMILIES: Mapping[str, str] = {
    name: family for name in BUDGETS if (family := get_dataset(name).preset_family) is not None
}
"""The ``<backbone>_<dataset>`` part of the presets each dataset's runs train: ``single_<family>.<task>``,
``multihead_<family>`` and ``tsn_<family>`` (:func:`tsn.training.list_presets`)."""

EVALUATION_SPLITS: Mapping[str, str] = {name: get_dataset(name).evaluation.split for name in BUDGETS}
"""The split each dataset's table is scored on (the paper reports PASCAL-Context val)."""

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the comparison."""

    key: str
    """Run name: ``single_task-<task>``, ``multi_head`` or ``tsn``."""
    kind: str
    """``single_task``, ``multi_head`` or ``tsn`` (the table row it feeds)."""
    config: Any
    """The :class:`tsn.training.TrainConfig` to train."""
    seed: int = 0
    """The training seed (``config.seed``)."""

    @property
    def folder(self) -> str:
        """Where the run lives below the comparison's folder: ``seed<k>/<key>``."""
        return f"{seed_folder(self.seed)}/{self.key}"


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
    own = KIND_OVERRIDES.get(dataset, {})
    return [(key, kind, names[kind].format(task), own.get(kind, ())) for key, kind, task in runs]


def plan_runs(
    dataset: str,
    budget: str = "full",
    data_root: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    seeds: int = 1,
) -> list[PlannedRun]:
    """The runs of the comparison on ``dataset`` with ``budget`` for each seed ``0 .. seeds-1`` (seed-major), their
    configs checked (see the module doc)."""
    from tsn.training import load_config

    dataset = _dataset_key(dataset)
    if budget not in BUDGETS[dataset]:
        raise TsnError(f"unknown budget {budget!r}; choose one of: {', '.join(BUDGETS[dataset])}")
    check_seeds(seeds, overrides)
    root = [f"data.root={Path(data_root).expanduser().resolve()}"] if data_root else []
    planned = []
    for seed in range(seeds):
        for key, kind, preset, own in _sources(dataset, dataset_tasks(dataset)):
            config = load_config(preset, [*own, *BUDGETS[dataset][budget], *root, *overrides, seed_override(seed)])
            planned.append(PlannedRun(key, kind, config, seed))
    return planned


# -------------------------------------------------------------------------------------------------- runs


def run_status(run_dir: str | os.PathLike[str]) -> str:
    """``finished`` (``result.json`` says so), ``interrupted`` (a ``checkpoints/last.pt`` to resume) or ``new``."""
    from tsn.training.resume import RunPaths

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
    from tsn.training.resume import RunPaths

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


def _order(runs: Sequence[PlannedRun]) -> list[PlannedRun]:
    """The order jobs start in: seed by seed (an interrupted study has whole seeds done), and within a seed the
    multi-task runs first (the longest: started first, they leave the short ones to fill the gaps)."""
    by_seed: dict[int, list[PlannedRun]] = {}
    for run in runs:
        by_seed.setdefault(run.seed, []).append(run)
    return [run for seed in sorted(by_seed) for run in reversed(by_seed[seed])]


def _worker_init(threads: int) -> None:
    """A job process: its own process group (a terminal's Ctrl-C reaches only the parent, which stops the jobs
    once, with SIGTERM: a second signal would make the trainer abort without saving) and ``threads`` threads."""
    import torch

    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)
    torch.set_num_threads(threads)


def _stop_workers(pool: Any) -> None:
    """Ask every job process to save and stop (the trainer's SIGTERM handling), then wait for them."""
    import contextlib
    import signal

    for process in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
            os.kill(process.pid, signal.SIGTERM)
    pool.shutdown(wait=True, cancel_futures=True)


def complete_runs(
    runs: Sequence[PlannedRun], out: Path, split: str, jobs: int, workers: int | None, progress: bool,
    log: Callable[[str], None], tag: str = "reproduce",
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Every run's (summary, evaluation), keyed by :attr:`PlannedRun.folder`, each trained (or reused) in
    ``out/<run.folder>`` and scored on ``split``, ``jobs`` runs at a time on worker processes of one thread each;
    ``log`` gets one line per run, tagged ``tag``. Shared by :func:`reproduce` and the studies
    (:mod:`tsn.studies.scaling`).

    Ctrl-C or SIGTERM stops every job: a training run saves its checkpoint and stops, a finished run's files are
    already complete (each written atomically), and a TsnError says to run the command again to resume."""
    import multiprocessing
    import signal
    from concurrent.futures import as_completed

    from tsn.utils.processes import process_pool

    done: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def report(run: PlannedRun) -> None:
        summary, record = done[run.folder]
        log(f"[{tag} {len(done)}/{len(runs)}] {run.folder}: {summary['action']} ({summary['step']} steps, "
            f"{summary['seconds']:.0f} s), scored on {split} in {record['time']['seconds']:.0f} s")

    if jobs <= 1:
        for run in _order(runs):
            done[run.folder] = _complete_run(run, out / run.folder, split, workers, progress)
            report(run)
        return {run.folder: done[run.folder] for run in runs}
    threads = max(1, _cores() // jobs)
    # spawn: fresh interpreters, so no thread pool or CUDA state of this process is inherited by a fork.
    context = multiprocessing.get_context("spawn")
    pool = process_pool(jobs, mp_context=context, initializer=_worker_init, initargs=(threads,))  # end with us

    def terminate(number: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM: stop as Ctrl-C does
    previous = signal.signal(signal.SIGTERM, terminate) if _in_main_thread() else None
    try:
        futures = {pool.submit(_complete_run, run, out / run.folder, split, 0, False): run for run in _order(runs)}
        for future in as_completed(futures):
            done[futures[future].folder] = future.result()
            report(futures[future])
    except KeyboardInterrupt:
        log(f"[{tag}] interrupted: stopping the running jobs (each saves its checkpoint)")
        _stop_workers(pool)
        finished = sum(1 for run in runs if run.folder in done)
        raise TsnError(f"interrupted with {finished} of {len(runs)} runs complete; run the same command again to "
                       "resume (finished runs are reused, interrupted ones resumed)") from None
    except BaseException:
        _stop_workers(pool)  # one run failed: stop the others (each saves) instead of waiting for them
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return {run.folder: done[run.folder] for run in runs}


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def reproduce(
    dataset: str,
    out_dir: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    budget: str = "full",
    overrides: Sequence[str] = (),
    seeds: int = 1,
    jobs: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or reuse) every run of the comparison for each seed ``0 .. seeds-1`` into ``out_dir/seed<k>``,
    evaluate them, write the table over seeds.

    ``jobs`` runs are trained and evaluated at once (default :func:`default_jobs`); with one job, ``workers``
    processes read data and match edges during each evaluation (default: every core) and ``progress`` shows the
    trainer's bars and logs. ``log`` receives one line per completed run. Returns the table record, also written as
    ``<out_dir>/table.json`` and ``<out_dir>/table.md``: every cell as mean, sd and 95 % interval over the seeds
    (:mod:`tsn.studies.statistics`), the paired comparisons, each seed's own table and the single-task networks'
    validation curves. A missing dataset folder is a one-line error before anything is trained.
    """
    from tsn import __version__
    from tsn.studies.figures import curves_figure, table_figure
    from tsn.studies.reproduce_report import (
        protocol_of,
        protocol_text,
        seed_table,
        single_task_convergence,
        summarize_table,
    )
    from tsn.utils.io import atomic_write_json, atomic_write_text

    started, clock = time.time(), time.perf_counter()
    if jobs is not None and jobs < 1:  # checked before any data is prepared
        raise TsnError(f"jobs must be at least 1, got {jobs}")
    dataset = _dataset_key(dataset)
    runs = plan_runs(dataset, budget, data_root, overrides, seeds)
    split = EVALUATION_SPLITS[dataset]
    prepare_data(runs[0].config, split)
    _check_device(runs[0].config, budget)
    out = Path(out_dir).expanduser()
    done = complete_runs(runs, out, split, jobs or default_jobs(runs[0].config), workers, progress, log)
    per_seed = {}
    for seed in range(seeds):
        seed_runs = [run for run in runs if run.seed == seed]
        per_seed[seed] = seed_table(dataset, {run.key: done[run.folder][1] for run in seed_runs}, seed_runs)
    singles: dict[str, list[Path]] = {}
    for run in runs:
        if run.kind == "single_task":
            singles.setdefault(run.config.model.tasks[0], []).append(out / run.folder)
    table = {
        "format": TABLE_FORMAT,
        "format_version": 2,
        "tsn_version": __version__,
        "dataset": dataset,
        "split": split,
        "budget": budget,
        "overrides": list(overrides),
        **summarize_table(dataset, per_seed),
        "sign": SIGN_CONVENTION,
        "protocol": protocol_of(done[runs[-1].folder][1]),
        "protocols": protocol_text(done[runs[-1].folder][1]),
        "per_seed": {str(seed): table for seed, table in per_seed.items()},
        "convergence": single_task_convergence(singles),
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
    table_figure(table, out / "table.png")
    curves_figure(table, out / "curves.png")
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
