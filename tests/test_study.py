"""``tsn study tasks`` / ``tsn study labels``: plans, end-to-end results, resume and reuse, one-line errors."""

from __future__ import annotations

import json

import pytest

from tsn.cli import main
from tsn.errors import TsnError
from tsn.studies.scaling import (
    StudySettings,
    default_counts,
    plan_labels_study,
    plan_tasks_study,
    run_labels_study,
    run_tasks_study,
)

pytestmark = pytest.mark.usefixtures("one_thread_private_cache")

TINY = StudySettings(dataset="synthetic", tasks=("semseg", "depth"), counts=(2,), steps=2, batch_size=2,
                     train_images=4, test_images=4, measure_batch=2, measure_repeats=1,
                     overrides=("model.decoder_channels=[8, 8, 8, 8, 8]",))
"""Two optimizer steps of two 64 px scenes, four scenes per split, a narrow decoder."""


def _cli_tiny() -> list[str]:
    return ["--dataset", "synthetic", "--tasks", "semseg,depth", "--budget", "2", "--batch-size", "2",
            "--train-images", "4", "--test-images", "4", "--measure-batch", "2", "--measure-repeats", "1",
            "--jobs", "1", "--quiet",
            "--set", "model.decoder_channels=[8, 8, 8, 8, 8]"]


def test_counts_settings_and_plans() -> None:
    assert default_counts(13) == (2, 4, 8, 12) and default_counts(12) == (2, 4, 8, 12)
    assert default_counts(6) == (2, 4, 6) and default_counts(2) == (2,)
    full = StudySettings()
    assert full.dataset == "synthetic_full" and full.counts == (2, 4, 8, 12) and full.family == "r10t_synthetic"
    runs = plan_tasks_study(full)
    singles = [run for run in runs if run.kind == "single_task"]
    # one single-task network per task of the largest T, reused by every T; nested task lists
    assert [run.config.model.tasks for run in singles] == [(task,) for task in full.tasks[:12]]
    assert [run.key for run in runs[12:]] == [f"{kind}-T{t}" for t in (2, 4, 8, 12) for kind in ("multi_head", "tsn")]
    for run in runs[12:]:
        count = int(run.key.rpartition("T")[2])
        assert run.config.model.tasks == full.tasks[:count]
    # the same budget, data and recipe everywhere: only the model differs
    assert {(r.config.max_steps, r.config.batch_size, r.config.data.dataset, r.config.data.size,
             r.config.schedule, r.config.optim.lr) for r in runs} == {
        (80, 8, "synthetic_full", (64, 64), "all_tasks", 2e-3)}
    assert {r.config.model.arch for r in runs} == {"single_task", "multi_head", "tsn"}
    assert dict(runs[-1].config.model.task_channels)["material"] == 5

    labels = plan_labels_study(full, 4, ("semseg", "normals"), (1, 0.25))
    assert [run.key for run in labels] == [*(f"single_task-{t}" for t in full.tasks[:4]), "tsn-T4",
                                           "tsn-T4-semseg0.25-normals0.25"]
    assert labels[4].config == runs[15].config  # the fully labelled TSN is the tasks study's tsn-T4
    assert dict(labels[-1].config.label_fractions) == {"semseg": 0.25, "normals": 0.25}

    with pytest.raises(TsnError, match="--counts must rise"):
        StudySettings(counts=(4, 2))
    with pytest.raises(TsnError, match="not among the study's first 2 tasks"):
        plan_labels_study(full, 2, ("depth",), (0.5,))


def test_studies_run_resume_and_reuse(tmp_path, capsys) -> None:
    from tsn.training import train

    out = tmp_path / "study"
    settings = TINY
    # an interrupted run: one of its two steps done
    tsn_run = next(run for run in plan_tasks_study(settings) if run.key == "tsn-T2")
    train(tsn_run.config, out / "runs" / "tsn-T2", stop_at_step=1, progress=False)

    record = run_tasks_study(settings, out, jobs=1, progress=False, log=lambda line: None)
    actions = {key: run["action"] for key, run in record["runs"].items()}
    assert actions == {"single_task-semseg": "trained", "single_task-depth": "trained", "multi_head-T2": "trained",
                       "tsn-T2": "resumed"}
    assert {run["steps"] for run in record["runs"].values()} == {2}
    rows = {row["architecture"]: row for row in record["rows"]}
    assert list(rows) == ["single_task", "multi_head", "tsn"] and {r["count"] for r in rows.values()} == {2}
    single = rows["single_task"]
    assert single["parameters"] > rows["multi_head"]["parameters"] > rows["tsn"]["parameters"]
    for row in rows.values():
        assert set(row["values"]) == {"semseg", "depth"}
        assert row["inference_seconds"] > 0 and row["train_step_seconds"] > 0
        assert row["train_peak_mb"] > 0 and row["inference_peak_mb"] > 0
    # the average drop, the paper's sign: mIoU higher is better, depth RMSE lower is better
    tsn = rows["tsn"]
    expected = [100 * (single["values"]["semseg"] - tsn["values"]["semseg"]) / single["values"]["semseg"],
                -100 * (single["values"]["depth"] - tsn["values"]["depth"]) / single["values"]["depth"]]
    assert tsn["average_drop"] == pytest.approx(sum(expected) / 2)
    assert json.loads((out / "tasks.json").read_text())["rows"] == json.loads(json.dumps(record["rows"]))
    assert "| 2 | TSN |" in (out / "tasks.md").read_text()
    assert (out / "study_tasks.png").read_bytes()[:4] == b"\x89PNG"

    # run again through the command: nothing is trained, scored or measured again
    produced = sorted(p for p in (out / "runs").rglob("*") if p.suffix in (".pt", ".json"))
    produced += sorted((out / "measurements").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in produced}
    capsys.readouterr()
    assert main(["study", "tasks", "--out", str(out), "--counts", "2", *_cli_tiny()]) == 0
    assert "| 2 | TSN |" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in produced} == stamps
    again = json.loads((out / "tasks.json").read_text())
    assert {run["action"] for run in again["runs"].values()} == {"reused"}

    # the labels study shares the runs: only the thinned TSN is new
    labels = run_labels_study(settings, out, count=2, partial=("semseg",), fractions=(1.0, 0.5), jobs=1,
                              progress=False, log=lambda line: None)
    assert {key: run["action"] for key, run in labels["runs"].items()} == {
        "single_task-semseg": "reused", "single_task-depth": "reused", "tsn-T2": "reused",
        "tsn-T2-semseg0.5": "trained"}
    assert [row["fraction"] for row in labels["rows"]] == [1.0, 0.5]
    assert labels["rows"][0]["average_drop"] == pytest.approx(tsn["average_drop"])
    assert labels["rows"][1]["partial_drop"] == pytest.approx(labels["rows"][1]["drops"]["semseg"])
    assert "| 0.5 |" in (out / "labels.md").read_text()
    assert (out / "study_labels.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["tasks", "--counts", "4,2"], "--counts must rise"),
    (["tasks", "--counts", "2,3"], "--counts must rise and stay within the 2 tasks"),
    (["tasks", "--tasks", "semseg,nope"], "nope not a task of synthetic"),
    (["tasks", "--budget", "0"], "--budget must be"),
    (["tasks", "--size", "32"], "--size must be"),
    (["tasks", "--jobs", "0"], "--jobs must be"),
    (["tasks", "--dataset", "coco"], "coco"),
    (["tasks", "--set", "epochs=many"], "epochs"),
    (["labels", "--count", "2", "--partial", "normals"], "not among the study's first 2 tasks"),
    (["labels", "--fractions", "0.5,0"], "--fractions must lie"),
    (["labels", "--fractions", "1,lots"], "comma-separated float"),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, message) -> None:
    out = tmp_path / "out"
    study, *rest = argv
    base = ["--dataset", "synthetic", "--tasks", "semseg,depth"] if study == "tasks" else ["--dataset", "synthetic"]
    try:
        code = main(["study", study, "--out", str(out), *base, *rest])
    except SystemExit as exit:  # argument errors: argparse exits with status 2
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tsn study"), err
    assert message in err[0], err
    assert not out.exists()
