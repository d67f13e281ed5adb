"""The table of ``tsn reproduce``: per seed, over seeds (mean, sd, 95 % interval), paired comparisons, markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tsn.dataset_catalog import dataset_tasks
from tsn.studies.seeds import compare_rows, convergence, headline_curve, summarize_rows
from tsn.studies.statistics import excludes_zero, interval_text, verdict

__all__ = ["ROW_LABELS", "COMPARISONS", "seed_table", "summarize_table", "paired_comparisons", "protocol_of",
           "protocol_text", "single_task_convergence", "table_markdown", "difference_lines"]

ROW_LABELS = {"single_task": "Single task", "multi_head": "Multi-head", "tsn": "TSN"}
COMPARISONS = {"tsn_vs_multi_head": ("tsn", "multi_head"), "tsn_vs_single_task": ("tsn", "single_task"),
               "multi_head_vs_single_task": ("multi_head", "single_task")}
"""Paired comparisons of every table: name -> (network a, network b); differences are ``a - b``."""


def _row(kind: str, records: Sequence[Mapping[str, Any]], runs: Sequence[str]) -> dict[str, Any]:
    from tsn.evaluation.tables import table_values

    values: dict[str, float] = {}
    for record in records:
        values.update(table_values(record))
    return {
        "label": ROW_LABELS[kind],
        "values": values,
        "parameters": sum(int(record["checkpoint"]["parameters"]) for record in records),
        "runs": list(runs),
    }


def seed_table(dataset: str, records: Mapping[str, Mapping[str, Any]], runs: Sequence[Any]) -> dict[str, Any]:
    """One seed's rows from its runs' evaluation records (``records`` keyed by run key): values in table units,
    parameters (single task: the sum over tasks), and for the multi-task rows the per-task drops and average drop
    against that seed's single-task row."""
    from tsn.evaluation.tables import compare_with_baseline

    specs = dataset_tasks(dataset)
    rows = {}
    for kind in ROW_LABELS:
        keys = [run.key for run in runs if run.kind == kind]
        rows[kind] = _row(kind, [records[key] for key in keys], keys)
    for kind in ("multi_head", "tsn"):
        comparison = compare_with_baseline(rows[kind]["values"], rows["single_task"]["values"], specs)
        rows[kind].update(drops=comparison["drops"], average_drop=comparison["average_drop"])
    return {"rows": rows}


def paired_comparisons(rows: Mapping[str, Sequence[Mapping[str, Any]]], tasks: Sequence[str]) -> dict[str, Any]:
    """:data:`COMPARISONS` over the per-seed rows of each network (``rows[kind][i]``: seed ``i``). Against the
    single-task networks the average-drop comparison is the network's own average drop (it is already a paired
    difference against them)."""
    from tsn.studies.statistics import summarize

    result = {}
    for name, (a, b) in COMPARISONS.items():
        comparison = compare_rows(rows[a], rows[b], tasks)
        if b == "single_task":
            drop = summarize([row["average_drop"] for row in rows[a]])
            comparison["average_drop"] = {**drop, "excludes_zero": excludes_zero(drop)}
        result[name] = comparison
    return result


def summarize_table(dataset: str, per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """The table over seeds: each row's values, drops and average drop summarised, and the paired comparisons."""
    seeds = sorted(per_seed)
    tasks = [spec.name for spec in dataset_tasks(dataset)]
    by_kind = {kind: [per_seed[seed]["rows"][kind] for seed in seeds] for kind in ROW_LABELS}
    rows = {}
    for kind, seed_rows in by_kind.items():
        first = seed_rows[0]
        rows[kind] = {"label": first["label"], "parameters": first["parameters"], "runs": first["runs"],
                      **summarize_rows(seed_rows)}
    return {"seeds": seeds, "tasks": tasks, "rows": rows, "comparisons": paired_comparisons(by_kind, tasks)}


def single_task_convergence(run_dirs: Mapping[str, Sequence[Path]]) -> dict[str, Any]:
    """Per task (``run_dirs``: task -> that task's single-task run of every seed), the validation curves and the
    :func:`~tsn.studies.seeds.convergence` check of their last fifth."""
    result = {}
    for task, dirs in run_dirs.items():
        curves = [headline_curve(path, task) for path in dirs]
        result[task] = {"curves": [[list(point) for point in curve] for curve in curves],
                        "check": convergence(curves)}
    return result


def protocol_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The scoring protocol of an evaluation record for a results file: the evaluator's ``protocol`` field where
    it records one (``{"name": ...}``), and always each task's own protocol (``tasks``)."""
    named = record.get("protocol")
    entry: dict[str, Any] = dict(named) if isinstance(named, Mapping) else ({"name": named} if named else {})
    entry["tasks"] = {task: value["protocol"] for task, value in record.get("protocols", {}).items()
                      if isinstance(value, Mapping) and "protocol" in value}
    return entry


def protocol_text(record: Mapping[str, Any]) -> str:
    """How a run was scored: the evaluation's protocol (its ``protocol`` field where the evaluator records one),
    each task's protocol, the input size."""
    parts = [f"{task} {entry['protocol']}" for task, entry in record.get("protocols", {}).items()
             if isinstance(entry, dict) and "protocol" in entry]
    named = record.get("protocol")
    if isinstance(named, Mapping):
        named = named.get("name") or ", ".join(f"{key} {value}" for key, value in named.items())
    height, width = record["input_size"]
    head = f"protocol {named}: " if named else ""
    return head + ", ".join(parts) + f"; input {height} x {width} px; scored at the original image size"


def _header(specs: Sequence[Any]) -> list[str]:
    return [f"{s.name} {s.metric} {'↑' if s.higher_is_better else '↓'}" for s in specs]


def difference_lines(comparisons: Mapping[str, Any], labels: Mapping[str, str], specs: Sequence[Any],
                     title: str = "") -> list[str]:
    """The paired differences as a markdown table (``†``: the 95 % interval excludes zero) and one sentence per
    comparison of the average drop."""
    header = ["difference (same seeds)", *(f"{s.name} {'↑' if s.higher_is_better else '↓'}" for s in specs),
              "Avg. drop (points) ↓"]
    lines = [title, ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sentences = []
    for name, comparison in comparisons.items():
        a, b = name.split("_vs_")
        label = f"{labels[a]} - {labels[b]}"
        cells = [_marked(comparison["values"][s.name]) for s in specs]
        drop = comparison.get("average_drop")
        cells.append(_marked(drop) if drop else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if drop:
            what = "average drop" if b == "single_task" else "average-drop difference"
            sentences.append(f"* {labels[a]} vs {labels[b]}, {what}: {verdict(drop)}.")
    return [*lines, "", "Differences: mean ± half-width of the paired 95 % t interval over the seeds, in table "
            "units; † = the interval excludes zero. Avg. drop points: positive = the first network is worse.", "",
            *sentences, ""]


def _marked(summary: Mapping[str, Any]) -> str:
    return interval_text(summary, signed=True) + (" †" if excludes_zero(summary) else "")


def _convergence_lines(checks: Mapping[str, Any]) -> list[str]:
    rows = [(task, entry["check"]) for task, entry in checks.items() if entry.get("check")]
    if not rows:
        return []
    lines = ["Single-task validation curves (val split), last fifth of training against the spread over seeds:",
             "", "| task | steps | change (mean ± 95 %) | sd of final value | flattened |", "|---|---|---|---|---|"]
    for task, check in rows:
        lines.append(f"| {task} | {check['from_step']} → {check['to_step']} | "
                     f"{interval_text(check['change'], signed=True)} | {check['final']['std']:.2f} | "
                     f"{'yes' if check['flattened'] else 'no'} |")
    return [*lines, ""]


def table_markdown(table: Mapping[str, Any]) -> str:
    """The reproduction table as markdown: mean ± 95 % interval per cell, paired differences, protocol notes."""
    specs = dataset_tasks(table["dataset"], table["tasks"])
    n = len(table["seeds"])
    header = ["Model", *_header(specs), "Avg. drop % ↓", "Parameters"]
    lines = [f"## {table['dataset']} ({table['split']} split, budget {table['budget']}, {n} seeds)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["rows"].values():
        cells = [interval_text(row["values"][s.name]) for s in specs]
        drop = row.get("average_drop")
        cells.append(interval_text(drop, signed=True) if drop else "-")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {row['parameters']:,} |")
    minutes = table["time"]["seconds"] / 60
    actions: dict[str, int] = {}
    for run in table["runs"].values():
        actions[run["action"]] = actions.get(run["action"], 0) + 1
    lines += [
        "",
        f"Cells: mean ± half-width of the 95 % t interval over {n} seeds ({', '.join(map(str, table['seeds']))}; "
        "sd and every seed's value in table.json). Values: mIoU and odsF x100, normals mean angular error in "
        "degrees, depth RMSE in metres. Parameters: the single-task row sums its networks. Avg. drop %: the "
        "paper's sign, positive = worse than single task, computed per seed against that seed's single-task "
        "networks.",
        "",
        *difference_lines(table["comparisons"], ROW_LABELS, specs),
        *_convergence_lines(table.get("convergence", {})),
        f"Protocols: {table['protocols']}.",
        f"Runs: {', '.join(f'{count} {action}' for action, count in actions.items())}; wall time {minutes:.1f} min.",
        "",
    ]
    return "\n".join(lines)
