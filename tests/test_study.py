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
                     train_images=4, test_images=4, measure_batch=2, measure_repeats=2, seeds=1,
                     overrides=("model.decoder_channels=[8, 8, 8, 8, 8]",))
"""Two optimizer steps of two 64 px scenes, four scenes per split, a narrow decoder, one seed."""


def _cli_tiny(seeds: int = 1, steps: int = 2, train_images: int = 4) -> list[str]:
    return ["--dataset", "synthetic", "--tasks", "semseg,depth", "--budget", str(steps), "--batch-size", "2",
            "--train-images", str(train_images), "--test-images", "4", "--measure-batch", "2",
            "--measure-repeats", "2", "--seeds", str(seeds), "--quiet",
            "--set", "model.decoder_channels=[8, 8, 8, 8, 8]"]


def test_counts_settings_and_plans() -> None:
    assert default_counts(13) == (2, 4, 8, 12) and default_counts(12) == (2, 4, 8, 12)
    assert default_counts(6) == (2, 4, 6) and default_counts(2) == (2,)
    full = StudySettings()
    assert full.dataset == "synthetic_full" and full.counts == (2, 4, 8, 12) and full.family == "r10t_synthetic"
    assert full.seeds == 3
    # the command states its defaults itself (importing the studies would slow every `tsn` start-up): they must
    # be the settings' own, or `tsn study` would train another budget than the one documented and recorded
    from tsn.cli import build_parser

    for study in ("tasks", "labels"):
        args = build_parser().parse_args(["study", study])
        assert (args.dataset, args.budget, args.batch_size, args.size, args.train_images, args.test_images,
                args.seeds, args.measure_batch, args.measure_repeats) == (
            "synthetic_full", full.steps, full.batch_size, full.size, full.train_images, full.test_images,
            full.seeds, full.measure_batch, full.measure_repeats), study
    runs = plan_tasks_study(full)
    assert len(runs) == 3 * 20 and [run.seed for run in runs] == [0] * 20 + [1] * 20 + [2] * 20
    first = runs[:20]
    singles = [run for run in first if run.kind == "single_task"]
    # one single-task network per task of the largest T, reused by every T; nested task lists
    assert [run.config.model.tasks for run in singles] == [(task,) for task in full.tasks[:12]]
    assert [run.key for run in first[12:]] == [f"{kind}-T{t}" for t in (2, 4, 8, 12) for kind in ("multi_head", "tsn")]
    for run in first[12:]:
        count = int(run.key.rpartition("T")[2])
        assert run.config.model.tasks == full.tasks[:count]
    # the same budget, data and recipe everywhere: only the model and the seed differ
    assert {(r.config.max_steps, r.config.batch_size, r.config.data.dataset, r.config.data.size,
             r.config.schedule, r.config.optim.lr, r.config.epochs, r.config.validation.every) for r in runs} == {
        (300, 8, "synthetic_full", (64, 64), "all_tasks", 2e-3, 5, 1)}
    assert {(r.folder, r.config.seed) for r in runs if r.key == "tsn-T4"} == {
        (f"seed{seed}/tsn-T4", seed) for seed in range(3)}
    # the single-task runs score their metric at every validation: the curves behind the budget
    assert {r.kind for r in runs if r.config.validation.metrics} == {"single_task"}
    assert {r.config.model.arch for r in runs} == {"single_task", "multi_head", "tsn"}
    assert dict(runs[19].config.model.task_channels)["material"] == 5

    labels = plan_labels_study(full, 4, ("semseg", "normals"), (1, 0.25))
    assert [run.key for run in labels[:6]] == [*(f"single_task-{t}" for t in full.tasks[:4]), "tsn-T4",
                                               "tsn-T4-semseg0.25-normals0.25"]
    assert len(labels) == 18 and labels[10].folder == "seed1/tsn-T4"
    assert labels[4].config == runs[15].config  # the fully labelled TSN is the tasks study's tsn-T4
    assert dict(labels[5].config.label_fractions) == {"semseg": 0.25, "normals": 0.25}
    with pytest.raises(TsnError, match="use --seeds"):
        StudySettings(overrides=("seed=1",))

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
    train(tsn_run.config, out / "runs" / "seed0" / "tsn-T2", stop_at_step=1, progress=False)

    record = run_tasks_study(settings, out, jobs=1, progress=False, log=lambda line: None)
    actions = {key: run["action"] for key, run in record["runs"].items()}
    assert actions == {"seed0/single_task-semseg": "trained", "seed0/single_task-depth": "trained",
                       "seed0/multi_head-T2": "trained", "seed0/tsn-T2": "resumed"}
    assert {run["steps"] for run in record["runs"].values()} == {2}
    rows = {row["architecture"]: row for row in record["rows"]}
    assert list(rows) == ["single_task", "multi_head", "tsn"] and {r["count"] for r in rows.values()} == {2}
    single = rows["single_task"]
    assert single["parameters"] > rows["multi_head"]["parameters"] > rows["tsn"]["parameters"]
    for row in rows.values():
        assert set(row["values"]) == {"semseg", "depth"} and row["n"] == 1
        # timings: the median and range of the repeats
        for timing in (row["inference"], row["train_step"]):
            assert 0 < timing["min"] <= timing["seconds"] <= timing["max"] and timing["repeats"] == 2
        assert row["train_peak_mb"] > 0 and row["inference_peak_mb"] > 0
    # the average drop, the paper's sign: mIoU higher is better, depth RMSE lower is better
    tsn = rows["tsn"]
    value = {task: {kind: rows[kind]["values"][task]["mean"] for kind in rows} for task in ("semseg", "depth")}
    expected = [100 * (value["semseg"]["single_task"] - value["semseg"]["tsn"]) / value["semseg"]["single_task"],
                -100 * (value["depth"]["single_task"] - value["depth"]["tsn"]) / value["depth"]["single_task"]]
    assert tsn["average_drop"]["mean"] == pytest.approx(sum(expected) / 2)
    assert tsn["average_drop"]["ci"] is None  # one seed: no interval
    assert json.loads((out / "tasks.json").read_text())["rows"] == json.loads(json.dumps(record["rows"]))
    assert "| 2 | TSN |" in (out / "tasks.md").read_text()
    assert (out / "study_tasks.png").read_bytes()[:4] == b"\x89PNG"

    # run again through the command: nothing is trained, scored or measured again
    produced = sorted(p for p in (out / "runs").rglob("*") if p.suffix in (".pt", ".json"))
    produced += sorted((out / "measurements").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in produced}
    capsys.readouterr()
    assert main(["study", "tasks", "--out", str(out), "--counts", "2", "--jobs", "1", *_cli_tiny()]) == 0
    assert "| 2 | TSN |" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in produced} == stamps
    again = json.loads((out / "tasks.json").read_text())
    assert {run["action"] for run in again["runs"].values()} == {"reused"}

    # the labels study shares the runs: only the thinned TSN is new
    labels = run_labels_study(settings, out, count=2, partial=("semseg",), fractions=(1.0, 0.5), jobs=1,
                              progress=False, log=lambda line: None)
    assert {key: run["action"] for key, run in labels["runs"].items()} == {
        "seed0/single_task-semseg": "reused", "seed0/single_task-depth": "reused", "seed0/tsn-T2": "reused",
        "seed0/tsn-T2-semseg0.5": "trained"}
    assert [row["fraction"] for row in labels["rows"]] == [1.0, 0.5]
    assert labels["rows"][0]["average_drop"]["mean"] == pytest.approx(tsn["average_drop"]["mean"])
    assert labels["rows"][1]["partial_drop"]["mean"] == pytest.approx(labels["rows"][1]["drops"]["semseg"]["mean"])
    assert set(labels["rows"][1]["versus_full"]) == {"average_drop", "partial_drop", "other_drop"}
    assert "| 0.5 |" in (out / "labels.md").read_text()
    assert (out / "study_labels.png").read_bytes()[:4] == b"\x89PNG"


def test_tasks_study_three_seeds_resumes_after_ctrl_c(tmp_path, capsys) -> None:
    from interrupt import alive, ctrl_c_when
    from tsn.studies.reproduce import run_status

    out = tmp_path / "study"
    # 30 steps per run in 3 epochs of 10 (a validation each: the curves), a checkpoint every 25 steps
    argv = ["study", "tasks", "--out", str(out), "--counts", "2", *_cli_tiny(seeds=3, steps=30, train_images=20)]
    settings = StudySettings(dataset="synthetic", tasks=("semseg", "depth"), counts=(2,), steps=30, batch_size=2,
                             train_images=20, test_images=4, measure_batch=2, measure_repeats=2, seeds=3,
                             overrides=("model.decoder_channels=[8, 8, 8, 8, 8]",))
    runs = plan_tasks_study(settings)
    folders = {run.folder: out / "runs" / run.folder for run in runs}

    def seed0_done_and_seed1_running() -> bool:
        return (all(run_status(folders[r.folder]) == "finished" for r in runs if r.seed == 0)
                and any(run_status(folders[r.folder]) == "interrupted" for r in runs if r.seed == 1))

    code, err, started = ctrl_c_when([*argv, "--jobs", "2"], seed0_done_and_seed1_running)
    assert code != 0 and "run the same command again" in err, err
    assert not [pid for pid in started if alive(pid)], "a worker outlived the interrupted command"
    before = {folder: run_status(path) for folder, path in folders.items()}
    assert "interrupted" in before.values()
    assert all(before[r.folder] == "finished" for r in runs if r.seed == 0)

    assert main([*argv, "--jobs", "1"]) == 0
    record = json.loads((out / "tasks.json").read_text())
    expected = {"finished": "reused", "interrupted": "resumed", "new": "trained"}
    assert {folder: run["action"] for folder, run in record["runs"].items()} == {
        folder: expected[status] for folder, status in before.items()}
    assert record["seeds"] == [0, 1, 2] and {run["steps"] for run in record["runs"].values()} == {30}
    rows = {row["architecture"]: row for row in record["rows"]}
    assert rows["tsn"]["average_drop"]["n"] == 3 and len(rows["tsn"]["average_drop"]["ci"]) == 2
    assert rows["single_task"]["values"]["semseg"]["n"] == 3
    assert set(record["comparisons"]["2"]) == {"tsn_vs_multi_head", "tsn_vs_single_task", "multi_head_vs_single_task"}
    # the single-task curves: a validation after each of the 3 epochs, every seed
    for task in ("semseg", "depth"):
        entry = record["convergence"][task]
        assert [[point[0] for point in curve] for curve in entry["curves"]] == [[10, 20, 30]] * 3
        assert entry["check"]["from_step"] == 20 and entry["check"]["to_step"] == 30
    assert (out / "study_tasks_curves.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "tasks.md").read_text()
    assert "3 seeds" in markdown and "Budget check" in markdown and "T = 2: paired differences" in markdown


@pytest.mark.parametrize("argv, message", [
    (["tasks", "--counts", "4,2"], "--counts must rise"),
    (["tasks", "--counts", "2,3"], "--counts must rise and stay within the 2 tasks"),
    (["tasks", "--tasks", "semseg,nope"], "nope not a task of synthetic"),
    (["tasks", "--budget", "0"], "--budget must be"),
    (["tasks", "--size", "32"], "--size must be"),
    (["tasks", "--jobs", "0"], "--jobs must be"),
    (["tasks", "--seeds", "0"], "--seeds must be"),
    (["tasks", "--set", "seed=3"], "use --seeds"),
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


def test_tasks_study_and_reproduce_train_the_same_single_task_networks() -> None:
    """docs/reproduce.md states that the recorded table's single-task networks are the tasks study's, weights bit
    for bit: both defaults must keep one recipe, differing only in what names and saves the run."""
    from tsn.studies.reproduce import plan_runs
    from tsn.studies.scaling.settings import plan_tasks_study

    def flat(tree: dict, prefix: str = "") -> dict:
        return {f"{prefix}{key}": value for name, item in tree.items()
                for key, value in (flat(item, f"{name}.").items() if isinstance(item, dict) else [(name, item)])}

    study = {(r.key, r.seed): r.config for r in plan_tasks_study(StudySettings()) if r.kind == "single_task"}
    runs = [r for r in plan_runs("synthetic") if r.kind == "single_task"]
    assert runs
    for run in runs:
        ours, theirs = flat(run.config.to_dict()), flat(study[run.key, run.seed].to_dict())
        differing = {key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key)}
        # the scenes are the same (synthetic_full renders synthetic's scenes with more labels); the study stops by
        # max_steps, reproduce by epochs: the same 300 steps
        assert differing <= {"name", "tensorboard", "checkpoint_every", "max_steps", "data.dataset"}, differing
        steps = run.config.epochs * run.config.data.train_options["length"] // run.config.batch_size
        assert steps == theirs["max_steps"] == 300
