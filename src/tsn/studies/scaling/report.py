"""The studies' results as markdown tables and matplotlib figures: mean ± 95 % interval over seeds everywhere."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tsn.studies.figures import COLORS, curves_figure, half_width, save
from tsn.studies.reproduce_report import ROW_LABELS, difference_lines
from tsn.studies.scaling.settings import (
    ARCHITECTURE_LABELS,
    ARCHITECTURES,
    dataset_tasks_by_name,
)
from tsn.studies.statistics import interval_text, verdict


def _cell(summary: Mapping[str, Any] | None, digits: int = 2, signed: bool = False) -> str:
    return "-" if summary is None else interval_text(summary, digits, signed)


def _header_cells(tasks: Sequence[str]) -> list[str]:
    return [f"{spec.name} {spec.metric} {'↑' if spec.higher_is_better else '↓'}"
            for spec in dataset_tasks_by_name(tasks)]


def _ms(timing: Mapping[str, Any]) -> str:
    """Median (range) in milliseconds."""
    return f"{1000 * timing['seconds']:.0f} ({1000 * timing['min']:.0f}-{1000 * timing['max']:.0f})"


def _seeds_note(record: Mapping[str, Any]) -> str:
    seeds = record["seeds"]
    return (f"Cells: mean ± half-width of the 95 % t interval over {len(seeds)} seeds "
            f"({', '.join(map(str, seeds))}; sd and every seed's value in the JSON).")


def _convergence_lines(record: Mapping[str, Any]) -> list[str]:
    checks = [(task, entry["check"]) for task, entry in record.get("convergence", {}).items() if entry.get("check")]
    if not checks:
        return []
    lines = ["Budget check: single-task validation curves (val split), change over the last fifth of training "
             "against the sd of the final value over seeds:", "",
             "| task | steps | change (mean ± 95 %) | sd of final value | flattened |", "|---|---|---|---|---|"]
    for task, check in checks:
        lines.append(f"| {task} | {check['from_step']} → {check['to_step']} | "
                     f"{interval_text(check['change'], signed=True)} | {check['final']['std']:.2f} | "
                     f"{'yes' if check['flattened'] else 'no'} |")
    flat = sum(check["flattened"] for _, check in checks)
    return [*lines, "", f"{flat} of {len(checks)} single-task metrics flattened by this criterion.", ""]


def tasks_markdown(record: Mapping[str, Any]) -> str:
    """The tasks study as markdown: cost and average drop per ``T`` and architecture, every metric, the paired
    differences per ``T`` and the budget check."""
    s = record["settings"]
    lines = [
        f"## Task scaling on {s['dataset']} ({record['split']} split, {s['test_images']} scenes; {s['steps']} steps "
        f"of {s['batch_size']} scenes at {s['size']} px per run; {len(record['seeds'])} seeds)", "",
        "| T | model | parameters | train s (runs) | train step ms | all-task inference ms | train peak MB "
        "| inference peak MB | avg. drop % ↓ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['count']} | {row['label']} | {row['parameters']:,} | {_cell(row['train_seconds'], 0)} "
            f"| {_ms(row['train_step'])} | {_ms(row['inference'])} "
            f"| {row['train_peak_mb']:.0f} | {row['inference_peak_mb']:.0f} "
            f"| {_cell(row.get('average_drop'), signed=True)} |"
        )
    tasks = record["tasks"]
    lines += ["", "| T | model | " + " | ".join(_header_cells(tasks)) + " |", "|---|---|" + "---|" * len(tasks)]
    for row in record["rows"]:
        cells = [_cell(row["values"].get(task)) for task in tasks]
        lines.append(f"| {row['count']} | {row['label']} | " + " | ".join(cells) + " |")
    first = record["rows"][0]
    lines += [
        "",
        _seeds_note(record) + " Values: table units (mIoU and F-measures x100). Avg. drop %: mean over the T "
        "tasks of 100 * s * (single - multi) / single against the single-task networks of the same seed, positive "
        "= worse. Single task: the sum of T networks (parameters, training time and step, inference one after "
        "another); its training peak memory is the largest network's.",
        f"Times: the seed-0 networks, one thread, median (range) of {first['inference']['repeats']} repeats after "
        f"a warm-up, measured in this one run; inference: batch {s['measure_batch']}, float32; training step: "
        f"batch {s['batch_size']}, the runs' precision. Peak memory = peak resident set ({first['memory_source']}) "
        f"above the process before the model was built. Train s: the runs' wall time over seeds, several runs side "
        f"by side.",
        f"Protocols: {record['protocols']}.", "",
    ]
    specs_by_count = {str(count): dataset_tasks_by_name(tasks[:count]) for count in record["counts"]}
    for count, comparisons in record["comparisons"].items():
        lines += difference_lines(comparisons, ROW_LABELS, specs_by_count[count], f"### T = {count}: paired "
                                  "differences")
    lines += [*_convergence_lines(record),
              f"Wall time {record['time']['seconds'] / 60:.1f} min ({_actions(record)}).", ""]
    return "\n".join(lines)


def _actions(record: Mapping[str, Any]) -> str:
    counts: dict[str, int] = {}
    for run in record["runs"].values():
        counts[run["action"]] = counts.get(run["action"], 0) + 1
    return ", ".join(f"{n} runs {action}" for action, n in counts.items())


def labels_markdown(record: Mapping[str, Any]) -> str:
    """The labels study as markdown: per labelled fraction, every metric and the drops, each with its interval,
    and each fraction against the fully labelled TSN of the same seeds."""
    s, tasks, partial = record["settings"], record["tasks"], record["partial"]
    lines = [
        f"## Partially labelled TSN on {s['dataset']}: {', '.join(partial)} labelled on a fraction of the "
        f"{s['train_images']} training scenes ({len(tasks)} tasks, {s['steps']} steps of {s['batch_size']}, "
        f"{len(record['seeds'])} seeds)", "",
        "| labelled fraction | " + " | ".join(_header_cells(tasks))
        + " | avg. drop % ↓ | drop, thinned tasks | drop, other tasks |",
        "|---|" + "---|" * (len(tasks) + 3),
        "| single task (all labelled) | " + " | ".join(_cell(record["single_task"][t]) for t in tasks)
        + " | - | - | - |",
    ]
    for row in record["rows"]:
        cells = [_cell(row["values"][t]) for t in tasks]
        lines.append(f"| {row['fraction']:g} | " + " | ".join(cells) + f" | {_cell(row['average_drop'], signed=True)} "
                     f"| {_cell(row['partial_drop'], signed=True)} | {_cell(row['other_drop'], signed=True)} |")
    lines += ["", _seeds_note(record) + " Drops against the fully labelled single-task networks of the same seed, "
              "positive = worse.", "",
              "Against the fully labelled TSN (paired, same seeds; points of drop, positive = worse with fewer "
              "labels):", ""]
    for row in record["rows"]:
        for name, difference in row.get("versus_full", {}).items():
            label = name.replace("_", " ").replace("partial", "thinned tasks'").replace("other", "other tasks'")
            lines.append(f"* fraction {row['fraction']:g}, {label}: {verdict(difference)}.")
    lines += ["", f"Protocols: {record['protocols']}.",
              f"Wall time {record['time']['seconds'] / 60:.1f} min ({_actions(record)}).", ""]
    return "\n".join(lines)


def tasks_figure(record: Mapping[str, Any], path: Path) -> None:
    """Average drop (mean and 95 % interval over seeds), parameters, and all-task inference time (median and
    range of the repeats) against ``T``."""
    from matplotlib.figure import Figure  # slow to import; only the figures need it

    figure = Figure(figsize=(13, 3.8), layout="constrained")
    drop, params, speed = figure.subplots(1, 3)
    counts = record["counts"]
    for index, kind in enumerate(ARCHITECTURES):
        rows = [row for row in record["rows"] if row["architecture"] == kind]
        style = {"color": COLORS[kind], "marker": "o", "label": ARCHITECTURE_LABELS[kind], "capsize": 3}
        if kind != "single_task":
            shift = [count + 0.08 * (index - 1.5) for count in counts]  # the two curves' bars side by side
            drop.errorbar(shift, [row["average_drop"]["mean"] for row in rows],
                          yerr=[half_width(row["average_drop"]) for row in rows], **style)
        params.plot(counts, [row["parameters"] / 1e6 for row in rows], color=COLORS[kind], marker="o",
                    label=ARCHITECTURE_LABELS[kind])
        medians = [1000 * row["inference"]["seconds"] for row in rows]
        speed.errorbar(counts, medians, yerr=[[m - 1000 * row["inference"]["min"] for m, row in zip(medians, rows,
                                                                                                   strict=True)],
                                              [1000 * row["inference"]["max"] - m for m, row in zip(medians, rows,
                                                                                                   strict=True)]],
                       **style)
    drop.axhline(0, color="gray", linewidth=0.8)
    n = len(record["seeds"])
    for axis, title in ((drop, f"average drop % vs single task (lower is better), 95 % CI, {n} seeds"),
                        (params, "parameters (M)"),
                        (speed, f"all-task inference, ms per batch of {record['settings']['measure_batch']} "
                                "(median, range)")):
        axis.set_xlabel("tasks T")
        axis.set_xticks(counts)
        axis.set_title(title, fontsize=9)
        axis.grid(alpha=0.3)
    drop.legend(fontsize=9)
    save(figure, path)


def labels_figure(record: Mapping[str, Any], path: Path) -> None:
    """Against the labelled fraction, mean and 95 % interval over seeds: the drops against the single-task networks
    (left) and the paired change against the fully labelled TSN of the same seeds (right: the comparison that does
    not carry the single-task networks' scatter)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    drops, paired = figure.subplots(1, 2)
    rows = sorted(record["rows"], key=lambda row: row["fraction"])
    fractions = [row["fraction"] for row in rows]
    partial = ", ".join(record["partial"])
    zero = {"mean": 0.0, "half_width": 0.0}  # the fully labelled TSN against itself

    def series(axis: Any, values: Sequence[Mapping[str, Any]], **style: Any) -> None:
        axis.errorbar(fractions, [v["mean"] for v in values], yerr=[half_width(v) for v in values], capsize=3, **style)

    series(drops, [row["average_drop"] for row in rows], marker="o", color="black",
           label=f"average drop, all {len(record['tasks'])} tasks")
    for task in record["partial"]:
        series(drops, [row["drops"][task] for row in rows], marker=".", linestyle="--", label=f"{task} drop")
    if rows and rows[0]["other_drop"] is not None:
        series(drops, [row["other_drop"] for row in rows], marker=".", linestyle=":",
               label="mean drop, fully labelled tasks")
    styles = {"average_drop": ("average drop", "o", "-", "black"), "partial_drop": ("thinned tasks", ".", "--",
              "tab:orange"), "other_drop": ("fully labelled tasks", ".", ":", "tab:green")}
    for name, (label, marker, line, color) in styles.items():
        if any(name in row.get("versus_full", {}) for row in rows):
            series(paired, [row.get("versus_full", {}).get(name, zero) for row in rows], marker=marker,
                   linestyle=line, color=color, label=label)
    seeds = len(record["seeds"])
    for axis, title, ylabel in (
        (drops, f"against the single-task networks, 95 % CI over {seeds} seeds", "drop %"),
        (paired, f"against the fully labelled TSN, paired 95 % CI over {seeds} seeds", "change in drop, points"),
    ):
        axis.set_title(title, fontsize=9)
        axis.set_xscale("log")
        axis.set_xticks(fractions, [f"{f:g}" for f in fractions])
        axis.set_xlabel(f"labelled fraction of {partial}")
        axis.set_ylabel(ylabel)
        axis.axhline(0, color="gray", linewidth=0.8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    save(figure, path)


__all__ = ["tasks_markdown", "labels_markdown", "tasks_figure", "labels_figure", "curves_figure"]
