"""Extending tsn from outside the package: docs/extending.md, run as written, and the plugin loading.

The walkthrough's module (``toy_aerial.py``: a new task and a new dataset), its YAML config, its Python session
and its command lines are the code blocks of docs/extending.md, so the page and this test cannot drift apart.
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

import tsn.datasets
import tsn.tasks
from tsn.cli import main
from tsn.datasets import DatasetSpec, register_dataset
from tsn.errors import TsnError
from tsn.kinds import BINARY, SCALAR
from tsn.plugins import load_plugins
from tsn.tasks import TaskSpec, register_task
from tsn.training.losses import LOSSES

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def guide_blocks(label: str) -> list[str]:
    """The fenced code blocks of the guide headed by ``<!-- label -->``, in order."""
    pattern = rf"<!-- {re.escape(label)} -->\n```[a-z]*\n(.*?)```"
    return re.findall(pattern, GUIDE.read_text(), flags=re.DOTALL)


@pytest.fixture(autouse=True)
def registries_restored() -> Iterator[None]:
    """Each test's registrations (tasks, datasets, losses, the plugin module) are undone afterwards, so the rest of
    the suite sees the built-in registries only."""
    saved = [(table, dict(table)) for table in (tsn.tasks.TASKS, tsn.tasks._ALIASES, tsn.datasets._REGISTRY,
                                                 tsn.datasets._ALIASES, LOSSES)]
    modules, path = set(sys.modules), list(sys.path)
    yield
    for table, content in saved:
        table.clear()
        table.update(content)
    for name in set(sys.modules) - modules:
        if name in ("toy_aerial", "broken_plugin", "twice", "installed_plugin"):
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


def test_registrations_that_are_refused_in_one_line() -> None:
    height = TaskSpec(name="height", title="Height above ground", channels=1, kind=SCALAR, loss="depth_l1",
                      loss_weight=1.0, metric="rmse", higher_is_better=False, table_scale=1.0,
                      label_interpolation="bilinear", prediction_interpolation="bilinear")
    register_task(height)
    cases = [
        (lambda: register_task(height), "the name 'height' already means task 'height'"),
        (lambda: register_task(TaskSpec(**{**height.__dict__, "name": "mask", "kind": BINARY, "metric": "rmse"})),
         "output kind 'binary' has no metric 'rmse'"),
        (lambda: register_task(TaskSpec(**{**height.__dict__, "name": "Bad Name"})), "not a lower-case identifier"),
        (lambda: register_dataset(DatasetSpec(name="synthetic", title="x", tasks={"height": 1}, loader="m:C")),
         "'synthetic' is already registered"),
        (lambda: DatasetSpec(name="heights", title="x", tasks={"height": 0}, loader="m:C"),
         "channels of 'height' must be a positive integer"),
        (lambda: DatasetSpec(name="heights", title="x", tasks={"height": 1}, loader="no_colon"),
         "loader must be the dataset class or its 'module:attr'"),
        (lambda: DatasetSpec(name="heights", title="x", tasks={"elevation": 1}, loader="m:C"),
         "unknown task 'elevation'"),
        (lambda: DatasetSpec(name="heights", title="x", tasks={"height": 1}, loader="nowhere:C").loader_class(),
         "cannot load its loader 'nowhere:C'"),
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
        "from tsn.datasets import DatasetSpec, register_dataset\n"
        "register_dataset(DatasetSpec(name='synthetic', title='x', tasks={'depth': 1}, loader='m:C'))\n"
    )
    for argv, message in [
        (["--plugin", "no_such_plugin", "train"], "plugin 'no_such_plugin' cannot be imported: no module named"),
        (["--plugin", "missing.py", "train"], "plugin 'missing.py' does not exist"),
        (["--plugin=broken_plugin", "train"],
         "plugin 'broken_plugin' failed while it was imported: ValueError: no way"),
        (["--plugin", "./twice.py", "train"], "plugin './twice.py': dataset name 'synthetic' is already registered"),
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
