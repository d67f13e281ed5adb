"""The multi-task score: how much a multi-task model loses against single-task baselines, task by task.

Two sign conventions are in use, and both are offered under their own names:

* :func:`average_drop` -- the TSN paper's "average drop %": **positive means the multi-task model is worse**.
* :func:`delta_m` -- the MTL survey's "Delta m" = ``-average_drop``: **positive means the multi-task model is
  better**.

Scores may be fractions or percentages (the drop is relative), as long as both dictionaries use the same scale.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from tsn.errors import TsnError
from tsn.tasks import TaskSpec, get_task

__all__ = ["task_drops", "average_drop", "delta_m"]


def task_drops(
    multi: Mapping[str, float], single: Mapping[str, float], specs: Iterable[TaskSpec] | None = None
) -> dict[str, float]:
    """Per-task drop in percent, ``100 * s_t * (M_single - M_multi) / M_single``, positive = multi-task worse.

    ``s_t`` is +1 for a task whose headline metric is higher-is-better and -1 otherwise (normals error, depth
    RMSE), read from ``specs`` (matched by task name) or, without ``specs``, from the task registry.
    """
    if not multi:
        raise TsnError("no multi-task score given; pass at least one task's headline metric")
    if set(multi) != set(single):
        missing = sorted(set(multi) ^ set(single))
        raise TsnError(
            f"task(s) {', '.join(missing)} have a score on one side only; give multi-task and single-task scores "
            "for the same tasks"
        )
    by_name = {spec.name: spec for spec in specs} if specs is not None else {}
    drops: dict[str, float] = {}
    for task, score in multi.items():
        spec = by_name.get(task) or get_task(task)
        baseline = float(single[task])
        if baseline == 0 or not np.isfinite(baseline):
            raise TsnError(f"the single-task score of {task} is {baseline}; a relative drop needs a non-zero baseline")
        sign = 1.0 if spec.higher_is_better else -1.0
        drops[task] = 100.0 * sign * (baseline - float(score)) / baseline
    return drops


def average_drop(
    multi: Mapping[str, float], single: Mapping[str, float], specs: Iterable[TaskSpec] | None = None
) -> float:
    """The TSN paper's average drop in percent: mean of :func:`task_drops`; **positive = multi-task worse**."""
    return float(np.mean(list(task_drops(multi, single, specs).values())))


def delta_m(multi: Mapping[str, float], single: Mapping[str, float], specs: Iterable[TaskSpec] | None = None) -> float:
    """The MTL survey's Delta m in percent, ``-average_drop``; **positive = multi-task better**."""
    return -average_drop(multi, single, specs)
