"""Extending tsn from outside the package: docs/extending.md, run as written, and the plugin loading.

The walkthrough's modules (``toy_aerial.py``: a new loss, task and dataset; ``toy_extras.py``: a new output kind,
loss, architecture and backbone adapter), their YAML configs, Python sessions and command lines are the code
blocks of docs/extending.md, so the page and this test cannot drift apart. The command lines run the real CLI
(``tsn --plugin ... train``), so each registry is shown to work from a plugin.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tsn.models
import tsn.tasks
from tsn.cli import main
from tsn.dataset_catalog import DATASETS, DatasetSpec, register_dataset
from tsn.errors import TsnError
from tsn.kinds import BINARY, KINDS, SCALAR, ScalarMap, register_kind
from tsn.models import ModelConfig
from tsn.models.architectures import ARCHITECTURES, register_architecture
from tsn.models.backbone_adapters import BACKBONE_ADAPTERS, BackboneAdapter, register_backbone_adapter
from tsn.plugins import load_plugins
from tsn.tasks import TASKS, TaskSpec, register_task
from tsn.training.losses import LOSSES, register_loss

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def guide_blocks(label: str) -> list[str]:
    """The fenced code blocks of the guide headed by ``<!-- label -->``, in order."""
    pattern = rf"<!-- {re.escape(label)} -->\n```[a-z]*\n(.*?)```"
    return re.findall(pattern, GUIDE.read_text(), flags=re.DOTALL)


@pytest.fixture(autouse=True)
def registries_restored() -> Iterator[None]:
    """Each test's registrations (tasks, datasets, kinds, losses, architectures, backbone adapters, the plugin
    modules) are undone afterwards, so the rest of the suite sees the built-in registries only."""
    saved = [(table, dict(table)) for table in (TASKS, TASKS.aliases, DATASETS, DATASETS.aliases, KINDS, LOSSES,
                                                 ARCHITECTURES, BACKBONE_ADAPTERS)]
    modules, path = set(sys.modules), list(sys.path)
    yield
    for table, content in saved:
        table.clear()
        table.update(content)
    for name in set(sys.modules) - modules:
        if name in ("toy_aerial", "toy_extras", "broken_plugin", "twice", "twice_loss", "installed_plugin"):
            del sys.modules[name]
    sys.path[:] = path


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the cores are shared with other test processes
    yield
    torch.set_num_threads(threads)


def test_the_guide_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    (tmp_path / "toy_aerial.py").write_text("\n\n".join(guide_blocks("toy_aerial.py")))
    (tmp_path / "toy_aerial.yaml").write_text(guide_blocks("toy_aerial.yaml")[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TSN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))

    # Python: import the module, train, evaluate, predict.
    session: dict[str, object] = {}
    exec(compile(guide_blocks("python")[0], "docs/extending.md", "exec"), session)
    result, record, maps, picture = (session[name] for name in ("result", "record", "maps", "picture"))
    assert result.status == "finished"  # type: ignore[attr-defined]
    assert record["dataset"]["name"] == "toy_aerial" and record["dataset"]["n_images"] == 4  # type: ignore[index]
    assert set(record["headline"]) == {"semseg", "shadows"}  # type: ignore[index]
    assert 0.0 <= record["headline"]["shadows"]["value"] <= 1.0  # type: ignore[index]
    assert maps["semseg"].shape == (64, 64) and maps["shadows"].shape == (1, 64, 64)  # type: ignore[index]
    assert maps["semseg"].max() < 3 and 0.0 <= maps["shadows"].min() <= maps["shadows"].max() <= 1.0  # type: ignore[index]
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8  # type: ignore[attr-defined]

    # Command line: the same module through --plugin (by path, then by name: imported once).
    for line in guide_blocks("shell")[0].splitlines():
        argv = shlex.split(line)
        assert argv[0] == "tsn"
        assert main(argv[1:]) == 0, capsys.readouterr().err
    evaluation = json.loads((tmp_path / "runs/toy-cli/eval.json").read_text())
    assert set(evaluation["headline"]) == {"semseg", "shadows"}
    assert sorted(p.name for p in (tmp_path / "predictions").rglob("*.png") if "shadows" in str(p))
    assert (tmp_path / "toy_aerial.png").is_file()


def test_the_kind_architecture_and_adapter_of_the_guide_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    for module in ("toy_aerial", "toy_extras"):
        (tmp_path / f"{module}.py").write_text("\n\n".join(guide_blocks(f"{module}.py")))
    (tmp_path / "toy_extras.yaml").write_text(guide_blocks("toy_extras.yaml")[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TSN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))
    # The tiles and the tile of the guide's sections 3 and 4 (the test above writes them through its Python block);
    # the plugin is imported once per process, so the command lines below find it loaded.
    (toy_aerial,) = load_plugins(["./toy_aerial.py"], entry_points=False)
    toy_aerial.make_toy_aerial("data", train=4, val=2)
    Image.fromarray(np.load("data/toy_aerial/val/0.npz")["image"]).save("tile.png")

    # Command line: the kind, the loss log_l1, the architecture and the adapter come from --plugin only.
    assert "linear_probe" not in ARCHITECTURES and "aligned_mobilenetv3" not in BACKBONE_ADAPTERS
    assert "log_l1" not in LOSSES and "positive_scalar" not in KINDS
    for line in guide_blocks("extras-shell")[0].splitlines():
        argv = shlex.split(line)
        assert argv[0] == "tsn"
        assert main(argv[1:]) == 0, capsys.readouterr().err
    assert "log_l1" in LOSSES and "positive_scalar" in KINDS and "linear_probe" in ARCHITECTURES
    predicted = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "probe-predictions").rglob("*.png"))
    assert any("shadows" in name for name in predicted) and any("semseg" in name for name in predicted), predicted

    # The kind, in Python.
    kind_session: dict[str, object] = {}
    exec(compile(guide_blocks("extras-kind")[0], "docs/extending.md", "exec"), kind_session)
    prediction, loss = kind_session["prediction"], kind_session["loss"]
    assert torch.equal(prediction, torch.exp(torch.tensor([[[[0.0, 1.0]]]])))  # type: ignore[arg-type]
    assert float(loss) == 0.0 and tsn.tasks.get_task("roof_height").kind is KINDS["positive_scalar"]  # type: ignore[arg-type]

    # The architecture and the adapter, in Python: the checkpoint names the one, the other applies by itself.
    session: dict[str, object] = {}
    exec(compile(guide_blocks("extras-python")[0], "docs/extending.md", "exec"), session)
    model, maps = session["model"], session["maps"]
    assert type(model).__name__ == "LinearProbe" and model.config.arch == "linear_probe"  # type: ignore[attr-defined]
    assert model.input_multiple == (32, 32) and "heads.shadows.weight" in model.state_dict()  # type: ignore[attr-defined]
    assert maps["semseg"].shape == (64, 64) and maps["shadows"].shape == (1, 64, 64)  # type: ignore[index]
    unadapted = BACKBONE_ADAPTERS.unregister("aligned_mobilenetv3")
    try:  # without the adapter, the same backbone takes any size: the multiple is the adapter's doing
        assert tsn.models.build_model(model.config).input_multiple == (1, 1)  # type: ignore[attr-defined]
    finally:
        register_backbone_adapter(unadapted)


def test_registrations_that_are_refused_in_one_line() -> None:
    height = TaskSpec(name="height", title="Height above ground", channels=1, kind=SCALAR, loss="depth_l1",
                      loss_weight=1.0, metric="rmse", higher_is_better=False, table_scale=1.0,
                      label_interpolation="bilinear", prediction_interpolation="bilinear")
    register_task(height)
    cases = [
        (lambda: register_task(height),
         "task 'height' is already registered (Height above ground); choose another name"),
        (lambda: register_task(TaskSpec(**{**height.__dict__, "name": "mask", "kind": BINARY, "metric": "rmse"})),
         "output kind 'binary' has no metric 'rmse'"),
        (lambda: register_task(TaskSpec(**{**height.__dict__, "name": "Bad Name"})), "not a lower-case identifier"),
        (lambda: register_dataset(DatasetSpec(name="synthetic", title="x", tasks={"height": 1}, loader="m:C")),
         "dataset 'synthetic' is already registered (tsn.data.synthetic:SyntheticScenes); choose another name"),
        (lambda: DatasetSpec(name="heights", title="x", tasks={"height": 0}, loader="m:C"),
         "channels of 'height' must be a positive integer"),
        (lambda: DatasetSpec(name="heights", title="x", tasks={"height": 1}, loader="no_colon"),
         "loader must be the dataset class or its 'module:attr'"),
        (lambda: DatasetSpec(name="heights", title="x", tasks={"elevation": 1}, loader="m:C"),
         "unknown task 'elevation'"),
        (lambda: DatasetSpec(name="heights", title="x", tasks={"height": 1}, loader="nowhere:C").loader_class(),
         "cannot load its loader 'nowhere:C'"),
        # losses, architectures, backbone adapters and kinds share one registry class: duplicates and bad entries
        (lambda: register_loss("depth_l1", lambda raw, label, **_: raw.mean()),
         "loss 'depth_l1' is already registered (tsn.training.losses.depth_l1); choose another name"),
        (lambda: register_loss("soft dice", lambda raw, label, **_: raw.mean()), "must be a Python identifier"),
        (lambda: register_architecture("tsn", print),
         "architecture 'tsn' is already registered (tsn.models.tsn.TaskSwitchingNet); choose another name"),
        (lambda: register_architecture("mine", "tsn"), "give a model class or a function of a ModelConfig"),
        (lambda: register_architecture("mine", print, task_count=0), "task_count must be a positive integer"),
        (lambda: ModelConfig(arch="transformer"),
         "config model.arch: unknown architecture 'transformer'; known: "),
        (lambda: register_backbone_adapter(BACKBONE_ADAPTERS["patch_grid"]),
         "backbone adapter 'patch_grid' is already registered"),
        (lambda: register_backbone_adapter(type("Everything", (BackboneAdapter,), {"name": "everything"})),
         "backbone adapter Everything must define matches(encoder)"),
        (lambda: register_backbone_adapter(print), "register_backbone_adapter takes a"),
        (lambda: register_kind(ScalarMap()), "output kind 'scalar' is already registered (tsn.kinds.ScalarMap)"),
        (lambda: LOSSES.lookup("dice"),
         "unknown loss 'dice'; known: cross_entropy, balanced_bce"),
    ]
    for call, message in cases:
        with pytest.raises(TsnError, match=re.escape(message)) as error:
            call()
        assert "\n" not in str(error.value)


def test_plugins_that_cannot_be_loaded_stop_the_command_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken_plugin.py").write_text("raise ValueError('no\\nway')\n")
    (tmp_path / "twice.py").write_text(
        "from tsn.dataset_catalog import DatasetSpec, register_dataset\n"
        "register_dataset(DatasetSpec(name='synthetic', title='x', tasks={'depth': 1}, loader='m:C'))\n"
    )
    (tmp_path / "twice_loss.py").write_text(
        "import tsn\n\n@tsn.register_loss('depth_l1')\ndef mine(raw, label, *, ignore_index=255):\n"
        "    return raw.mean()\n"
    )
    for argv, message in [
        (["--plugin", "./twice_loss.py", "train"], "plugin './twice_loss.py': loss 'depth_l1' is already registered "
                                                   "(tsn.training.losses.depth_l1); choose another name"),
        (["--plugin", "no_such_plugin", "train"], "plugin 'no_such_plugin' cannot be imported: no module named"),
        (["--plugin", "missing.py", "train"], "plugin 'missing.py' does not exist"),
        (["--plugin=broken_plugin", "train"],
         "plugin 'broken_plugin' failed while it was imported: ValueError: no way"),
        (["--plugin", "./twice.py", "train"], "plugin './twice.py': dataset 'synthetic' is already registered"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err

    # Installed plugins: every entry point of the group is imported before the command.
    (tmp_path / "installed_plugin.py").write_text(
        "from tsn.kinds import BINARY\nfrom tsn.tasks import TaskSpec, register_task\n"
        "register_task(TaskSpec(name='roofs', title='Roofs', channels=1, kind=BINARY, loss='balanced_bce', "
        "loss_weight=1.0, metric='mIoU', higher_is_better=True, table_scale=100.0, label_interpolation='nearest', "
        "prediction_interpolation='bilinear'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    point = metadata.EntryPoint(name="roofs", value="installed_plugin", group="tsn.plugins")
    monkeypatch.setattr("tsn.plugins.entry_point_plugins", lambda: [point])
    assert main(["train", "--list-presets"]) == 0
    assert tsn.tasks.get_task("roofs").kind is BINARY
    assert [module.__name__ for module in load_plugins()] == ["installed_plugin"]  # imported once
