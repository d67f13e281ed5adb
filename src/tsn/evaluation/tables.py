"""Tables of evaluation results: headline values in table units, the single-task baseline and the average drop,
paper-style markdown, and the record written to disk."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsn.dataset_catalog import dataset_tasks
from tsn.errors import TsnError
from tsn.tasks import TaskSpec, get_task
from tsn.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "RESULT_FORMAT",
    "SIGN_CONVENTION",
    "TableRow",
    "table_value",
    "table_values",
    "load_baseline",
    "baseline_protocols",
    "compare_with_baseline",
    "add_baseline",
    "markdown_table",
    "evaluation_markdown",
    "write_result",
]

RESULT_FORMAT = "tsn-evaluate"
"""``format`` field of an evaluation record (how ``--baseline`` recognises one)."""

SIGN_CONVENTION = (
    "average drop in the TSN paper's sign: 100 * s_t * (single - multi) / single averaged over tasks, "
    "positive = worse than the single-task baseline (the MTL survey's Delta_m has the opposite sign)"
)


# ------------------------------------------------------------------------------------------------- table values


def table_value(spec: TaskSpec, value: float) -> float:
    """A headline value in the paper's table units (``TaskSpec.table_scale``: x100 for mIoU, odsF; else as is)."""
    return spec.table_scale * float(value)


def table_values(record: Mapping[str, Any]) -> dict[str, float]:
    """The headline value of every task of an evaluation record, in table units."""
    return {task: float(entry["table_value"]) for task, entry in record["headline"].items()}


# ---------------------------------------------------------------------------------------------------- baselines


def _read_json(path: str | os.PathLike[str]) -> Any:
    from tsn.utils.parsing import parse_json, read_text_file  # UTF-8, bounded size and depth, one-line errors

    return parse_json(read_text_file(path, "baseline"), f"baseline {path}")


def _mapping_values(data: Mapping[str, Any], source: str) -> dict[str, float]:
    """``{task: headline}`` in table units; a fraction metric given <= 1 is read as a fraction and scaled."""
    values: dict[str, float] = {}
    for key, value in data.items():
        spec = get_task(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TsnError(f"baseline {source}: the value of {key!r} is {value!r}; give one number per task")
        values[spec.name] = table_value(spec, value) if abs(value) <= 1 else float(value)
    return values


def _baseline_values(data: Any, source: str) -> dict[str, float]:
    if isinstance(data, dict) and data.get("format") == RESULT_FORMAT:
        return table_values(data)
    if isinstance(data, dict) and isinstance(data.get("rows"), dict) and "single_task" in data["rows"]:
        return {task: float(value) for task, value in data["rows"]["single_task"]["values"].items()}
    if isinstance(data, dict) and data:
        return _mapping_values(data, source)
    raise TsnError(
        f"baseline {source} is neither a task -> value mapping, a `tsn evaluate` result nor a `tsn reproduce` table"
    )


def baseline_protocols(paths: Sequence[str | os.PathLike[str]]) -> list[str | None]:
    """The protocol each baseline file records (None for a plain ``{task: value}`` mapping or an older file)."""
    from tsn.evaluation.records import record_protocol

    found = []
    for path in paths:
        data = _read_json(path)
        found.append(record_protocol(data) if isinstance(data, dict) else None)
    return found


def load_baseline(paths: Sequence[str | os.PathLike[str]]) -> dict[str, float]:
    """Single-task headline values in table units, merged from one or more JSON files (later files win).

    Each file is a mapping ``{task: value}`` (the paper's table units such as ``{"semseg": 64.3, "normals":
    16.3}``; fractions <= 1 of mIoU / odsF are accepted too), a ``tsn evaluate`` result (e.g. of a single-task
    model: its headline values) or a ``tsn reproduce`` table (its ``single_task`` row).
    """
    values: dict[str, float] = {}
    for path in paths:
        values.update(_baseline_values(_read_json(path), str(path)))
    return values


def compare_with_baseline(
    values: Mapping[str, float], baseline: Mapping[str, float], specs: Sequence[TaskSpec]
) -> dict[str, Any]:
    """Per-task drops and their mean (TSN sign, :data:`SIGN_CONVENTION`) of ``values`` against ``baseline``.

    Both in the same units (table units). Only tasks in both count; ``missing`` lists evaluated tasks the baseline
    lacks. Returns ``values`` (the baseline's), ``drops``, ``average_drop``, ``delta_m``, ``tasks``, ``missing``,
    ``sign``.
    """
    from tsn.metrics.multitask import task_drops

    common = [spec for spec in specs if spec.name in baseline and spec.name in values]
    if not common:
        raise TsnError(
            f"the baseline has none of the evaluated tasks ({', '.join(s.name for s in specs)}); "
            "give single-task scores of those tasks"
        )
    drops = task_drops({s.name: values[s.name] for s in common}, {s.name: baseline[s.name] for s in common}, common)
    average = float(np.mean(list(drops.values())))
    return {
        "values": {spec.name: float(baseline[spec.name]) for spec in common},
        "drops": drops,
        "average_drop": average,
        "delta_m": -average,
        "tasks": [spec.name for spec in common],
        "missing": [spec.name for spec in specs if spec.name not in baseline],
        "sign": SIGN_CONVENTION,
    }


def add_baseline(
    record: dict[str, Any], baseline: Mapping[str, float], sources: Sequence[str | os.PathLike[str]] = ()
) -> dict[str, Any]:
    """``record`` (an evaluation record) with its ``baseline`` entry: :func:`compare_with_baseline` of its
    headline values against ``baseline`` (table units, e.g. from :func:`load_baseline` of ``sources``). A source
    scored under another protocol than ``record`` is refused in one line."""
    from tsn.evaluation.records import check_same_protocol, record_protocol

    check_same_protocol([record_protocol(record), *baseline_protocols(sources)], "an average drop against a baseline")
    specs = dataset_tasks(record["dataset"]["name"], list(record["headline"]))
    comparison = compare_with_baseline(table_values(record), baseline, specs)
    record["baseline"] = {"source": [str(p) for p in sources], **comparison}
    return record


# ------------------------------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class TableRow:
    """One row of a paper-style table: headline values in table units, optional average drop and size."""

    name: str
    values: Mapping[str, float]
    average_drop: float | None = None
    parameters: int | None = None


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(
    rows: Sequence[TableRow], specs: Sequence[TaskSpec], metrics: Mapping[str, str] | None = None
) -> str:
    """The paper's table as markdown: one column per task (arrow = better direction), then the average drop %
    (and the parameter count when a row has one). ``metrics``: task -> the headline's name where a protocol
    reports another one than the task's (the InvPT family's saliency maxF)."""
    with_params = any(row.parameters is not None for row in rows)
    named = dict(metrics or {})
    header = ["Model", *(f"{s.name} {named.get(s.name, s.metric)} {'↑' if s.higher_is_better else '↓'}" for s in specs),
              "Avg. drop % ↓"]
    header += ["Parameters"] if with_params else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.name, *(_cell(row.values.get(s.name)) for s in specs), _cell(row.average_drop)]
        if with_params:
            cells.append("-" if row.parameters is None else f"{row.parameters:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluation_markdown(record: Mapping[str, Any]) -> str:
    """A ``tsn evaluate`` record as markdown: the table (with the baseline row), image counts and protocols."""
    specs = dataset_tasks(record["dataset"]["name"], list(record["headline"]))
    baseline = record.get("baseline")
    if "checkpoint" in record:
        checkpoint = record["checkpoint"]
        name, parameters = f"{Path(checkpoint['path']).name} ({checkpoint['config']['arch']})", checkpoint["parameters"]
    else:
        source = record["predictions_from"]
        name, parameters = f"predictions {Path(source['path']).name} ({source['convention']})", None
    rows = [TableRow(name, table_values(record), baseline["average_drop"] if baseline else None, parameters)]
    if baseline:
        rows.append(TableRow("single-task baseline", baseline["values"]))
    dataset = record["dataset"]
    protocol = record.get("protocol") or {"name": "astmt", "title": "recorded before protocols were named"}
    size = record.get("input_size")
    network = f", input {size[0]} x {size[1]} px" if size else ""
    metrics = {task: entry["metric"] for task, entry in record["headline"].items()}
    lines = [f"## {dataset['name']} {dataset['split']}{network}, protocol {protocol['name']}", "",
             markdown_table(rows, specs, metrics)]
    if baseline:
        drops = ", ".join(f"{task} {drop:+.2f}" for task, drop in baseline["drops"].items())
        missing = f" (no baseline for {', '.join(baseline['missing'])})" if baseline["missing"] else ""
        lines += [f"Drop % per task: {drops}{missing}. Sign: {baseline['sign']}.", ""]
    reported = record.get("reported") or {}  # records before protocols were named reported the headline only
    scores = [
        f"- {task}: " + ", ".join(f"{key} {record['tasks'][task][key]:.4f}" for key in reported[task])
        for task in record["headline"] if task in reported and task in record.get("tasks", {})
    ]
    if scores:  # the numbers this dataset's literature reports, beside the headline
        lines += ["Reported metrics:", *scores, ""]
    counts = ", ".join(f"{task} {n}" for task, n in record["n_images"].items())
    lines += [f"Images scored: {counts}.", ""]
    for task, entry in record["protocols"].items():
        if isinstance(entry, dict):
            detail = f", image set: {entry['image_set']}" if "image_set" in entry else ""
            lines.append(f"- {task}: protocol {entry['protocol']}{detail}")
    lines += [f"- {record['protocols']['scoring']}", f"- protocol {protocol['name']}: {protocol['title']}", ""]
    return "\n".join(lines)


def write_result(record: Mapping[str, Any], path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the record as JSON at ``path`` and its markdown beside it (same name, ``.md``), both atomically."""
    json_path = Path(path)
    markdown_path = json_path.with_suffix(".md")
    atomic_write_json(json_path, record)
    atomic_write_text(markdown_path, evaluation_markdown(record))
    return json_path, markdown_path
