"""Save -> load of the Hub layout is bit-identical for every architecture; bad folders are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tsn
from tsn.errors import TsnError
from tsn.hub import is_pretrained_source, load_pretrained, parse_hub_source, read_pretrained_config, save_pretrained
from tsn.models import build_model
from tsn.models.registry import MODEL_PRESETS

SMALL = MODEL_PRESETS["tsn_r10t_synthetic"]
ARCHITECTURES = sorted({config.arch for config in MODEL_PRESETS.values()})


def _small_model(arch: str) -> torch.nn.Module:
    """The demo-sized model of ``arch`` with every tensor random (nothing left at its initial value)."""
    config = SMALL.replace(arch=arch, tasks=SMALL.tasks[:1] if arch == "single_task" else SMALL.tasks)
    model = build_model(config)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator).abs_() + 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = _small_model("tsn")
    return model, save_pretrained(model, tmp_path_factory.mktemp("pretrained") / "tsn-small")


def test_every_architecture_is_covered() -> None:
    assert {"tsn", "multi_head", "single_task"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_round_trip_is_bit_identical(arch: str, tmp_path: Path) -> None:
    model = _small_model(arch)
    folder = save_pretrained(model, tmp_path / arch)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    for loaded in (load_pretrained(folder), tsn.load_model(folder)):
        assert not loaded.training
        assert loaded.config.to_dict() == model.config.to_dict()
        expected, got = model.state_dict(), loaded.state_dict()
        assert list(got) == list(expected)
        for name, tensor in expected.items():
            assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
        image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for task in model.tasks:
                assert torch.equal(loaded(image, task), model(image, task)), task


def test_config_json_describes_the_model(saved) -> None:
    model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "tsn-pretrained" and config["library_name"] == "tsn"
    assert config["model_config"] == model.config.to_dict()
    assert config["parameters"] == model.num_parameters()
    assert config["gflops"]["one_task"] > 0 and config["gflops"]["all_tasks"] > config["gflops"]["one_task"]


def test_pretrained_sources_are_recognised(saved, tmp_path: Path) -> None:
    _, folder = saved
    assert is_pretrained_source(folder) and is_pretrained_source(str(folder))
    assert is_pretrained_source("hf-hub:my-lab/tsn-small") and is_pretrained_source("hf-hub:my-lab/tsn-small@v1")
    assert not is_pretrained_source(folder / "model.safetensors")  # a checkpoint file: the loader reads it as one
    assert not is_pretrained_source(tmp_path) and not is_pretrained_source(tmp_path / "missing")
    assert parse_hub_source("hf-hub:my-lab/tsn-small@0123abc").revision == "0123abc"
    assert parse_hub_source(str(folder)) is None
    for bad in ("hf-hub:", "hf-hub:nameonly", "hf-hub:a/b/c", "hf-hub:my--lab/x", "hf-hub:lab/x@", "hf-hub:lab/x@.."):
        with pytest.raises(TsnError, match=r"hf-hub:ORG/NAME|revision") as error:
            parse_hub_source(bad)
        assert "\n" not in str(error.value)


def test_weights_that_do_not_match_the_config_are_refused(saved, tmp_path: Path) -> None:
    _, folder = saved
    other = save_pretrained(_small_model("multi_head"), tmp_path / "other")
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "config.json").write_bytes((folder / "config.json").read_bytes())
    (tampered / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(TsnError, match="sha256 differs") as error:
        tsn.load_model(tampered)
    assert "\n" not in str(error.value)
    config = json.loads((folder / "config.json").read_text())
    del config["weights_sha256"]  # without the digest, the configs themselves must agree
    (tampered / "config.json").write_text(json.dumps(config))
    with pytest.raises(TsnError, match="describe different models"):
        load_pretrained(tampered)


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"format": "tsn-pretrained", "format_version": 99,'
                                     b' "model_config": {}}', "é".encode("latin-1")])
def test_a_damaged_config_is_one_line(saved, tmp_path: Path, content: bytes) -> None:
    _, folder = saved
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (damaged / "config.json").write_bytes(content)
    with pytest.raises(TsnError) as error:
        tsn.load_model(damaged)
    assert "\n" not in str(error.value) and "config" in str(error.value)


def test_a_folder_of_other_files_is_not_overwritten(saved, tmp_path: Path) -> None:
    model, folder = saved
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "README.md").write_text("my notes\n")
    with pytest.raises(TsnError, match="not part of a tsn pretrained folder"):
        save_pretrained(model, clone)
    assert (clone / "README.md").read_text() == "my notes\n" and sorted(p.name for p in clone.iterdir()) == [
        "README.md"]
    save_pretrained(model, clone, overwrite=True)
    assert is_pretrained_source(clone)
    save_pretrained(model, folder)  # an earlier pretrained folder is replaced without asking
    assert torch.equal(load_pretrained(folder).state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_saving_onto_the_input_checkpoint_is_refused(saved, tmp_path: Path) -> None:
    from tsn.cli import main

    model, _ = saved
    checkpoint = tsn.save_checkpoint(tmp_path / "model.safetensors", model)
    before = checkpoint.read_bytes()
    assert main(["save-pretrained", str(checkpoint), "-o", str(tmp_path)]) == 2
    assert checkpoint.read_bytes() == before and not (tmp_path / "config.json").exists()


def test_save_pretrained_command_writes_a_loadable_folder(saved, tmp_path: Path, capsys) -> None:
    from tsn.cli import main

    model, _ = saved
    checkpoint = tsn.save_checkpoint(tmp_path / "model.pt", model)
    assert main(["save-pretrained", str(checkpoint), "-o", str(tmp_path / "shared"), "--name", "tiny"]) == 0
    assert "tsn push" in capsys.readouterr().out
    assert (tmp_path / "shared" / "README.md").read_text().count("# tiny") == 1
    loaded = tsn.load_model(tmp_path / "shared")
    assert torch.equal(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])


def test_a_source_is_checked_against_the_architecture_asked_for(saved) -> None:
    model, folder = saved
    loaded = tsn.create_model(model.config, pretrained=folder)
    assert torch.equal(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])
    by_name = tsn.create_model(str(folder))  # as timm's create_model("hf-hub:..."): the folder's own model
    assert torch.equal(by_name.state_dict()["head.weight"], model.state_dict()["head.weight"])
    with pytest.raises(TsnError, match=r"not the model asked for \(arch: 'tsn' there, 'multi_head' asked") as error:
        tsn.create_model(model.config.replace(arch="multi_head"), pretrained=folder)
    assert "\n" not in str(error.value)


def test_local_folders_are_not_published(tmp_path: Path) -> None:
    model = _small_model("tsn")
    model.config = model.config.replace(pretrained_file="/home/someone/weights/resnet10t.pth")  # as trained
    recipe = {"data": {"dataset": "synthetic", "root": "/home/someone/data"}, "model": {"pretrained_file": "C:\\w.pth"}}
    folder = save_pretrained(model, tmp_path / "shared", train_config=recipe)
    for name in ("README.md", "config.json"):
        text = (folder / name).read_text()
        assert "/home/someone" not in text and "C:" not in text, name
    assert json.loads((folder / "config.json").read_text())["model_config"]["pretrained_file"] == "resnet10t.pth"
    assert load_pretrained(folder).config.pretrained_file is None  # the weights are the folder's own
    assert model.config.pretrained_file == "/home/someone/weights/resnet10t.pth"  # the caller's model is unchanged


def test_special_files_in_the_output_folder_are_refused_without_blocking(saved, tmp_path: Path) -> None:
    import os

    model, _ = saved
    target = tmp_path / "with_fifo"
    target.mkdir()
    os.mkfifo(target / "config.json")  # reading it would block forever
    with pytest.raises(TsnError, match=r"config\.json exists and is not part of a tsn pretrained folder"):
        save_pretrained(model, target)
    with pytest.raises(TsnError, match="named pipe"):
        read_pretrained_config(target)


def _record(**changes) -> dict:
    record = {"format": "tsn-evaluate", "dataset": {"name": "synthetic", "split": "val", "n_images": 2},
              "input_size": [64, 64], "protocols": {"scoring": "as stored"},
              "tasks": {"semseg": {"mIoU": 0.5, "n_images": 2}},
              "headline": {"semseg": {"metric": "mIoU", "value": 0.5, "table_value": 50.0, "higher_is_better": True}}}
    return {**record, **changes}


@pytest.mark.parametrize("changes", [
    {"tasks": {"semseg": [0.5]}},
    {"headline": {"semseg": {"metric": 3}}},
    {"headline": ["semseg"]},
    {"protocols": "astmt"},
    {"input_size": [64]},
    {"input_size": ["64", 64]},
    {"dataset": "synthetic"},
    {"format": "tsn-evaluate-2"},
], ids=lambda changes: next(iter(changes)))
def test_a_damaged_evaluation_record_is_one_line(saved, tmp_path: Path, changes: dict) -> None:
    model, _ = saved
    with pytest.raises(TsnError) as error:
        save_pretrained(model, tmp_path / "out", evaluation=_record(**changes))
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


def test_record_text_cannot_break_the_card(saved, tmp_path: Path) -> None:
    model, _ = saved
    hostile = "seg|<script>alert(1)</script>\n# heading"
    record = _record(protocols={hostile: {"protocol": "a`b|c<img>"}, "scoring": hostile})
    card = (save_pretrained(model, tmp_path / "out", evaluation=record) / "README.md").read_text()
    assert "<script>" not in card and "<img>" not in card and "\n# heading" not in card
    assert "- seg\\|&lt;script>alert(1)&lt;/script> # heading: protocol `a'b\\|c&lt;img>`" in card


def test_an_evaluation_of_another_model_is_refused(saved, tmp_path: Path) -> None:
    model, _ = saved
    with pytest.raises(TsnError, match="which this model does not have"):
        save_pretrained(model, tmp_path / "a", evaluation=_record(tasks={"human_parts": {"mIoU": 0.5}, "segment": {}}))
    other = model.config.replace(arch="multi_head").to_dict()
    with pytest.raises(TsnError, match="another configuration"):
        save_pretrained(model, tmp_path / "b", evaluation=_record(checkpoint={"config": other}))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
