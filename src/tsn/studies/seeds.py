"""Seeds of the studies: one run folder per seed, per-seed rows summarised over seeds, paired comparisons, and the
validation curves behind a budget.

``tsn reproduce`` and ``tsn study`` train every network of their comparison once per seed ``0 .. N-1``
(``--seeds N``), in ``<runs>/seed<k>/<run>``. The seed is :attr:`tsn.training.TrainConfig.seed`, which fixes the
initialisation (``torch.manual_seed``), the data order (:func:`tsn.training.schedules.epoch_plan`), the
augmentation of every sample (:func:`tsn.training.schedules.sample_seed`) and the labelled subsets of partially
labelled runs (:mod:`tsn.data.partial`). The scenes and the scored split are the same for every seed, so the
spread over seeds is the spread of training, and two networks of the same seed form a pair.

Raising ``N`` later reuses the finished seeds; a study interrupted in the middle of a seed resumes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tsn.errors import TsnError
from tsn.studies.statistics import paired_difference, summarize

__all__ = [
    "MAX_SEEDS",
    "seed_folder",
    "check_seeds",
    "seed_override",
    "summarize_rows",
    "compare_rows",
    "headline_curve",
    "convergence",
]

MAX_SEEDS = 100
"""More seeds than this is a typo rather than a study (each seed trains every network of the comparison)."""


def seed_folder(seed: int) -> str:
    """The folder of one seed's runs: ``seed<k>``."""
    return f"seed{seed}"


def check_seeds(seeds: int, overrides: Sequence[str] = ()) -> None:
    """One line for a bad ``--seeds``, or for a ``--set seed=...`` that would give every seed the same runs."""
    from tsn.utils.checks import require_int

    require_int("--seeds", seeds, minimum=1)
    if seeds > MAX_SEEDS:
        raise TsnError(f"--seeds {seeds} is more than {MAX_SEEDS}; each seed trains every network once")
    for item in overrides:
        if item.partition("=")[0].strip() == "seed":
            raise TsnError("--set seed=... would train every seed alike; use --seeds N (seeds 0 .. N-1)")


def seed_override(seed: int) -> str:
    """The ``--set`` item that makes a run seed ``seed``'s (applied after every other override)."""
    return f"seed={seed}"


# --------------------------------------------------------------------------------------------------- summaries


def summarize_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row over seeds from the per-seed rows (each ``values`` and optionally ``drops`` / ``average_drop``):
    every value, drop and the average drop as a :func:`~tsn.studies.statistics.summarize` record."""
    if not rows:
        raise ValueError("no seeds to summarise")
    tasks = list(rows[0]["values"])
    out: dict[str, Any] = {
        "n": len(rows),
        "values": {task: summarize([row["values"][task] for row in rows]) for task in tasks},
    }
    if "drops" in rows[0]:
        out["drops"] = {task: summarize([row["drops"][task] for row in rows]) for task in rows[0]["drops"]}
        out["average_drop"] = summarize([row["average_drop"] for row in rows])
    return out


def compare_rows(
    a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], tasks: Sequence[str]
) -> dict[str, Any]:
    """Paired comparison of two networks over the same seeds (``a[i]`` and ``b[i]`` share seed ``i``): per task
    the difference of values (``a - b``, table units) and, when both rows have drops, of the average drop
    (points; positive = ``a`` worse). Each a :func:`~tsn.studies.statistics.paired_difference` record."""
    result: dict[str, Any] = {
        "values": {task: paired_difference([row["values"][task] for row in a], [row["values"][task] for row in b])
                   for task in tasks},
    }
    if a and b and "average_drop" in a[0] and "average_drop" in b[0]:
        result["average_drop"] = paired_difference([row["average_drop"] for row in a],
                                                   [row["average_drop"] for row in b])
    return result


# ------------------------------------------------------------------------------------------------------ curves


def headline_curve(run_dir: str | Path, task: str) -> list[tuple[int, float]]:
    """``(step, headline metric in table units)`` of every validation of a run (its ``history.json``)."""
    import json

    from tsn.evaluation.tables import table_value
    from tsn.tasks import get_task

    path = Path(run_dir) / "history.json"
    if not path.is_file():
        return []
    spec = get_task(task)
    curve = []
    for record in json.loads(path.read_text()):
        scores = record.get("metrics", {}).get(task)
        if scores is not None and spec.metric in scores:
            curve.append((int(record["step"]), table_value(spec, scores[spec.metric])))
    return curve


def convergence(curves: Sequence[Sequence[tuple[int, float]]], fraction: float = 0.2) -> dict[str, Any] | None:
    """Has a metric flattened at the end of the budget? ``curves``: one validation curve per seed, the same steps.

    The change over the last ``fraction`` of training is the final value minus the value at the validation
    closest to ``(1 - fraction) * steps``, per seed; the metric has flattened when the mean change is smaller in
    magnitude than the standard deviation of the final values over seeds (the studies' criterion: the last fifth
    of training moves the metric less than the seeds spread it). None without two curves of two points."""
    usable = [list(curve) for curve in curves if len(curve) >= 2]
    if len(usable) < 2:
        return None
    last_step = usable[0][-1][0]
    target = (1 - fraction) * last_step
    changes, finals = [], []
    for curve in usable:
        earlier = min(curve[:-1], key=lambda point: abs(point[0] - target))
        changes.append(curve[-1][1] - earlier[1])
        finals.append(curve[-1][1])
    change, spread = summarize(changes), summarize(finals)
    reference = min(usable[0][:-1], key=lambda point: abs(point[0] - target))[0]
    return {
        "from_step": reference, "to_step": last_step, "change": change, "final": spread,
        "flattened": abs(change["mean"]) < float(spread["std"] or 0.0),
    }
