"""``tsn reproduce``: the plan of runs, the table, reuse of finished runs, resume of interrupted ones, errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tsn.cli import main
from tsn.dataset_catalog import dataset_tasks
from tsn.errors import TsnError
from tsn.studies.reproduce import plan_runs, reproduce, run_status, train_or_reuse

TINY = (
    "max_steps=1", "batch_size=2", "data.options={size: 64, length: 4}", "data.num_workers=0", "tensorboard=false",
    "model.decoder_channels=[8, 8, 8, 8, 8]", "data.train_options={}",
    "data.val_options={}",
)
"""A budget of one optimizer step on four 64 px scenes per split (the budget's split lengths undone)."""
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

    synthetic = plan_runs("synthetic", "quick", seeds=2)
    assert [run.kind for run in synthetic] == (["single_task"] * 6 + ["multi_head", "tsn"]) * 2
    assert [run.config.model.tasks for run in synthetic[:6]] == [(task,) for task in SYNTHETIC_TASKS]
    # seed-major: seed k's runs live in seed<k>/ and train with TrainConfig.seed = k, the rest of the recipe equal
    assert [(run.seed, run.config.seed) for run in synthetic] == [(0, 0)] * 8 + [(1, 1)] * 8
    assert synthetic[9].folder == "seed1/single_task-human_parts"
    assert dataclasses.replace(synthetic[0].config, seed=1) == synthetic[8].config
    # every run shares the encoder, decoder widths, data and recipe; only the model kind differs
    assert {(r.config.model.backbone, r.config.model.decoder_channels, r.config.data.size) for r in synthetic} == {
        ("resnet10t", (64, 32, 32, 16, 16), (64, 64))}
    assert {(r.config.epochs, r.config.data.train_options["length"]) for r in synthetic} == {(1, 512)}
    assert [synthetic[-2].config.model.arch, synthetic[-1].config.model.arch] == ["multi_head", "tsn"]
    assert synthetic[-1].config.model.tasks == tuple(SYNTHETIC_TASKS)
    # the recorded budget: 5 validated epochs; the single-task runs score their metric at each (their curves)
    full = plan_runs("synthetic")
    assert {(r.config.epochs, r.config.validation.every, r.config.batch_size, r.config.data.train_options["length"])
            for r in full} == {(5, 1, 8, 480)}  # 300 steps of 8
    assert [r.config.validation.metrics for r in full] == [True] * 6 + [False, False]
    with pytest.raises(TsnError, match="use --seeds"):
        plan_runs("synthetic", overrides=["seed=3"])


def _finished(run_dir) -> bool:
    return run_status(run_dir) == "finished"


def test_reproduce_three_seeds_resumes_after_ctrl_c_and_reuses_finished_seeds(tmp_path, capsys) -> None:
    from interrupt import alive, ctrl_c_when

    out = tmp_path / "repro"
    # long enough (30 steps, a checkpoint every 3) for Ctrl-C to catch a seed-1 run in the middle
    tiny = [*TINY, "data.train_options={length: 60}", "max_steps=30", "checkpoint_every=3"]
    argv = ["reproduce", "--dataset", "synthetic", "--out", str(out), "--seeds", "3", "--workers", "0", "--quiet",
            *(arg for item in tiny for arg in ("--set", item))]
    runs = plan_runs("synthetic", overrides=tiny, seeds=3)
    seed0 = [out / run.folder for run in runs if run.seed == 0]
    seed1 = [out / run.folder for run in runs if run.seed == 1]

    def seed0_done_and_seed1_running() -> bool:
        return all(map(_finished, seed0)) and any(run_status(d) == "interrupted" for d in seed1)

    # two jobs: the worker processes get one SIGTERM from the command, save and stop
    code, err, started = ctrl_c_when([*argv, "--jobs", "2"], seed0_done_and_seed1_running)
    assert code != 0 and "run the same command again" in err, err
    assert started and not [pid for pid in started if alive(pid)], "a worker outlived the interrupted command"
    before = {run.folder: run_status(out / run.folder) for run in runs}
    assert all(before[run.folder] == "finished" for run in runs if run.seed == 0)
    assert "interrupted" in before.values() and "finished" not in {before[r.folder] for r in runs if r.seed == 2}

    capsys.readouterr()
    assert main([*argv, "--jobs", "1"]) == 0  # the same command again
    assert "| TSN |" in capsys.readouterr().out
    table = json.loads((out / "table.json").read_text())
    expected = {"finished": "reused", "interrupted": "resumed", "new": "trained"}
    assert {folder: run["action"] for folder, run in table["runs"].items()} == {
        folder: expected[status] for folder, status in before.items()}
    assert {run["steps"] for run in table["runs"].values()} == {30}
    assert table["format"] == "tsn-reproduce" and table["split"] == "test" and table["tasks"] == SYNTHETIC_TASKS
    assert table["seeds"] == [0, 1, 2] and list(table["per_seed"]) == ["0", "1", "2"]

    # every cell: the mean, sd and t interval of the three seeds' own tables
    rows = table["rows"]
    assert list(rows) == ["single_task", "multi_head", "tsn"]
    for kind, row in rows.items():
        for task in SYNTHETIC_TASKS:
            per_seed = [table["per_seed"][str(seed)]["rows"][kind]["values"][task] for seed in range(3)]
            cell = row["values"][task]
            assert cell["n"] == 3 and cell["values"] == per_seed
            assert cell["mean"] == pytest.approx(np.mean(per_seed))
            assert cell["std"] == pytest.approx(np.std(per_seed, ddof=1))
    evaluations = {folder: json.loads((out / folder / "evaluation.json").read_text()) for folder in table["runs"]}
    for seed in range(3):
        seed_rows = table["per_seed"][str(seed)]["rows"]
        for task in SYNTHETIC_TASKS:  # the single-task row collects each task from its own network
            headline = evaluations[f"seed{seed}/single_task-{task}"]["headline"]
            assert list(headline) == [task]
            assert seed_rows["single_task"]["values"][task] == headline[task]["table_value"]
        # average drop, paper sign, against the same seed's single-task networks
        for kind in ("multi_head", "tsn"):
            drops = []
            for spec in dataset_tasks("synthetic"):
                single, multi = seed_rows["single_task"]["values"][spec.name], seed_rows[kind]["values"][spec.name]
                drops.append(100 * (1 if spec.higher_is_better else -1) * (single - multi) / single)
            assert seed_rows[kind]["average_drop"] == pytest.approx(np.mean(drops))
    drops = [table["per_seed"][str(seed)]["rows"]["tsn"]["average_drop"] for seed in range(3)]
    assert rows["tsn"]["average_drop"]["values"] == pytest.approx(drops)
    single_sizes = [evaluations[f"seed0/single_task-{task}"]["checkpoint"]["parameters"] for task in SYNTHETIC_TASKS]
    assert rows["single_task"]["parameters"] == sum(single_sizes) > rows["tsn"]["parameters"]
    # paired comparisons on the same seeds
    versus = table["comparisons"]["tsn_vs_multi_head"]
    differences = [table["per_seed"][str(s)]["rows"]["tsn"]["values"]["depth"]
                   - table["per_seed"][str(s)]["rows"]["multi_head"]["values"]["depth"] for s in range(3)]
    assert versus["values"]["depth"]["values"] == pytest.approx(differences)
    assert set(table["comparisons"]) == {"tsn_vs_multi_head", "tsn_vs_single_task", "multi_head_vs_single_task"}
    # the single-task runs' validation curves (one point per epoch; the tiny budget ends inside the first)
    assert set(table["convergence"]) == set(SYNTHETIC_TASKS)
    assert all(len(curve) == 1 for entry in table["convergence"].values() for curve in entry["curves"])
    markdown = (out / "table.md").read_text()
    assert "3 seeds" in markdown and "| TSN |" in markdown and " ± " in markdown and "Avg. drop % ↓" in markdown
    assert "no difference detected at 3 seeds" in markdown or "95 % CI" in markdown

    # once more: nothing is trained or scored again, and fewer seeds reuse the first ones
    produced = sorted(p for p in out.rglob("*") if p.suffix in (".pt", ".json") and p.parent != out)
    stamps = {p: p.stat().st_mtime_ns for p in produced}
    two = reproduce("synthetic", out, overrides=tiny, seeds=2, jobs=1, workers=0, progress=False, log=lambda _: None)
    assert {p: p.stat().st_mtime_ns for p in produced} == stamps
    assert {run["action"] for run in two["runs"].values()} == {"reused"} and two["seeds"] == [0, 1]


def test_interrupted_run_is_resumed_and_other_recipes_refused(tmp_path) -> None:
    from tsn.training import train

    run = plan_runs("synthetic", overrides=[*TINY, "max_steps=2"])[-1]
    assert run.folder == "seed0/tsn"
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
        "no seeds": ["--dataset", "synthetic", "--seeds", "0"],
        "seed override": ["--dataset", "synthetic", "--set", "seed=2"],
    }
    for case, argv in cases.items():
        assert main(["reproduce", "--out", str(tmp_path / "out"), *argv]) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("tsn reproduce: error:"), (case, err)
    assert not (tmp_path / "out").exists()
