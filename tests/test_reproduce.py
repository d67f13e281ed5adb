"""``tsn reproduce``: the plan of runs, the table, reuse of finished runs, resume of interrupted ones, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tsn.cli import main
from tsn.datasets import dataset_tasks
from tsn.errors import TsnError
from tsn.studies.reproduce import plan_runs, reproduce, run_status, train_or_reuse

TINY = (
    "max_steps=1", "batch_size=2", "data.options={size: 64, length: 4}", "data.num_workers=0", "tensorboard=false",
    "model.decoder_channels=[8, 8, 8, 8, 8]", "validation.metrics=false",
)
"""A budget of one optimizer step on four 64 px scenes per split."""
SYNTHETIC_TASKS = [spec.name for spec in dataset_tasks("synthetic")]


pytestmark = pytest.mark.usefixtures("one_thread_private_cache")


def test_plans_use_the_presets_and_budgets() -> None:
    pascal = plan_runs("pascal_context")
    assert [run.key for run in pascal] == [
        "single_task-semseg", "single_task-human_parts", "single_task-edges", "single_task-normals",
        "single_task-saliency", "multi_head", "tsn",
    ]
    assert [run.config.name for run in pascal][-3:] == ["single_r18_pascal.saliency", "multihead_r18_pascal",
                                                         "tsn_r18_pascal"]
    assert {run.config.epochs for run in pascal} == {300} and pascal[-1].config.model.pretrained
    assert pascal[0].config.model.arch == "single_task" and pascal[0].config.model.tasks == ("semseg",)
    assert [run.key for run in plan_runs("nyud", "quick")][-1] == "tsn"
    assert {run.config.epochs for run in plan_runs("nyud", "quick")} == {5}

    synthetic = plan_runs("synthetic", "quick", overrides=["seed=3"])
    assert [run.kind for run in synthetic] == ["single_task"] * 6 + ["multi_head", "tsn"]
    assert [run.config.model.tasks for run in synthetic[:6]] == [(task,) for task in SYNTHETIC_TASKS]
    # every run shares the encoder, decoder widths, data and recipe; only the model kind differs
    assert {(r.config.model.backbone, r.config.model.decoder_channels, r.config.data.size) for r in synthetic} == {
        ("resnet10t", (64, 32, 32, 16, 16), (64, 64))}
    assert {(r.config.epochs, r.config.data.train_options["length"], r.config.seed) for r in synthetic} == {(1, 512, 3)}
    assert [synthetic[-2].config.model.arch, synthetic[-1].config.model.arch] == ["multi_head", "tsn"]
    assert synthetic[-1].config.model.tasks == tuple(SYNTHETIC_TASKS)


def test_reproduce_synthetic_writes_the_table_and_reuses_finished_runs(tmp_path, capsys) -> None:
    out = tmp_path / "repro"
    table = reproduce("synthetic", out, overrides=TINY, jobs=2, workers=0, progress=False)
    assert table["format"] == "tsn-reproduce" and table["split"] == "test" and table["tasks"] == SYNTHETIC_TASKS
    assert {run["action"] for run in table["runs"].values()} == {"trained"}
    rows = table["rows"]
    assert list(rows) == ["single_task", "multi_head", "tsn"]
    evaluations = {key: json.loads((out / key / "evaluation.json").read_text()) for key in table["runs"]}
    for key, record in evaluations.items():
        assert record["dataset"]["split"] == "test" and record["input_size"] == [64, 64], key
    # the single-task row collects each task from its own network, and sums their sizes
    for task in SYNTHETIC_TASKS:
        headline = evaluations[f"single_task-{task}"]["headline"]
        assert list(headline) == [task]
        assert rows["single_task"]["values"][task] == headline[task]["table_value"]
    single_sizes = [evaluations[f"single_task-{task}"]["checkpoint"]["parameters"] for task in SYNTHETIC_TASKS]
    assert rows["single_task"]["parameters"] == sum(single_sizes)
    assert rows["tsn"]["parameters"] == evaluations["tsn"]["checkpoint"]["parameters"] < sum(single_sizes)
    # average drop, paper sign: mean of 100 * s * (single - multi) / single
    for kind in ("multi_head", "tsn"):
        drops = []
        for spec in dataset_tasks("synthetic"):
            single, multi = rows["single_task"]["values"][spec.name], rows[kind]["values"][spec.name]
            drops.append(100 * (1 if spec.higher_is_better else -1) * (single - multi) / single)
        assert rows[kind]["average_drop"] == pytest.approx(np.mean(drops))
    markdown = (out / "table.md").read_text()
    assert "| TSN |" in markdown and "| Single task |" in markdown and "Avg. drop % ↓" in markdown
    assert json.loads((out / "table.json").read_text())["rows"] == json.loads(json.dumps(rows))

    # the second call trains and evaluates nothing: every checkpoint and evaluation file stays untouched
    produced = sorted(p for p in out.rglob("*") if p.suffix in (".pt", ".json") and p.parent != out)
    stamps = {p: p.stat().st_mtime_ns for p in produced}
    capsys.readouterr()
    assert main(["reproduce", "--dataset", "synthetic", "--out", str(out), "--jobs", "1", "--workers", "0", "--quiet",
                 *(arg for item in TINY for arg in ("--set", item))]) == 0
    assert "| TSN |" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in produced} == stamps
    again = json.loads((out / "table.json").read_text())
    assert {run["action"] for run in again["runs"].values()} == {"reused"} and again["rows"] == table["rows"]


def test_interrupted_run_is_resumed_and_other_recipes_refused(tmp_path) -> None:
    from tsn.training import train

    run = plan_runs("synthetic", overrides=[*TINY, "max_steps=2"])[-1]
    run_dir = tmp_path / "tsn"
    assert run_status(run_dir) == "new"
    train(run.config, run_dir, stop_at_step=1, progress=False)
    assert run_status(run_dir) == "interrupted"
    summary = train_or_reuse(run, run_dir, progress=False)
    assert summary["action"] == "resumed" and summary["step"] == 2 and run_status(run_dir) == "finished"
    assert train_or_reuse(run, run_dir, progress=False)["action"] == "reused"
    other = plan_runs("synthetic", overrides=[*TINY, "max_steps=3"])[-1]
    with pytest.raises(TsnError, match="another config"):
        train_or_reuse(other, run_dir, progress=False)


def test_errors_are_one_line(tmp_path, capsys) -> None:
    cases = {
        "missing dataset": ["--dataset", "pascal_context", "--data-root", str(tmp_path / "nowhere")],
        "unknown dataset": ["--dataset", "coco"],
        "bad override": ["--dataset", "synthetic", "--set", "epochs=many"],
    }
    for case, argv in cases.items():
        assert main(["reproduce", "--out", str(tmp_path / "out"), *argv]) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tsn reproduce: error:"), (case, err)
    assert not (tmp_path / "out").exists()
