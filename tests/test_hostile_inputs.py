"""Hostile input, class by class (issue 22): never damage, validate what is loaded, leave nothing behind, parsers,
output hygiene. Every command case asserts exit status 2, one line on stderr, nothing written or changed, and no
process left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsn.cli import main
from tsn.errors import TsnError
from tsn.models import create_model
from tsn.models.checkpoint import load_model, save_checkpoint
from tsn.utils.checks import ensure_writable_file, escaped, input_problem
from tsn.utils.io import atomic_write_text

TINY_DECODER = (16, 8, 8, 8, 8)
POSIX = os.name == "posix"


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (Linux /proc), zombies excluded."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = set(), [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def _snapshot(*folders: Path) -> dict[str, tuple[int, float, int]]:
    """Every path under ``folders`` with its mode, and for files their mtime and size: "nothing written or
    changed" (a folder's mtime is left out: the writability probe creates and removes a file in it)."""
    found = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                found[str(path)] = (info.st_mode, 0.0, 0)
            else:
                found[str(path)] = (info.st_mode, info.st_mtime, info.st_size)
    return found


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hostile")
    return save_checkpoint(folder / "tsn.pt", create_model("tsn_r18_synthetic", decoder_channels=TINY_DECODER))


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TSN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TSN_DATA_ROOT", str(tmp_path / "no-data"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(tmp_path / "in" / "image.png")
    return tmp_path


def _refused(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], *watched: Path) -> str:
    """Run ``tsn ARGV`` in-process: exit status 2, one line naming the command and ``expected``, nothing in the
    ``watched`` folders written or changed, no child process left."""
    before = _snapshot(*watched)
    linux = Path("/proc/self/stat").is_file()
    processes = _children(os.getpid()) if linux else set()
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert status == 2, (argv, status, err)
    assert len(err.splitlines()) == 1 and err.startswith(f"tsn {argv[0]}: error: "), err
    assert expected in err, (expected, err)
    assert "Traceback" not in err and "\x1b" not in err
    assert _snapshot(*watched) == before, "a file was written or changed"
    if linux:
        assert not _children(os.getpid()) - processes, "a process was left behind"
    return err


# ------------------------------------------------------------------------------------------------ never damage


@pytest.mark.skipif(not POSIX, reason="named pipes and sockets are POSIX")
@pytest.mark.parametrize("kind", ["fifo", "socket", "device"])
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_special_file_at_an_output_path_is_refused(kind, command, checkpoint, work, capsys) -> None:
    target = work / f"out-{kind}"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
        server.close()
    else:  # a character device (the same as /dev/null); only root may make one, as only root could replace one
        try:
            os.mknod(target, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, OSError):
            pytest.skip("creating a device file needs root")
    argv = {"evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "-o", str(target)],
            "export": ["export", "--checkpoint", str(checkpoint), "--onnx", str(target)]}[command]
    described = {"fifo": "a named pipe (FIFO)", "socket": "a socket", "device": "a character device"}[kind]
    _refused(argv, f"is {described}, not a regular file", capsys, work)


@pytest.mark.parametrize("command", ["evaluate", "export", "convert"])
def test_an_output_that_is_also_the_input_is_refused(command, checkpoint, work, capsys) -> None:
    copy = work / "model.pt"
    copy.write_bytes(checkpoint.read_bytes())
    argv = {"evaluate": ["evaluate", "--checkpoint", str(copy), "--dataset", "synthetic", "-o", str(copy)],
            "export": ["export", "--checkpoint", str(copy), "--onnx", str(copy)],
            "convert": ["convert", str(copy), "-o", str(copy)]}[command]
    expected = "is the authors' checkpoint itself" if command == "convert" else "is also an input of this command"
    _refused(argv, expected, capsys, work)  # convert: its own check, made before this one existed


def test_an_output_reaching_the_input_through_a_link_is_refused(checkpoint, work, capsys) -> None:
    copy = work / "model.pt"
    copy.write_bytes(checkpoint.read_bytes())
    (work / "link.onnx").symlink_to(copy)
    _refused(["export", "--checkpoint", str(copy), "--onnx", str(work / "link.onnx")], "is also an input", capsys,
             work)


@pytest.mark.parametrize("layout", ["the-input-folder", "task-folder", "panels-folder", "image-inside", "linked-image"])
def test_predict_refuses_an_output_folder_that_holds_an_input(layout, checkpoint, work, capsys) -> None:
    """``tsn predict -o OUT`` writes OUT/<task>/ and OUT/panels/: an input that is OUT or lies inside it (an input
    folder named like a task or the panels, an image there, an input folder's link to one) is refused before the
    model is loaded, and nothing is written."""
    out = work / "out"
    image = (work / "in" / "image.png").read_bytes()
    if layout == "the-input-folder":
        out, inputs = work / "in", [work / "in"]
    elif layout in ("task-folder", "panels-folder"):
        folder = out / ("semseg" if layout == "task-folder" else "panels")
        folder.mkdir(parents=True)
        (folder / "image.png").write_bytes(image)
        inputs = [folder]
    elif layout == "image-inside":
        (out / "depth").mkdir(parents=True)
        (out / "depth" / "image.png").write_bytes(image)
        inputs = [out / "depth" / "image.png"]
    else:
        (out / "semseg").mkdir(parents=True)
        (out / "semseg" / "photo.png").write_bytes(image)
        (work / "links").mkdir()
        (work / "links" / "photo.png").symlink_to(out / "semseg" / "photo.png")
        inputs = [work / "links"]
    argv = ["predict", *map(str, inputs), "--checkpoint", str(checkpoint), "-o", str(out), "--size", "64",
            "--workers", "0", "--no-progress"]
    _refused(argv, "the output folder", capsys, work)


def test_predict_into_a_folder_inside_an_input_folder_is_allowed(checkpoint, work, capsys) -> None:
    """The reverse is safe (an input folder's sub-folders are not read): predictions go to in/out."""
    assert main(["predict", str(work / "in"), "--checkpoint", str(checkpoint), "-o", str(work / "in" / "out"),
                 "--size", "64", "--workers", "0", "--no-progress", "--no-panels"]) == 0
    assert any((work / "in" / "out").rglob("image.png"))
    assert main(["predict", str(work / "in"), "--checkpoint", str(checkpoint), "-o", str(work / "in" / "out"),
                 "--size", "64", "--workers", "0", "--no-progress", "--no-panels"]) == 0  # a rerun reads no output


def test_a_symlinked_output_is_written_through_and_the_link_kept(tmp_path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert ensure_writable_file(link, "-o") == link
    atomic_write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real) and real.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "created.json")
    atomic_write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "created.json").read_text() == "made"
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    with pytest.raises(TsnError, match="symbolic link that cannot be followed"):
        ensure_writable_file(loop, "-o")
    with pytest.raises(TsnError, match="symbolic link that cannot be followed"):
        atomic_write_text(loop, "x")
    assert loop.is_symlink()


@pytest.mark.skipif(not POSIX, reason="named pipes are POSIX")
def test_the_atomic_writer_never_replaces_a_special_file(tmp_path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(TsnError, match="is a named pipe"):
        atomic_write_text(pipe, "x")
    assert stat.S_ISFIFO(pipe.lstat().st_mode) and sorted(tmp_path.iterdir()) == [pipe]


# -------------------------------------------------------------------------------------- validate what is loaded


def _tampered(checkpoint: Path, folder: Path, name: str, change) -> Path:
    payload = torch.load(checkpoint, weights_only=True)
    change(payload)
    torch.save(payload, folder / name)
    return folder / name


def _nan_weights(payload) -> None:
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key] = torch.full_like(payload["state_dict"][key], float("nan"))


TAMPERED = {
    "nan.pt": (_nan_weights, "hold NaN or infinite values"),
    "negative.pt": (lambda p: p["config"].update(decoder_channels=[-16, 8, 8, 8, 8]), "decoder_channels[0] = -16"),
    "latent.pt": (lambda p: p["config"].update(latent_dim=10**9), "latent_dim = 1000000000, outside"),
    "bool.pt": (lambda p: p["config"].update(n_fc=True), "n_fc = True, not an integer"),
    "grown.pt": (lambda p: p["config"].update(latent_dim=4000), "its model config asks for"),
}


@pytest.mark.parametrize("name", list(TAMPERED))
@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_a_tampered_checkpoint_is_refused_on_load(name, command, checkpoint, work, capsys) -> None:
    change, expected = TAMPERED[name]
    bad = _tampered(checkpoint, work, name, change)
    argv = {"predict": ["predict", str(work / "in"), "--checkpoint", str(bad), "-o", str(work / "out")],
            "evaluate": ["evaluate", "--checkpoint", str(bad), "--dataset", "synthetic", "-o", str(work / "r.json")],
            "export": ["export", "--checkpoint", str(bad), "--onnx", str(work / "m.onnx")]}[command]
    _refused(argv, expected, capsys, work)


def test_an_absurd_config_is_refused_before_the_model_is_allocated(checkpoint, work, monkeypatch) -> None:
    """A consistent-looking config whose model would need terabytes is refused before build_model allocates."""
    import tsn.models.checkpoint as reader

    bad = _tampered(checkpoint, work, "huge.pt", lambda p: p["config"].update(latent_dim=8192, n_fc=64))
    monkeypatch.setattr(reader, "build_model", lambda *a, **k: pytest.fail("the real model was built"))
    with pytest.raises(TsnError, match="the config or the weights were changed"):
        load_model(bad)


def test_a_pretrained_folder_with_a_hostile_config_is_refused_in_one_line(checkpoint, tmp_path) -> None:
    folder = tmp_path / "pretrained"
    folder.mkdir()
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(TsnError, match="pretrained config") as caught:
        load_model(folder)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------- leave nothing behind


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_workers_end_with_their_parent_after_kill_9(command, checkpoint, work) -> None:
    if command == "predict":
        for index in range(150):  # enough work that the workers outlive the moment they are seen
            Image.fromarray(np.full((40, 48, 3), index, np.uint8)).save(work / "in" / f"{index:03d}.png")
        argv = ["predict", str(work / "in"), "--checkpoint", str(checkpoint), "-o", str(work / "out"),
                "--workers", "2", "--batch-size", "1", "--no-progress"]
    else:
        argv = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "synthetic", "--dataset-option",
                "length=1000", "--batch-size", "1", "--workers", "2", "-o", str(work / "r.json"), "--no-progress"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tsn", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=environment, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and process.poll() is None:
            workers = _children(process.pid)
            if len(workers) >= 2:
                break
            time.sleep(0.2)
        assert process.poll() is None and len(workers) >= 2, "the command ended before its workers were seen"
        time.sleep(0.5)
        workers = _children(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        deadline = time.monotonic() + 5
        alive = workers
        while alive and time.monotonic() < deadline:
            alive = {pid for pid in alive if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"}
            time.sleep(0.1)
        assert not alive, f"workers {sorted(alive)} outlived their killed parent"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in _children(process.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


# ---------------------------------------------------------------------------------------------------- parsers


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


PARSER_CASES = {
    "deep yaml": (lambda w: ["train", "--config", str(w / "deep.yaml"), "--out", str(w / "run")],
                  "nested more than 32 levels deep"),
    "non-utf8 yaml": (lambda w: ["train", "--config", str(w / "latin1.yaml"), "--out", str(w / "run")],
                      "is not UTF-8 text (byte 0xe9"),
    "yaml alias bomb": (lambda w: ["train", "--config", str(w / "bomb.yaml"), "--out", str(w / "run")],
                        "stands for more than 100,000 values"),
    "yaml list": (lambda w: ["train", "--config", str(w / "list.yaml"), "--out", str(w / "run")],
                  "must hold a YAML mapping"),
    "fifo config": (lambda w: ["train", "--config", str(w / "pipe.yaml"), "--out", str(w / "run")],
                    "is a named pipe (FIFO), not a text file"),
    "deep --set": (lambda w: ["train", "--config", "tsn_r10t_synthetic", "--set", f"optim.lr={_deep(5000)}",
                              "--out", str(w / "run")], "--set optim.lr is nested more than 32 levels deep"),
    "long --set key": (lambda w: ["train", "--config", "tsn_r10t_synthetic", "--set", "a" + ".a" * 3000 + "=1",
                                  "--out", str(w / "run")], "at most 32 deep"),
    "--set wrong structure": (lambda w: ["train", "--config", "tsn_r10t_synthetic", "--set", "optim=[1, 2]",
                                         "--out", str(w / "run")], "optim must be a mapping"),
    "deep --dataset-option": (lambda w: ["evaluate", "--checkpoint", str(w / "tsn.pt"), "--dataset", "synthetic",
                                         "--dataset-option", "size=" + "{a: " * 3000, "-o", str(w / "r.json")],
                              "--dataset-option size is nested more than 32 levels deep"),
    "convert a text file": (lambda w: ["convert", str(w / "notes.pth"), "-o", str(w / "out.pt")],
                            "it is a text file; expected an authors' TSNs checkpoint"),
    "baseline not utf-8": (lambda w: ["evaluate", "--checkpoint", str(w / "tsn.pt"), "--dataset", "synthetic",
                                      "--baseline", str(w / "latin1.yaml"), "-o", str(w / "r.json")],
                           "is not UTF-8 text"),
    "deep baseline json": (lambda w: ["evaluate", "--checkpoint", str(w / "tsn.pt"), "--dataset", "synthetic",
                                      "--baseline", str(w / "deep.json"), "-o", str(w / "r.json")],
                           "nested too deeply"),
}


@pytest.mark.parametrize("case", list(PARSER_CASES))
def test_parsers_refuse_hostile_text_in_one_line(case, checkpoint, work, capsys) -> None:
    (work / "deep.yaml").write_text("optim: " + _deep(5000) + "\n")
    (work / "deep.json").write_text(_deep(100_000))
    (work / "latin1.yaml").write_bytes("optim: {lr: 0.1}  # caf\xe9\n".encode("latin-1"))
    anchors = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    anchors += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (work / "bomb.yaml").write_text("\n".join(anchors) + "\n")
    (work / "list.yaml").write_text("- 1\n- 2\n")
    (work / "notes.pth").write_text("epoch 3: loss 0.25\n")
    (work / "tsn.pt").write_bytes(checkpoint.read_bytes())
    if POSIX:
        os.mkfifo(work / "pipe.yaml")
    elif case == "fifo config":
        pytest.skip("named pipes are POSIX")
    make_argv, expected = PARSER_CASES[case]
    _refused(make_argv(work), expected, capsys, work)


# ------------------------------------------------------------------------------------------------ output hygiene


def test_names_are_printed_escaped() -> None:
    assert escaped("plain name.png") == "plain name.png"
    assert escaped("a\nb.png") == "a\\nb.png"
    assert escaped("\x1b[2J\x1b]0;title\x07.png") == "\\x1b[2J\\x1b]0;title\\x07.png"
    assert escaped(Path("caf\udce9.png")) == "caf\\xe9.png"  # an undecodable byte of the name
    assert escaped(Path("café.png")) == "café.png"


def test_what_a_command_prints_cannot_drive_the_terminal(work, capsys, monkeypatch) -> None:
    import tsn.commands.export as export_command

    monkeypatch.setattr(export_command, "run", lambda args: print("wrote \x1b]0;owned\x07\x1b[2Jout.onnx") or 0)
    assert main(["export", "--checkpoint", "x.pt", "--onnx", "y.onnx"]) == 0
    assert capsys.readouterr().out == "wrote \\x1b]0;owned\\x07\\x1b[2Jout.onnx\n"


@pytest.mark.skipif(not POSIX, reason="file names with newlines are POSIX")
def test_an_output_path_typed_with_a_newline_is_reported_on_one_line(work, capsys) -> None:
    output = work / "grid\nsecond line.png"
    assert main(["data", "show", "synthetic", "--n", "1", "--size", "32", "--no-progress", "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert output.is_file()
    assert out.count("\n") == 1 and out.startswith("wrote ") and "grid\\nsecond line.png" in out


@pytest.mark.skipif(not POSIX, reason="file names with newlines, links and pipes are POSIX")
def test_skipped_inputs_are_listed_with_their_reason_and_escaped(checkpoint, work, capsys) -> None:
    folder = work / "in"
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "dangling.png").symlink_to(folder / "missing.png")
    os.mkfifo(folder / "pipe.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "evil\x1b[2J\nname.png")
    assert input_problem(folder / "loop.png") == "a symbolic link loop"
    assert input_problem(folder / "pipe.png") == "a named pipe (FIFO)"
    status = main(["predict", str(folder), "--checkpoint", str(checkpoint), "-o", str(work / "out"), "--size", "64",
                   "--no-panels", "--save-format", "authors", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    err = captured.err
    assert "\x1b" not in err and "\x1b" not in captured.out
    assert "loop.png: a symbolic link loop" in err
    assert "dangling.png: a dangling symbolic link" in err
    assert "pipe.png: a named pipe (FIFO)" in err
    assert all(line.startswith("tsn predict: ") for line in err.splitlines()), err


def test_library_warnings_never_precede_the_one_line_error(work, capsys, monkeypatch) -> None:
    import tsn.commands.export as export_command

    def warn_then_fail(args):
        warnings.warn("a library's deprecation note", UserWarning, stacklevel=1)
        raise TsnError("the real problem")

    monkeypatch.setattr(export_command, "run", warn_then_fail)
    assert main(["export", "--checkpoint", "x.pt", "--onnx", "y.onnx"]) == 2
    assert capsys.readouterr().err == "tsn export: error: the real problem\n"

    def warn_then_succeed(args):
        warnings.warn("a library's deprecation note", UserWarning, stacklevel=1)
        print("done")
        return 0

    monkeypatch.setattr(export_command, "run", warn_then_succeed)
    assert main(["export", "--checkpoint", "x.pt", "--onnx", "y.onnx"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "done\n"
    assert captured.err == "tsn export: warning: a library's deprecation note (UserWarning)\n"


def test_no_progress_reaches_the_scene_cache_bar(work, monkeypatch) -> None:
    """Every command takes --no-progress, and it reaches bars deep in the data layer: the synthetic scene cache,
    rendered behind train, evaluate and the demo."""
    import tsn.commands.export as export_command
    import tsn.data.synthetic as synthetic
    from tsn.utils.progress import progress_enabled, showing_progress

    seen: list[bool] = []
    monkeypatch.setattr(export_command, "run", lambda args: seen.append(progress_enabled()) or 0)
    assert main(["export", "--checkpoint", "x.pt", "--onnx", "y.onnx", "--no-progress"]) == 0
    assert main(["export", "--checkpoint", "x.pt", "--onnx", "y.onnx"]) == 0
    assert seen == [False, True] and "TQDM_DISABLE" not in os.environ
    shown: list[bool] = []
    real_tqdm = synthetic.tqdm

    def recording_tqdm(*args, **kwargs):
        shown.append(not kwargs.get("disable"))
        return real_tqdm(*args, **kwargs)

    monkeypatch.setattr(synthetic, "tqdm", recording_tqdm)
    with showing_progress(False):
        assert os.environ.get("TQDM_DISABLE") == "1"
        synthetic.SyntheticScenes("val", size=64, length=4, cache_root=work / "cache", workers=1)
    assert shown == [False]  # the cache was rendered, without a bar
