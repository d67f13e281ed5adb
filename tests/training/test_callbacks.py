"""The training loop's callbacks: a user's callback in ``tsn train`` (from a plugin and from the config), the hook
order, the registry, one-line refusals before any work, and what refused or interrupted runs leave behind."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_runs import tiny_run

from tsn.cli import main
from tsn.errors import TsnError
from tsn.models.checkpoint import read_checkpoint
from tsn.training import Callback, load_config, register_callback, train
from tsn.training.callbacks import base as callback_registry
from tsn.training.callbacks import get_callback, list_callbacks

pytestmark = pytest.mark.usefixtures("one_thread", "synthetic_cache")

# Two epochs of three steps, validated after each: every hook of a finished run.
RUN = tiny_run({"epochs": 2, "checkpoint_every": 0})
STEP = ["before_step", "after_step"]
EPOCH = ["before_epoch", *STEP * 3, "after_validation", "after_epoch"]
FINISHED = ["before_train", *EPOCH, *EPOCH, "after_train", "close"]

RECORDER = '''
import json
from tsn.training.callbacks import HOOKS, Callback


class Recorder(Callback):
    """Appends every hook it sees (and the loop's step then) to a JSON-lines file."""

    def __init__(self, out, tag="recorder"):
        self.out, self.tag = out, tag

    def _record(self, hook, loop):
        with open(self.out, "a") as handle:
            handle.write(json.dumps({"tag": self.tag, "hook": hook, "step": loop.state.step}) + "\\n")


for _hook in HOOKS:  # every hook records its name
    setattr(Recorder, _hook, lambda self, loop, *args, _hook=_hook: self._record(_hook, loop))
'''


@pytest.fixture(autouse=True)
def registry_restored() -> Iterator[None]:
    """Registrations and the modules written by a test are undone afterwards."""
    saved, modules = dict(callback_registry.CALLBACKS), set(sys.modules)
    yield
    callback_registry.CALLBACKS.clear()
    callback_registry.CALLBACKS.update(saved)
    for name in set(sys.modules) - modules:
        if name.startswith("h2_user_") or name == "grad_norm":
            del sys.modules[name]


def recorded(path: Path, tag: str | None = None) -> list[str]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line["hook"] for line in lines if tag is None or line["tag"] == tag]


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_callback_from_a_users_module_named_in_the_config_runs_in_tsn_train_in_hook_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "h2_user_recorder.py"
    module.write_text(RECORDER)
    hooks = tmp_path / "hooks.jsonl"
    entry = {"name": f"{module}:Recorder", "options": {"out": str(hooks)}}
    config = write_config(tmp_path, {**RUN, "callbacks": [entry]})
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert recorded(hooks) == FINISHED
    steps = [json.loads(line)["step"] for line in hooks.read_text().splitlines()]
    assert steps[-1] == 6 and steps[FINISHED.index("after_step")] == 1  # after_step sees the step just done
    assert load_config(tmp_path / "run" / "config.yaml").callbacks == [entry]  # the run folder keeps it


def test_a_plugins_registered_callback_runs_in_tsn_train_with_its_options(tmp_path: Path) -> None:
    plugin = tmp_path / "h2_user_plugin.py"
    plugin.write_text(RECORDER + '\nfrom tsn.training.callbacks import register_callback\n'
                      'register_callback("h2_recorder")(Recorder)\n')
    hooks = tmp_path / "hooks.jsonl"
    config = write_config(tmp_path, {**RUN, "max_steps": 2,
                                     "callbacks": [{"name": "h2_recorder", "options": {"out": str(hooks)}}]})
    code = main(["--plugin", str(plugin), "train", "--config", str(config), "--out", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 0
    assert recorded(hooks) == ["before_train", "before_epoch", *STEP * 2, "after_validation", "after_epoch",
                               "after_train", "close"]
    assert "h2_recorder" in list_callbacks()


def test_callbacks_from_python_run_after_the_configs_and_see_the_interruption(tmp_path: Path) -> None:
    module = tmp_path / "h2_user_python.py"
    module.write_text(RECORDER)
    sys.path.insert(0, str(tmp_path))
    try:
        from h2_user_python import Recorder  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    hooks = tmp_path / "hooks.jsonl"
    config = load_config(RUN, [f"callbacks=[{{name: '{module}:Recorder', options: {{out: '{hooks}', tag: config}}}}]"])
    result = train(config, tmp_path / "run", stop_at_step=2, progress=False,
                   callbacks=[Recorder(str(hooks), tag="python")])
    assert result.status == "interrupted"
    expected = ["before_train", "before_epoch", *STEP * 2, "on_interrupt", "after_train", "close"]
    assert recorded(hooks, "config") == recorded(hooks, "python") == expected
    tags = [json.loads(line)["tag"] for line in hooks.read_text().splitlines()]
    assert tags[:2] == ["config", "python"]  # each hook: the config's callbacks first, then Python's


def test_the_registry_refuses_a_duplicate_and_an_unknown_name_in_one_line() -> None:
    @register_callback("h2_twice")
    class First(Callback):
        pass

    with pytest.raises(TsnError, match="callback 'h2_twice' is already registered") as caught:
        register_callback("h2_twice")(Callback)
    assert "\n" not in str(caught.value) and "First" in str(caught.value)
    assert get_callback("h2_twice") is First
    with pytest.raises(TsnError, match=r"unknown callback 'h2_nope'; known: .*h2_twice") as unknown:
        get_callback("h2_nope")
    assert "\n" not in str(unknown.value)
    with pytest.raises(TsnError, match="must be a Python identifier"):  # "module:Name" is how a config says import
        register_callback("a:b")(First)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("h2_not_registered", "unknown callback 'h2_not_registered'"),
        ("h2_user_missing_module:Thing", "cannot be imported"),
        ({"name": "tsn.training.callbacks:NoSuchClass"}, "has no class 'NoSuchClass'"),
        ({"name": "tsn.training.callbacks:ProgressBar", "option": {}}, "unknown key 'option'"),
        ({"name": "tsn.training.callbacks:ProgressBar", "options": {"colour": "red"}}, "cannot be built"),
        ({"name": "tsn.training.callbacks:list_callbacks"}, "is not a subclass of tsn.training.callbacks.Callback"),
        ({"name": "os:system", "options": {"command": "touch pwned"}}, "os:system': system is not a subclass"),
    ],
    ids=["unregistered", "no-module", "no-class", "bad-entry", "bad-option", "not-a-callback", "any-function"],
)
def test_a_bad_callback_in_the_config_is_one_line_exit_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, entry: Any, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, {**RUN, "callbacks": [entry]})
    run = tmp_path / "run"
    code = main(["train", "--config", str(config), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # no run folder, nothing else (no pwned)


def test_a_refused_resume_changes_no_file_and_creates_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train(load_config(RUN, ["max_steps=1", "validation.metrics=false", "tensorboard=false"]), run, progress=False)
    (run / "train.log").unlink()  # a run folder copied with what resuming needs only
    (run / "result.json").unlink()
    (run / "history.json").unlink()
    (run / "checkpoints" / "best.pt").unlink()
    before = files(run)
    # A checkpoint whose weights do not fit the (changed) model, then one without a training state.
    code = main(["train", "--resume", str(run), "--set", "model.decoder_channels=[16, 8, 8, 8, 4]", "--no-progress"])
    assert code == 2 and "weight" in capsys.readouterr().err
    assert files(run) == before
    # Other parameter groups cannot take the checkpoint's optimizer state: refused, not a traceback.
    code = main(["train", "--resume", str(run), "--set", "optim.layer_decay=0.8", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "does not fit this config" in err and "Traceback" not in err, err
    assert files(run) == before
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(b"not a checkpoint")
    before = files(run)
    code = main(["train", "--resume", str(run), "--no-progress"])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1
    assert files(run) == before


def test_a_refused_run_creates_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsn.training import resume as resume_module

    real = resume_module.shutil.disk_usage
    monkeypatch.setattr(resume_module.shutil, "disk_usage", lambda path: real(path)._replace(free=10_000))
    with pytest.raises(TsnError, match="MiB free on the disk"):
        train(load_config(RUN), tmp_path / "new" / "run", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_run_leaves_only_what_resume_uses(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(load_config(RUN, ["checkpoint_every=1"]), run, stop_at_step=2, progress=False)
    assert result.status == "interrupted"
    left = {name for name in files(run) if not name.startswith("tensorboard/events.out.tfevents.")}
    # config.yaml and last.pt to resume, the log and result.json for people; no temporary or probe file.
    assert left == {"config.yaml", "checkpoints/last.pt", "train.log", "result.json"}
    assert read_checkpoint(run / "checkpoints" / "last.pt")["training"]["state"]["step"] == 2


# ------------------------------------------------------------------------------------- docs/training.md, as written

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def guide_block(label: str) -> str:
    """The fenced code block of docs/training.md headed by ``<!-- label -->``."""
    (block,) = re.findall(rf"<!-- {re.escape(label)} -->\n```[a-z]*\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    return block


def test_the_guides_callback_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "grad_norm.py").write_text(guide_block("callback-module"))
    config = yaml.safe_load(guide_block("callback-config"))
    assert config.pop("base") == "tsn_r10t_synthetic"
    (tmp_path / "my_run.yaml").write_text(yaml.safe_dump({**RUN, **config}))  # the tiny run, with the guide's lines

    command = shlex.split(guide_block("callback-command"))
    assert command[0] == "tsn"
    assert main([*command[1:], "--no-progress"]) == 0
    log = (tmp_path / "runs" / "grad-norm" / "train.log").read_text()
    assert re.findall(r"step (\d+): gradient norm \d+\.\d+ \(tasks semseg, ", log) == ["2", "4", "6"]

    exec(compile(guide_block("callback-python"), "docs/training.md", "exec"), {"__name__": "__guide__"})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("finished (6, ")
    python_log = (tmp_path / "runs" / "grad-norm-python" / "train.log").read_text()
    assert python_log.count("gradient norm") == 3  # the config's callback was dropped: only the Python one ran


def test_early_stopping_ends_the_run_as_finished_and_a_resume_ends_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tsn.training.criterion import Criterion

    monkeypatch.setattr(Criterion, "improved", lambda self, value, best: best is None)  # only the first validation
    config = load_config(RUN, ["epochs=5", "callbacks=[{name: early_stopping, options: {patience: 2}}]"])
    run = tmp_path / "run"
    result = train(config, run, progress=False)
    assert result.status == "finished" and result.epoch == 3 and result.step == 9  # best at 1, then 2 without
    assert result.best is not None and result.best["epoch"] == 1
    assert read_checkpoint(run / "checkpoints" / "last.pt")["training"]["state"]["epoch"] == 3
    assert "early stopping: loss has not improved in 2 validations" in (run / "train.log").read_text()
    again = train(None, run, resume=True, progress=False)
    assert again.status == "finished" and again.step == 9
    with pytest.raises(TsnError, match="patience must be at least 1"):
        train(load_config(RUN, ["callbacks=[{name: early_stopping, options: {patience: 0}}]"]), tmp_path / "x",
              progress=False)
    assert not (tmp_path / "x").exists()
