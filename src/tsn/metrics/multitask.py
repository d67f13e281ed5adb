"""The multi-task score: how much a multi-task model loses against single-task baselines, task by task.

Two sign conventions are in use, and both are offered under their own names:

* :func:`average_drop` -- the TSN paper's "average drop %": **positive means the multi-task model is worse**.
* :func:`delta_m` -- the MTL survey's "Delta m" = ``-average_drop``: **positive means the multi-task model is
  better**.

Scores may be fractions or percentages (the drop is relative), as long as both dictionaries use the same scale.
The direction of each task's metric comes from the task specs the caller passes (this room knows no task).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np

from tsn.errors import TsnError

__all__ = ["DirectedTask", "task_drops", "average_drop", "delta_m"]


class DirectedTask(Protocol):
    """What the multi-task score needs of a task: its name and its metric's direction (a ``TaskSpec`` fits)."""

    # Read-only members (properties), so that frozen dataclasses such as TaskSpec satisfy the protocol.
    @property
    def name(self) -> str: ...

    @property
    def higher_is_better(self) -> bool: ...


def task_drops(
    multi: Mapping[str, float], single: Mapping[str, float], specs: Iterable[DirectedTask]
) -> dict[str, float]:
    """Per-task drop in percent, ``100 * s_t * (M_single - M_multi) / M_single``, positive = multi-task worse.

    ``s_t`` is +1 for a task whose headline metric is higher-is-better and -1 otherwise (normals error, depth
    RMSE), read from ``specs`` (matched by task name; e.g. ``[tsn.tasks.get_task(t) for t in multi]``).
    """
    if not multi:
        raise TsnError("no multi-task score given; pass at least one task's headline metric")
    if set(multi) != set(single):
        missing = sorted(set(multi) ^ set(single))
        raise TsnError(
            f"task(s) {', '.join(missing)} have a score on one side only; give multi-task and single-task scores "
            "for the same tasks"
        )
    by_name = {spec.name: spec for spec in specs}
    drops: dict[str, float] = {}
    for task, score in multi.items():
        spec = by_name.get(task)
        if spec is None:
            raise TsnError(
                f"no task spec given for {task!r}, so the direction of its metric is unknown; pass the specs of "
                f"every scored task (known here: {', '.join(by_name) or 'none'})"
            )
        baseline = float(single[task])
        if baseline == 0 or not np.isfinite(baseline):
            raise TsnError(f"the single-task score of {task} is {baseline}; a relative drop needs a non-zero baseline")
        sign = 1.0 if spec.higher_is_better else -1.0
        drops[task] = 100.0 * sign * (baseline - float(score)) / baseline
    return drops


def average_drop(
    multi: Mapping[str, float], single: Mapping[str, float], specs: Iterable[DirectedTask]
) -> float:
    """The TSN paper's average drop in percent: mean of :func:`task_drops`; **positive = multi-task worse**."""
    return float(np.mean(list(task_drops(multi, single, specs).values())))


def delta_m(multi: Mapping[str, float], single: Mapping[str, float], specs: Iterable[DirectedTask]) -> float:
    """The MTL survey's Delta m in percent, ``-average_drop``; **positive = multi-task better**."""
    return -average_drop(multi, single, specs)
