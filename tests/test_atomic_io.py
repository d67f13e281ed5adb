"""Atomic writes behave like ordinary files (umask, kept permissions) and clean up after writers killed mid-write."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tsn.utils.io import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temp_files,
    temp_file_name,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="permission bits and kill -9 are POSIX")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def umask():
    """Set the process umask for one test (it is process-wide, so always restore it)."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda value: os.umask(value)
    os.umask(before)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """How tsn.inference.export writes an ONNX file."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def _writers():
    """A writer per kind of result the package writes: text, JSON, checkpoint, PNG, ONNX."""
    from PIL import Image

    def png(path: Path) -> None:
        with atomic_write(path) as handle:
            Image.new("RGB", (4, 4)).save(handle, format="PNG")

    return {
        "text.md": lambda p: atomic_write_text(p, "x\n"),
        "result.json": lambda p: atomic_write_json(p, {"a": 1}),
        "ckpt.pt": lambda p: atomic_torch_save({"w": [1, 2]}, p),
        "image.png": png,
        "model.onnx": lambda p: atomic_write_bytes(p, b"onnx bytes"),
    }


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_get_the_mode_open_would_give(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    reference = tmp_path / "plain.txt"
    with open(reference, "w") as handle:
        handle.write("x")
    assert _mode(reference) == 0o666 & ~mask
    for name, write in _writers().items():
        write(tmp_path / name)
        assert _mode(tmp_path / name) == 0o666 & ~mask, name


def test_replacing_a_file_keeps_its_permissions(tmp_path: Path, umask) -> None:
    umask(0o022)
    target = tmp_path / "result.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_json(target, {"new": True})
    assert _mode(target) == 0o640 and '"new": true' in target.read_text()


def test_temp_file_is_named_by_pattern_and_removed_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"partial")
        (temp,) = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
        assert temp.name.startswith(".last.pt.tsn-tmp-") and f"-{os.getpid()}-" in temp.name
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="mode"), atomic_write(target, "ab"):
        pass


def test_cleanup_removes_only_dead_writers_temp_files(tmp_path: Path) -> None:
    dead = tmp_path / temp_file_name("last.pt", pid=_dead_pid())
    alive = tmp_path / temp_file_name("best.pt", pid=os.getpid())
    foreign_recent = tmp_path / ".last.pt.tsn-tmp-00000000-1-0123abcd"  # another machine, still being written
    foreign_old = tmp_path / ".best.pt.tsn-tmp-00000000-1-4567abcd"  # another machine, untouched for 2 days
    unrelated = [tmp_path / ".last.pt.tmp", tmp_path / ".x.tsn-tmp-notahost-1-2", tmp_path / "last.pt"]
    for path in [dead, alive, foreign_recent, foreign_old, *unrelated]:
        path.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(foreign_old, (two_days_ago, two_days_ago))
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted([dead, foreign_old])
    assert all(p.exists() for p in [alive, foreign_recent, *unrelated])


def test_first_write_into_a_folder_removes_stale_temp_files(tmp_path: Path) -> None:
    stale = tmp_path / temp_file_name("preds.png", pid=_dead_pid())
    stale.write_bytes(b"x" * 1000)
    atomic_write_text(tmp_path / "other.txt", "x")
    assert not stale.exists() and (tmp_path / "other.txt").read_text() == "x"


# io.py needs only the standard library; loading it alone spares the writer process the 2-4 s torch import.
_KILLED_WRITER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("tsn_io", sys.argv[2])
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
with io.atomic_write(sys.argv[1]) as handle:
    handle.write(b"\\0" * (22 * 2**20))  # a checkpoint-sized partial file
    handle.flush()
    print("writing", flush=True)
    sys.stdin.read()  # block until killed
"""


def test_checkpoint_temp_left_by_kill_9_is_removed_on_resume(tmp_path: Path) -> None:
    from tsn.training.resume import prepare_run_dir

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"previous checkpoint")
    import tsn.utils.io

    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(run / "checkpoints" / "last.pt"), tsn.utils.io.__file__],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
        # While the writer lives, a resume elsewhere must not delete its file.
        assert remove_stale_temp_files(run / "checkpoints") == []
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    (leftover,) = [p for p in (run / "checkpoints").iterdir() if ".tsn-tmp-" in p.name]
    assert leftover.stat().st_size == 22 * 2**20
    paths = prepare_run_dir(run, resume=True, checkpoint_bytes=0)
    assert paths.removed_temp_files == (leftover,)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"previous checkpoint"
