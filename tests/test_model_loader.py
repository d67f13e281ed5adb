"""One loader for "a shared model, a checkpoint file or a run folder" (:func:`tsn.load_model`), and the run-folder
layout defined once (:mod:`tsn.run_folder`)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

import tsn
from tsn.errors import TsnError
from tsn.models import build_model, model_config
from tsn.models.checkpoint import check_model_source, register_model_source, save_checkpoint
from tsn.run_folder import MODEL_FILE, RunPaths, checkpoint_in, config_of, resolve_checkpoint


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(model_config("tsn_r10t_synthetic", decoder_channels=(16, 16, 8, 8, 8))).eval()


def _same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(),
                                                 strict=True))


def test_the_layout_is_the_one_the_training_code_uses() -> None:
    from tsn.training.resume import RunPaths as TrainingRunPaths

    assert TrainingRunPaths is RunPaths
    run = RunPaths(Path("run"))
    assert (run.config, run.log, run.checkpoints, run.last, run.best) == (
        Path("run/config.yaml"), Path("run/train.log"), Path("run/checkpoints"), Path("run/checkpoints/last.pt"),
        Path("run/checkpoints/best.pt"))
    assert run.model_candidates == (run.best, run.last, Path("run") / MODEL_FILE)
    assert (run.evaluation.name, run.demo_metrics.name, run.history.name) == ("evaluation.json", "metrics.json",
                                                                            "history.json")


@pytest.mark.parametrize(
    ("present", "chosen"),
    [(("best", "last", "model"), "best"), (("last", "model"), "last"), (("model",), "model"), ((), None)],
)
def test_a_folder_stands_for_its_best_then_last_checkpoint(tmp_path: Path, present, chosen) -> None:
    run = RunPaths(tmp_path)
    paths = {"best": run.best, "last": run.last, "model": tmp_path / MODEL_FILE}
    for name in present:
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        paths[name].write_bytes(b"x")
    assert checkpoint_in(tmp_path) == (paths[chosen] if chosen else None)


@pytest.mark.parametrize(
    ("make", "message"),
    [(lambda root: root / "missing.pt", "missing.pt does not exist; give a checkpoint file or a tsn train run"),
     (lambda root: root, "is a folder without checkpoints/best.pt, checkpoints/last.pt or model.pt")],
    ids=["missing", "empty-folder"],
)
def test_every_entry_point_refuses_a_bad_source_with_the_same_line(tmp_path: Path, make, message) -> None:
    source = make(tmp_path)
    for load in (resolve_checkpoint, check_model_source, tsn.load_model, lambda s: tsn.predict(s, b"")):
        with pytest.raises(TsnError) as caught:
            load(source)
        assert message in str(caught.value) and "\n" not in str(caught.value)


def test_checkpoint_file_and_run_folder_load_the_same_model(model, tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    save_checkpoint(run.best, model)
    assert _same_weights(tsn.load_model(run.best), model)
    assert _same_weights(tsn.load_model(run.root), model)
    assert not tsn.load_model(run.root).training


def test_config_of_finds_the_run_of_a_checkpoint(tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("model: {}\n")
    assert config_of(run.root) == config_of(run.best) == run.config
    assert config_of(tmp_path / "elsewhere.pt") is None


def test_shared_models_go_to_the_hub_loader_first(model, tmp_path: Path, monkeypatch) -> None:
    """The loader asks :func:`tsn.hub.is_pretrained_source` first and hands such sources to
    :func:`tsn.hub.load_pretrained` (a stand-in module here, so the test needs no Hub and no network)."""
    from tsn.models import checkpoint

    calls: list[tuple[str, str]] = []
    hub = types.ModuleType("tsn.hub")
    hub.is_pretrained_source = lambda source: str(source).startswith("hf-hub:")  # type: ignore[attr-defined]

    def load_pretrained(source, *, map_location="cpu"):
        calls.append((str(source), str(map_location)))
        return model.train()

    hub.load_pretrained = load_pretrained  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tsn.hub", hub)
    monkeypatch.setattr(checkpoint, "_MODEL_SOURCES", {})  # resolved again, from the stand-in
    loaded = tsn.load_model("hf-hub:lab/tsn-tiny", map_location="cpu")
    assert loaded is model and not loaded.training and calls == [("hf-hub:lab/tsn-tiny", "cpu")]
    check_model_source("hf-hub:lab/tsn-tiny")  # no checkpoint path to check: nothing raised
    with pytest.raises(TsnError, match="does not exist"):
        tsn.load_model(tmp_path / "other.pt")  # not a shared source: the checkpoint path as before
    assert len(calls) == 1


def test_a_users_model_source_plugs_into_every_loader(model, monkeypatch) -> None:
    from tsn.models import checkpoint

    monkeypatch.setattr(checkpoint, "_MODEL_SOURCES", dict(checkpoint._MODEL_SOURCES))
    register_model_source("zoo", lambda source: str(source).startswith("zoo:"), lambda source, map_location: model)
    assert tsn.load_model("zoo:tiny") is model
    check_model_source("zoo:tiny")
    with pytest.raises(TsnError, match="model source named 'zoo' is already registered"):
        register_model_source("zoo", bool, lambda source, map_location: model)
