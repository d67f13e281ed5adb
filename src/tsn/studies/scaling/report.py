"""The studies' results as markdown tables and matplotlib figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tsn.studies.scaling.settings import (
    ARCHITECTURE_LABELS,
    ARCHITECTURES,
    dataset_tasks_by_name,
)


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


def tasks_figure(record: Mapping[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # slow to import; only the figures need it

    figure = Figure(figsize=(13, 3.8), layout="constrained")
    drop, params, speed = figure.subplots(1, 3)
    counts = record["counts"]
    for kind in ARCHITECTURES:
        rows = [row for row in record["rows"] if row["architecture"] == kind]
        style = {"color": _COLORS[kind], "marker": "o", "label": ARCHITECTURE_LABELS[kind]}
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


def labels_figure(record: Mapping[str, Any], path: Path) -> None:
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
