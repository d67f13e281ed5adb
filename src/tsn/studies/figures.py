"""Figures of the studies: error bars are 95 % confidence intervals over seeds, timings show their range."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tsn.tasks import get_task

__all__ = ["save", "curves_figure", "table_figure"]

COLORS = {"single_task": "tab:gray", "multi_head": "tab:blue", "tsn": "tab:red"}


def save(figure: Any, path: Path) -> None:
    from tsn.inference.predict import save_figure

    save_figure(figure, path, dpi=110)


def half_width(summary: Mapping[str, Any] | None) -> float:
    """The error bar of a summary: its interval's half-width (0 with one seed)."""
    return 0.0 if summary is None or summary.get("half_width") is None else float(summary["half_width"])


def curves_figure(record: Mapping[str, Any], path: Path) -> None:
    """The single-task validation curves behind the budget (``record["convergence"]``): every seed's curve, one
    panel per task, the last fifth shaded green where the metric has flattened by the study's criterion, orange
    where it still moves."""
    import math

    from matplotlib.figure import Figure

    entries = [(task, entry) for task, entry in record.get("convergence", {}).items() if entry["curves"]]
    if not entries:
        return
    columns = min(4, len(entries))
    figure = Figure(figsize=(3.2 * columns, 2.6 * math.ceil(len(entries) / columns)), layout="constrained")
    axes = figure.subplots(math.ceil(len(entries) / columns), columns, squeeze=False).ravel()
    for axis, (task, entry) in zip(axes, entries, strict=False):
        spec = get_task(task)
        for curve in entry["curves"]:
            axis.plot([p[0] for p in curve], [p[1] for p in curve], color="tab:gray", alpha=0.5, linewidth=1)
        check = entry.get("check")
        title = f"{task} {spec.metric} {'↑' if spec.higher_is_better else '↓'}"
        if check:
            axis.axvspan(check["from_step"], check["to_step"], color="tab:green" if check["flattened"] else
                         "tab:orange", alpha=0.15)
            title += " (flat)" if check["flattened"] else " (still moving)"
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.grid(alpha=0.3)
    for axis in axes[len(entries):]:
        axis.set_visible(False)
    save(figure, path)


def table_figure(table: Mapping[str, Any], path: Path) -> None:
    """A reproduction table as bars: every task's value per model and the average drops, mean and 95 % interval
    over the seeds."""
    import math

    from matplotlib.figure import Figure

    tasks = list(table["tasks"])
    rows = table["rows"]
    columns = 4
    panels = len(tasks) + 1
    figure = Figure(figsize=(3.0 * columns, 2.6 * math.ceil(panels / columns)), layout="constrained")
    axes = figure.subplots(math.ceil(panels / columns), columns, squeeze=False).ravel()
    kinds = list(rows)
    for axis, task in zip(axes, tasks, strict=False):
        spec = get_task(task)
        cells = [rows[kind]["values"][task] for kind in kinds]
        axis.bar(range(len(kinds)), [c["mean"] for c in cells], yerr=[half_width(c) for c in cells], capsize=4,
                 color=[COLORS.get(kind, "tab:green") for kind in kinds])
        low = min(c["mean"] - half_width(c) for c in cells)
        high = max(c["mean"] + half_width(c) for c in cells)
        axis.set_ylim(low - 0.15 * (high - low + 1e-9), high + 0.15 * (high - low + 1e-9))
        axis.set_title(f"{task} {spec.metric} {'↑' if spec.higher_is_better else '↓'}", fontsize=9)
        axis.set_xticks(range(len(kinds)), [rows[kind]["label"] for kind in kinds], fontsize=8)
        axis.grid(alpha=0.3, axis="y")
    drop_axis = axes[len(tasks)]
    multi = [kind for kind in kinds if rows[kind].get("average_drop")]
    drops = [rows[kind]["average_drop"] for kind in multi]
    drop_axis.bar(range(len(multi)), [d["mean"] for d in drops], yerr=[half_width(d) for d in drops], capsize=4,
                  color=[COLORS.get(kind, "tab:green") for kind in multi])
    drop_axis.axhline(0, color="black", linewidth=0.8)
    drop_axis.set_xticks(range(len(multi)), [rows[kind]["label"] for kind in multi], fontsize=8)
    drop_axis.set_title("average drop % ↓ vs single task", fontsize=9)
    drop_axis.grid(alpha=0.3, axis="y")
    for axis in axes[panels:]:
        axis.set_visible(False)
    figure.suptitle(f"{table['dataset']} {table['split']}: mean and 95 % CI over {len(table['seeds'])} seeds",
                    fontsize=10)
    save(figure, path)
