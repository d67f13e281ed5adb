"""Training configs: every preset resolves, ``--set`` overrides are type-checked, ``base`` inheritance works."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tsn.dataset_catalog import get_dataset
from tsn.errors import TsnError
from tsn.tasks import PAPER_TASK_ORDER
from tsn.training import TrainConfig, config_from_dict, list_presets, load_config


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_resolves_and_round_trips(preset: str) -> None:
    config = load_config(preset)
    assert config.name == preset
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config
    specs = config.model.task_specs
    channels = get_dataset(config.data.dataset).tasks
    assert all(channels[spec.name] == spec.channels for spec in specs)  # model and dataset agree


def test_the_paper_preset_is_the_papers_recipe() -> None:
    config = load_config("tsn_r18_pascal")
    assert config.model.arch == "tsn" and config.model.tasks == PAPER_TASK_ORDER
    assert config.model.backbone == "resnet18.tv_in1k" and config.model.pretrained
    assert config.data.size == (512, 512) and config.batch_size == 16
    assert (config.optim.name, config.optim.lr, config.optim.encoder_lr) == ("adam", 1e-4, 1e-6)
    assert (config.scheduler.name, config.scheduler.factor) == ("plateau", 0.5)
    assert config.schedule == "epoch" and config.loss_weights == {} and config.validation.best == "loss"


def test_there_is_a_single_task_preset_per_task_of_each_dataset() -> None:
    presets = set(list_presets())
    for family, dataset in (("r18_pascal", "pascal_context"), ("r18_nyud", "nyud"), ("r10t_synthetic", "synthetic")):
        for task in get_dataset(dataset).tasks:
            config = load_config(f"single_{family}.{task}")
            assert config.model.arch == "single_task" and config.model.tasks == (task,)
            assert config.data.dataset == dataset
        assert f"multihead_{family}" in presets


def test_overrides_are_converted_to_the_field_types() -> None:
    config = load_config(
        "tsn_r18_pascal",
        ["optim.lr=3e-4", "epochs=7", "data.size=256", "model.decoder_channels=[64, 32, 32, 16, 16]",
         "validation.metrics=false", "loss_weights={edges: 10}", "optim.encoder_lr=null"],
    )
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)  # "3e-4" is a string in YAML 1.1
    assert config.epochs == 7 and config.data.size == (256, 256)
    assert config.model.decoder_channels == (64, 32, 32, 16, 16)
    assert config.validation.metrics is False and config.loss_weights == {"edges": 10.0}
    assert config.optim.encoder_lr is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epochs=many", "config epochs: expected int"),
        ("optim.lr=fast", "config optim.lr"),
        ("schedule=random", "config schedule: 'random' is not one of epoch, round_robin, all_tasks"),
        ("optim.lrr=1", "unknown config key optim.lrr"),
        ("model.taskz=[semseg]", "unknown config key model.taskz"),
        ("model.arch=transformer", "config model.arch"),
        ("data.size=[1, 2, 3]", "data.size"),
        ("no_equals_sign", "expected KEY=VALUE"),
        ("epochs.value=3", "'epochs' is a value, not a section"),
        ("batch_size=0", "batch_size must be at least 1"),
        ("model.tasks=[semseg, semsegg]", "unknown task 'semsegg'"),
    ],
)
def test_bad_overrides_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(TsnError, match=message.replace("[", r"\[").replace("(", r"\(")) as caught:
        load_config("tsn_r18_pascal", [override])
    assert "\n" not in str(caught.value)


def test_a_yaml_file_inherits_from_a_preset_and_a_relative_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("base: tsn_r18_pascal\nname: mine\noptim: {lr: 0.01}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../mine.yaml\nepochs: 3\n")
    config = load_config(tmp_path / "sub" / "child.yaml")
    assert (config.name, config.epochs, config.optim.lr) == ("mine", 3, 0.01)
    assert config.optim.encoder_lr == 1e-6  # the deep merge keeps the preset's other optimizer values


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TsnError, match="neither a preset nor a YAML file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(TsnError, match="inherits from itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(TsnError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("model: {arch: tsn\n")
    with pytest.raises(TsnError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_defaults_build_without_a_file() -> None:
    assert config_from_dict({}) == TrainConfig()
