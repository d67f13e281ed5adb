"""One preset naming scheme for models and training recipes; every earlier name still works, with a note."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tsn.errors import TsnError
from tsn.models import list_models, model_config, registry
from tsn.training import list_presets, load_config

SCHEME = re.compile(r"^(tsn|multihead|single)_[a-z0-9]+_[a-z0-9_]+(\.[a-z_]+)?$")
"""``<arch>_<backbone>_<dataset>``, a single-task one with ``.<task>``."""

FAMILIES = {  # earlier dataset prefix -> (family, the tasks of its dataset)
    "pascal": ("r18_pascal", ("semseg", "human_parts", "edges", "normals", "saliency")),
    "nyud": ("r18_nyud", ("semseg", "depth", "normals", "edges")),
    "synthetic": ("r10t_synthetic", ("semseg", "human_parts", "edges", "normals", "saliency", "depth")),
}
OLD_TRAINING_NAMES = {
    "pascal-tsn-r18": "tsn_r18_pascal", "pascal-multihead-r18": "multihead_r18_pascal",
    "nyud-tsn-r18": "tsn_r18_nyud", "nyud-multihead-r18": "multihead_r18_nyud",
    "synthetic-tsn": "tsn_r10t_synthetic", "synthetic-multihead": "multihead_r10t_synthetic",
    **{f"{old}-single-{task}": f"single_{family}.{task}"
       for old, (family, tasks) in FAMILIES.items() for task in tasks},
}
"""Every packaged training preset before the one scheme (21 files) and its name now."""


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename note is printed once per name and process: start each test with none printed yet."""
    monkeypatch.setattr(registry, "_announced", set())


def test_every_name_follows_the_scheme() -> None:
    assert all(SCHEME.match(name) for name in list_presets()), list_presets()
    assert all(SCHEME.match(name) for name in list_models()), list_models()
    assert set(OLD_TRAINING_NAMES.values()) <= set(list_presets())
    assert not any(name.endswith(".yaml") for name in list_presets())


@pytest.mark.parametrize("preset", list_presets())
def test_a_training_preset_trains_the_model_preset_of_its_name(preset: str) -> None:
    trained = load_config(preset).model
    assert trained.to_dict() == model_config(preset, pretrained=trained.pretrained).to_dict()


def test_old_training_names_give_the_same_config_and_a_one_line_note(capsys: pytest.CaptureFixture[str]) -> None:
    for old, new in OLD_TRAINING_NAMES.items():
        assert load_config(old).to_dict() == load_config(new).to_dict(), old
        notes = capsys.readouterr().err.splitlines()
        assert notes == [f"tsn: note: training preset {old!r} is now called {new!r}; the old name still works"]


def test_old_model_names_give_the_same_model_and_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    assert model_config("single_task_r18_pascal", tasks=["normals"]) == model_config("single_r18_pascal.normals")
    assert model_config("multi_head_r18_nyud") == model_config("multihead_r18_nyud")
    assert "'multi_head_r18_nyud' is now called 'multihead_r18_nyud'" in capsys.readouterr().err
    assert model_config("multi_head_r18_nyud") == model_config("multihead_r18_nyud")
    assert capsys.readouterr().err == ""  # once per name


def test_a_user_config_inheriting_an_old_name_still_loads(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: synthetic-tsn\nname: mine\nmodel: {preset: multi_head_r18_synthetic}\nepochs: 1\n")
    config = load_config(mine)
    # The earlier recipe's encoder and decoder widths still apply over the (ResNet-18) model preset, as before.
    assert (config.name, config.epochs, config.model.arch) == ("mine", 1, "multi_head")
    assert (config.model.backbone, config.model.decoder_channels) == ("resnet10t", (64, 32, 32, 16, 16))
    assert capsys.readouterr().err.count("tsn: note:") == 2


def test_the_derived_baselines_follow_their_tsn_recipe() -> None:
    for family, tasks in FAMILIES.values():
        tsn = load_config(f"tsn_{family}")
        multihead = load_config(f"multihead_{family}")
        assert multihead.model.arch == "multi_head" and multihead.schedule == "all_tasks"
        assert (multihead.optim, multihead.data, multihead.epochs) == (tsn.optim, tsn.data, tsn.epochs)
        for task in tasks:
            single = load_config(f"single_{family}.{task}")
            assert single.model.arch == "single_task" and single.model.tasks == (task,)
            assert (single.optim, single.data, single.schedule) == (tsn.optim, tsn.data, tsn.schedule)
            metrics = tsn.validation.metrics
            assert single.validation.metrics == (metrics is True or task in metrics), (family, task)
    assert load_config("single_r18_pascal.edges").validation.metrics is False  # the benchmark is left to evaluate


def test_the_demo_model_is_named_for_its_encoder() -> None:
    demo = model_config("tsn_r10t_synthetic")
    assert (demo.backbone, demo.decoder_channels) == ("resnet10t", (64, 32, 32, 16, 16))
    assert model_config("tsn_r18_synthetic").backbone == "resnet18"
    assert {"tsn_r10t_synthetic", "tsn_r18_pascal", "tsn_r18_synthetic"} <= set(list_models("tsn_*"))
    assert all(name.startswith("tsn_") for name in list_models("tsn_*"))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tsn_r18_pascal.normals", "only single-task presets take a task after the dot"),
        ("single_r18_pascal.depth", "'depth' is not a task of single_r18_pascal; choose one of: semseg"),
        ("tsn_r99_pascal", "unknown model preset 'tsn_r99_pascal'"),
    ],
)
def test_bad_model_preset_names_are_one_line_errors(name: str, message: str) -> None:
    with pytest.raises(TsnError, match=re.escape(message)) as caught:
        model_config(name)
    assert "\n" not in str(caught.value)


def test_an_unknown_training_preset_lists_the_families() -> None:
    with pytest.raises(TsnError, match="neither a preset nor a YAML file") as caught:
        load_config("single_r18_pascl.depth")
    assert "single_r18_pascal.TASK" in str(caught.value) and "tsn_r18_pascal" in str(caught.value)
    with pytest.raises(TsnError, match="'depth' is not a task of single_r18_pascal"):
        load_config("single_r18_pascal.depth")
