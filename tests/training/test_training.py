"""End-to-end training on tiny synthetic scenes: exact resume, SIGTERM, non-finite loss, run-dir checks, logs,
2-process DDP on CPU (gloo) against a 1-process run, and the ``tsn demo`` command."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tiny_runs import TINY_RUN

from tsn.cli import main
from tsn.errors import TsnError
from tsn.models import build_model
from tsn.models.checkpoint import read_checkpoint
from tsn.training import TrainConfig, config_from_dict, load_config, resume_config, train
from tsn.training.distributed import init_distributed
from tsn.training.trainer import Trainer

TINY: dict[str, Any] = TINY_RUN


def tiny(*overrides: str) -> TrainConfig:
    return load_config(TINY, list(overrides))


# One torch thread and a module-wide scene cache (tests/training/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread", "synthetic_cache")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())
    assert worst <= atol, f"largest weight difference {worst}"


@pytest.mark.parametrize(
    "overrides",
    [
        # the authors' schedule, with augmentation and accumulation: the pause falls inside a task's pass
        ("schedule=epoch", "data.train_transform=tsns_train", "grad_accum=2", "scheduler.name=plateau"),
        ("schedule=round_robin", "data.train_options.length=8"),
        ("schedule=all_tasks", "max_steps=5"),
        # the benchmark's training path: fused blocks (hand-written statistics backward), NHWC, bfloat16
        ("schedule=all_tasks", "max_steps=5", "fused=true", "channels_last=true", "amp=bf16"),
    ],
    ids=["epoch", "round_robin", "all_tasks", "all_tasks_fused_nhwc_bf16"],
)
def test_an_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    config = tiny(*overrides)
    full = train(config, tmp_path / "full", progress=False)
    paused = train(config, tmp_path / "resumed", stop_at_step=3, progress=False)
    assert paused.status == "interrupted" and paused.step == 3
    assert read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["training"]["state"]["step"] == 3
    resumed = train(None, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.status == full.status == "finished" and resumed.step == full.step > 3
    assert_same_weights(weights(tmp_path / "full" / "checkpoints" / "last.pt"),
                        weights(tmp_path / "resumed" / "checkpoints" / "last.pt"))
    assert resumed.best == full.best and resumed.validation == full.validation
    # Every option keeps the model's state dict: the checkpoint has the keys of the plain model.
    assert set(weights(tmp_path / "full" / "checkpoints" / "last.pt")) == set(build_model(config.model).state_dict())


def test_a_run_writes_config_log_history_tensorboard_and_checkpoints(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny("validation.best=semseg")
    result = train(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert load_config(run / "config.yaml") == config
    assert result.best is not None and result.best["criterion"] == "semseg/mIoU"
    assert result.checkpoint == run / "checkpoints" / "best.pt" and (run / "checkpoints" / "last.pt").is_file()
    saved = read_checkpoint(result.checkpoint)
    assert set(saved["training"]) >= {"optimizer", "scheduler", "scaler", "rng", "state", "config"}
    log = (run / "train.log").read_text()
    assert "val loss" in log and "step 1: semseg" in log and "finished" in log
    history = yaml.safe_load((run / "history.json").read_text())
    assert len(history) == 2  # one validation per epoch
    assert f"| semseg/mIoU {history[-1]['value']:.4f}" in log
    assert history[-1]["value"] == history[-1]["metrics"]["semseg"]["mIoU"]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss/semseg", "train/loss/depth", "lr/encoder", "lr/decoder", "val/loss", "val/loss/normals",
            "val/semseg/mIoU"} <= tags


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path: Path, synthetic_cache: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "epochs": 1000}))
    run = tmp_path / "run"
    env = {**os.environ, "TSN_CACHE_DIR": str(synthetic_cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tsn", "train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(run),
               "--no-progress"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "train.log"
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and "step 2:" in log.read_text()):  # two steps done: mid-run
            assert process.poll() is None and time.monotonic() < deadline, "the run ended or never started"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped = yaml.safe_load((run / "result.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["step"] >= 2
    assert read_checkpoint(run / "checkpoints" / "last.pt")["training"]["state"]["step"] == stopped["step"]
    # Three steps per epoch: a run stopped inside the first epoch resumes and ends it; a later one is done.
    resumed = train(resume_config(run, ["epochs=1"]), run, resume=True, progress=False)
    assert resumed.status == "finished" and resumed.step == max(3, stopped["step"])


def test_a_non_finite_loss_stops_naming_task_and_step_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tsn.training import losses

    calls = {"n": 0}
    depth_l1 = losses.LOSSES["depth_l1"]

    def poisoned(raw: torch.Tensor, label: torch.Tensor, **options: Any) -> torch.Tensor:
        calls["n"] += 1
        value = depth_l1(raw, label, **options)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setitem(losses.LOSSES, "depth_l1", poisoned)
    with pytest.raises(TsnError, match=r"non-finite loss for task depth at step 3 \(epoch 1\)") as caught:
        train(tiny("checkpoint_every=1"), tmp_path / "run", progress=False)
    assert "last good checkpoint" in str(caught.value)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["training"]["state"]["step"] == 2


def test_run_directory_problems_are_reported_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(TsnError, match="cannot write to the run directory"):
        train(tiny(), tmp_path / "a-file" / "run", progress=False)
    with pytest.raises(TsnError, match=r"no checkpoints/last\.pt to resume from"):
        train(tiny(), tmp_path / "empty", resume=True, progress=False)
    from tsn.training import resume as resume_module

    real = resume_module.shutil.disk_usage
    monkeypatch.setattr(resume_module.shutil, "disk_usage", lambda path: real(path)._replace(free=10_000))
    with pytest.raises(TsnError, match="MiB free on the disk"):
        train(tiny(), tmp_path / "full-disk", progress=False)
    monkeypatch.undo()
    train(tiny("max_steps=1", "validation.metrics=false"), tmp_path / "done", progress=False)
    with pytest.raises(TsnError, match="already holds a run"):
        train(tiny(), tmp_path / "done", progress=False)


def test_configs_the_trainer_refuses(tmp_path: Path) -> None:
    with pytest.raises(TsnError, match="too small"):
        train(tiny("data.size=32"), tmp_path / "a", progress=False)
    with pytest.raises(TsnError, match="fp16 needs a CUDA GPU"):
        train(tiny("amp=fp16"), tmp_path / "b", progress=False)
    with pytest.raises(TsnError, match="needs the depth metric"):
        train(tiny("validation.best=depth"), tmp_path / "c", progress=False)
    with pytest.raises(TsnError, match="not divisible"):
        train(tiny("grad_accum=3"), tmp_path / "d", progress=False)
    with pytest.raises(TsnError, match=r"no task 'human_parts'|does not have"):
        train(tiny("validation.metrics=[human_parts]"), tmp_path / "e", progress=False)


# ---------------------------------------------------------------------------------------------------------- DDP


def _ddp_worker(rank: int, config: dict[str, Any], out: str, port: int, cache: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", TSN_CACHE_DIR=cache)
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    trainer = Trainer(config_from_dict(config), ctx, Path(out), resume=False, stop_at_step=None, progress=False)
    try:
        trainer.run()
        torch.save(trainer.model.state_dict(), Path(out).parent / f"rank{rank}.pt")
    finally:
        trainer.close()
        ctx.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    tmp_path: Path, synthetic_cache: Path
) -> None:
    config = tiny("schedule=epoch", "max_steps=3", "validation.metrics=false", "data.train_options.length=8")
    torch.multiprocessing.spawn(
        _ddp_worker, args=(config.to_dict(), str(tmp_path / "ddp"), _free_port(), str(synthetic_cache)), nprocs=2
    )
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    parameters = {name for name, _ in build_model(config.model).named_parameters()}
    saved = weights(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert_same_weights({k: rank0[k] for k in parameters}, {k: rank1[k] for k in parameters})  # bit-identical
    assert_same_weights({k: rank0[k] for k in parameters}, {k: saved[k] for k in parameters})
    # One process, two accumulated micro-batches of the same size: the same samples, the same gradients. Each
    # micro-batch runs the same kernels at one thread as a rank does, so its gradients are bit-identical, and
    # (g0 + g1) / 2 (all-reduce, then the mean) equals g0 / 2 + g1 / 2 (accumulation) exactly: halving is exact in
    # binary floating point. So the weights are bit-identical on any CPU.
    single = train(load_config(config.to_dict(), ["grad_accum=2"]), tmp_path / "single", progress=False)
    assert single.step == 3
    expected = weights(tmp_path / "single" / "checkpoints" / "last.pt")
    assert_same_weights({k: rank0[k] for k in parameters}, {k: expected[k] for k in parameters})


# --------------------------------------------------------------------------------------------------------- demo


def test_demo_end_to_end_with_a_small_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--steps", "2", "--train-images", "16", "--val-images", "4", "--out", str(out),
                 "--no-progress", "--threads", "1", "--set", "batch_size=4",
                 "--set", "model.backbone=mobilenetv3_small_050", "--set", "model.decoder_channels=[16, 8, 8, 8, 8]"])
    printed = capsys.readouterr().out
    assert code == 0
    for task, metric in (("semseg", "mIoU"), ("human_parts", "mIoU"), ("edges", "odsF"), ("normals", "mErr"),
                         ("saliency", "mIoU"), ("depth", "rmse")):
        assert f"| {task} | {metric}" in printed
    assert "majority class" in printed and "mean normal" in printed and str(out) in printed
    for name in ("predictions.png", "metrics.json", "metrics.md", "checkpoints/best.pt", "config.yaml"):
        assert (out / name).is_file(), name
    rows = yaml.safe_load((out / "metrics.json").read_text())["tasks"]
    assert len(rows) == 6 and all({"tsn", "trivial", "trivial_predictor"} <= set(row) for row in rows)


# ------------------------------------------------------------------------------------------- real-data presets


@pytest.mark.parametrize(("preset", "root_fixture"), [("tsn_r18_pascal", "pascal_root"), ("tsn_r18_nyud", "nyud_root")])
def test_the_paper_presets_train_on_the_real_dataset_layout(
    tmp_path: Path, preset: str, root_fixture: str, request: pytest.FixtureRequest
) -> None:
    root = request.getfixturevalue(root_fixture)  # a tiny fixture dataset in the real archive's layout
    config = load_config(preset, [
        f"data.root={root.parent}", "data.size=64", "data.num_workers=0", "batch_size=2", "max_steps=3",
        "model.backbone=mobilenetv3_small_050", "model.pretrained=false", "model.decoder_channels=[16, 8, 8, 8, 8]",
    ])
    result = train(config, tmp_path / "run", progress=False)
    assert result.status == "finished" and result.step == 3
    validation = result.validation
    assert validation is not None and set(validation["losses"]) == set(config.model.tasks)
    assert set(validation["metrics"]) == set(config.validation.metrics)  # every scored task but edges
    assert all(math.isfinite(v) for v in validation["losses"].values())


def test_bf16_autocast_trains_on_the_cpu(tmp_path: Path) -> None:
    result = train(tiny("amp=bf16", "max_steps=2", "channels_last=true"), tmp_path / "run", progress=False)
    assert result.status == "finished" and result.validation is not None
    assert all(math.isfinite(value) for value in result.validation["losses"].values())
    assert "precision bf16" in (tmp_path / "run" / "train.log").read_text()
