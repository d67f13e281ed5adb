"""Bad input to every ``tsn`` command: one line on stderr, exit status 2, before any work, nothing left behind.

Each case calls :func:`tsn.cli.main` in-process and checks that (1) the status is 2, (2) stderr is exactly one
line, names the command and says what is wrong, with no traceback and no terminal escape code, and (3) no file
or folder appeared in the working folder (the default output location) or next to the named output. The cases
cover the three classes of the reliability issue: output locations, out-of-range or malformed options, and files
that are not checkpoints. None of them builds a dataset or runs a model: the checks come first.
"""

from __future__ import annotations

import os
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsn.cli import main
from tsn.errors import TsnError
from tsn.models import create_model
from tsn.models.checkpoint import FORMAT, describe_file, save_checkpoint
from tsn.utils import checks

TINY_DECODER = (16, 8, 8, 8, 8)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Files:
    """Inputs shared by every case (made once per module): a good checkpoint and image, and bad files."""

    root: Path
    checkpoint: Path
    image: Path
    a_file: Path
    unwritable: Path
    """A folder path that cannot be created (under /proc), for any user, root included."""

    def bad(self, name: str) -> Path:
        return self.root / "bad" / name


def _write_bad_checkpoints(folder: Path) -> None:
    folder.mkdir()
    (folder / "empty.pt").write_bytes(b"")
    (folder / "notes.pt").write_text("epoch 3: loss 0.25\nthe weights are elsewhere\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "picture.png")
    (folder / "random.bin").write_bytes(b"\x07" + random.Random(0).randbytes(511))  # fixed, no known signature
    with zipfile.ZipFile(folder / "archive.pt", "w") as archive:
        archive.writestr("readme.txt", "not a torch file")
    torch.save(torch.zeros(2, 3), folder / "tensor.pt")
    torch.save({"conv.weight": torch.zeros(1)}, folder / "state_dict.pt")
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}, "epoch": 3}, folder / "lightning.ckpt")
    torch.save({"model_state": {"conv.weight": torch.zeros(1)}}, folder / "tsns_model.pth")
    torch.save({"format": FORMAT, "format_version": 1}, folder / "marker_only.pt")
    (folder / "run_without_checkpoint").mkdir()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("bad_input")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "tsn.pt", create_model("tsn_r18_synthetic", decoder_channels=TINY_DECODER))
    image = root / "image.png"
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(image)
    a_file = root / "a_file"
    a_file.write_text("an ordinary file where a folder is expected\n")
    _write_bad_checkpoints(root / "bad")
    return Files(root, checkpoint, image, a_file, Path("/proc/tsn-bad-input-test"))


@pytest.fixture
def work(tmp_path: Path, files: Files, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder (default outputs land here); caches outside it, so it must stay empty."""
    monkeypatch.setenv("TSN_CACHE_DIR", str(files.root / "cache"))
    monkeypatch.setenv("TSN_DATA_ROOT", str(files.root / "no-data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``tsn ARGV`` in-process: (exit status, stderr); argument errors exit through argparse's SystemExit."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code  # type: ignore[assignment]
    return status, capsys.readouterr().err


def _assert_one_line_error(argv: list[str], expected: str, capsys, *folders: Path) -> str:
    before = [_tree(folder) for folder in folders]
    status, err = _run(argv, capsys)
    lines = err.splitlines()
    assert status == 2, (argv, status, err)
    assert len(lines) == 1 and err.endswith("\n"), err
    command = argv[0]
    assert lines[0].startswith(f"tsn {command}: error: "), err
    assert expected in lines[0], (expected, err)
    assert "Traceback" not in err and "\x1b" not in err, err
    assert [_tree(folder) for folder in folders] == before, "a file or folder was left behind"
    return lines[0]


# ------------------------------------------------------------------------------------------- output locations

Case = Callable[[Files, Path], list[str]]

OUTPUT_CASES: dict[str, tuple[Case, str]] = {
    "predict -o is a file": (
        lambda f, w: ["predict", str(f.image), "--checkpoint", str(f.checkpoint), "-o", str(f.a_file)],
        "is an existing file, not a folder"),
    "predict -o under a file": (
        lambda f, w: ["predict", str(f.image), "--checkpoint", str(f.checkpoint), "-o", str(f.a_file / "out")],
        "is a file, not a folder"),
    "predict -o unwritable": (
        lambda f, w: ["predict", str(f.image), "--checkpoint", str(f.checkpoint), "-o", str(f.unwritable)],
        "cannot write into /proc"),
    "analyze -o is a file": (
        lambda f, w: ["analyze", "--checkpoint", str(f.checkpoint), "-o", str(f.a_file)],
        "is an existing file, not a folder"),
    "analyze -o unwritable": (
        lambda f, w: ["analyze", "--checkpoint", str(f.checkpoint), "-o", str(f.unwritable)],
        "cannot write into /proc"),
    "evaluate -o is a folder": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic", "-o", str(w)],
        "is a folder, not a file"),
    "evaluate -o under a file": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic",
                      "-o", str(f.a_file / "result.json")],
        "is a file, not a folder"),
    "evaluate -o unwritable": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic",
                      "-o", str(f.unwritable / "result.json")],
        "cannot write into /proc"),
    "evaluate --save-predictions is a file": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic",
                      "--save-predictions", str(f.a_file), "-o", str(w / "r.json")],
        "--save-predictions"),
    "data show -o is a folder": (
        lambda f, w: ["data", "show", "synthetic", "-o", str(w)], "is a folder, not a file"),
    "data show -o under a file": (
        lambda f, w: ["data", "show", "synthetic", "-o", str(f.a_file / "grid.png")], "is a file, not a folder"),
    "benchmark -o is a folder": (
        lambda f, w: ["benchmark", "--quick", "--device", "cpu", "-o", str(w)], "is a folder, not a file"),
    "benchmark -o unwritable": (
        lambda f, w: ["benchmark", "--quick", "--device", "cpu", "-o", str(f.unwritable / "b.json")],
        "cannot write into /proc"),
    "train --out is a file": (
        lambda f, w: ["train", "--config", "tsn_r10t_synthetic", "--out", str(f.a_file)], "is an existing file"),
    "train --out unwritable": (
        lambda f, w: ["train", "--config", "tsn_r10t_synthetic", "--out", str(f.unwritable)],
        "cannot write into /proc"),
    "demo --out is a file": (lambda f, w: ["demo", "--out", str(f.a_file)], "is an existing file"),
    "reproduce --out under a file": (
        lambda f, w: ["reproduce", "--out", str(f.a_file / "table")], "is a file, not a folder"),
    "download --root is a file": (
        lambda f, w: ["download", "nyud", "--root", str(f.a_file)], "is an existing file, not a folder"),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_bad_output_location_is_one_line_before_any_work(case, files, work, capsys) -> None:
    make_argv, expected = OUTPUT_CASES[case]
    if case.endswith("unwritable") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    _assert_one_line_error(make_argv(files, work), expected, capsys, work, files.root / "bad")
    assert files.a_file.is_file() and not files.unwritable.exists()


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders; the /proc and under-a-file cases cover it")
def test_read_only_folder_is_refused_before_the_evaluation(files, work, capsys) -> None:
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        argv = ["evaluate", "--checkpoint", str(files.checkpoint), "--dataset", "synthetic",
                "-o", str(locked / "sub" / "r.json")]
        _assert_one_line_error(argv, "cannot write into", capsys, work)
    finally:
        locked.chmod(0o700)


def test_train_refuses_a_folder_that_holds_a_run_before_reading_data(files, work, capsys) -> None:
    (work / "run" / "checkpoints").mkdir(parents=True)
    (work / "run" / "checkpoints" / "last.pt").write_bytes(b"x")
    argv = ["train", "--config", "tsn_r10t_synthetic", "--out", str(work / "run")]
    _assert_one_line_error(argv, "already holds a run", capsys, work)


# ---------------------------------------------------------------------------------- options out of range

OPTION_CASES: dict[str, tuple[Case, str]] = {
    "predict --workers -1": (
        lambda f, w: ["predict", str(f.image), "--checkpoint", str(f.checkpoint), "-o", "out", "--workers", "-1"],
        "--workers must be at least 0, got -1"),
    "predict --batch-size 0": (
        lambda f, w: ["predict", str(f.image), "--checkpoint", str(f.checkpoint), "-o", "out", "--batch-size", "0"],
        "must be at least 1, got 0"),
    "predict --size 8": (
        lambda f, w: ["predict", str(f.image), "--checkpoint", str(f.checkpoint), "-o", "out", "--size", "8"],
        "--size must be at least 64 x 64 for this model"),
    "predict missing inputs": (
        lambda f, w: ["predict", "nowhere.png", "--checkpoint", str(f.checkpoint), "-o", "out"],
        "none of the inputs exist"),
    "evaluate --batch-size 0": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic", "--batch-size", "0"],
        "--batch-size must be at least 1, got 0"),
    "evaluate --workers -1": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic", "--workers", "-1"],
        "--workers must be at least 0, got -1"),
    "evaluate unknown dataset option": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic",
                      "--dataset-option", "foo=1"],
        "'foo' is not an option of the synthetic dataset; valid options: size, length, seed"),
    "evaluate dataset option of the wrong type": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic",
                      "--dataset-option", "size=big"],
        "size='big' has the wrong type for the synthetic dataset; expected int"),
    "evaluate unknown pascal option": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset-option", "size=64"],
        "valid options: parts_cache_dir, check_files"),
    "evaluate unknown edge protocol": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic",
                      "--edge-protocol", "sobel"],
        "unknown edge protocol 'sobel'"),
    "evaluate --size 0": (
        lambda f, w: ["evaluate", "--checkpoint", str(f.checkpoint), "--dataset", "synthetic", "--size", "0"],
        "--size 0: each side must be from 1 to 2048"),
    "data show --n 0": (lambda f, w: ["data", "show", "synthetic", "--n", "0"], "--n must be at least 1, got 0"),
    "data show --size -1": (lambda f, w: ["data", "show", "synthetic", "--size", "-1"], "--size must be at least 1"),
    "data show unknown dataset": (lambda f, w: ["data", "show", "coco"], "unknown dataset 'coco'"),
    "benchmark --repeats 0": (lambda f, w: ["benchmark", "--quick", "--repeats", "0"], "--repeats must be at least 1"),
    "benchmark --threads -1": (
        lambda f, w: ["benchmark", "--quick", "--threads", "-1"], "--threads must be at least 1"),
    "benchmark --train-batch 0": (
        lambda f, w: ["benchmark", "--quick", "--train-batch", "0"], "--train-batch must be at least 1"),
    "benchmark --train-size 16": (lambda f, w: ["benchmark", "--quick", "--train-size", "16"],
                                  "must be at least 64 x 64 for this model"),
    "benchmark --sizes 8": (lambda f, w: ["benchmark", "--quick", "--sizes", "8"],
                            "must be at least 64 x 64 for this model"),
    "benchmark --batches 0": (lambda f, w: ["benchmark", "--batches", "0"], "expected positive integers"),
    "demo --steps -1": (lambda f, w: ["demo", "--steps", "-1"], "--steps must be at least 1, got -1"),
    "demo --size 50": (lambda f, w: ["demo", "--size", "50"], "multiple of 32 of at least 64"),
    "demo --threads 0": (lambda f, w: ["demo", "--threads", "0"], "--threads must be at least 1"),
    "demo --train-images 0": (lambda f, w: ["demo", "--train-images", "0"], "--train-images must be at least 1"),
    "demo --set optim.lr=0": (lambda f, w: ["demo", "--set", "optim.lr=0"], "config optim.lr must be greater than 0"),
    "reproduce --jobs 0": (lambda f, w: ["reproduce", "--jobs", "0"], "--jobs must be at least 1, got 0"),
    "train --label-fraction without =": (
        lambda f, w: ["train", "--config", "tsn_r10t_synthetic", "--label-fraction", "semseg", "--out", str(w / "r")],
        "--label-fraction 'semseg': expected TASK=FRACTION"),
    "train --label-fraction 0": (
        lambda f, w: ["train", "--config", "tsn_r10t_synthetic", "--label-fraction", "semseg=0", "--out", str(w / "r")],
        "config label_fractions.semseg must lie in (0, 1], got 0.0"),
    "train --label-fraction 1.5": (
        lambda f, w: ["train", "--config", "tsn_r10t_synthetic", "--label-fraction", "depth=1.5", "--out", str(w)],
        "config label_fractions.depth must lie in (0, 1], got 1.5"),
    "train --label-fraction of a task the run lacks": (
        lambda f, w: ["train", "--config", "tsn_r10t_synthetic", "--set", "model.tasks=[semseg,depth]",
                      "--label-fraction", "normals=0.5", "--out", str(w / "r")],
        "config label_fractions names 'normals', which is not a task of this run (semseg, depth)"),
    "reproduce --workers -1": (lambda f, w: ["reproduce", "--workers", "-1"], "--workers must be at least 0"),
    "reproduce --set optim.lr=-1": (
        lambda f, w: ["reproduce", "--set", "optim.lr=-1"], "config optim.lr must be greater than 0, got -1.0"),
    "download malformed url": (
        lambda f, w: ["download", "nyud", "--root", "data", "--url", "htp:/mirror"], "unsupported scheme 'htp'"),
    "download url without scheme": (
        lambda f, w: ["download", "nyud", "--root", "data", "--url", "mirror.org/NYUD_MT.tgz"], "has no scheme"),
    "download url without host": (
        lambda f, w: ["download", "nyud", "--root", "data", "--url", "https:///NYUD_MT.tgz"], "has no host name"),
    "download url with a bad port": (
        lambda f, w: ["download", "nyud", "--root", "data", "--url", "https://mirror.org:99999/x.tgz"],
        "is not a valid URL"),
    "download bad sha256": (
        lambda f, w: ["download", "nyud", "--root", "data", "--sha256", "abc"], "is not a SHA-256 digest"),
    "download missing archive": (
        lambda f, w: ["download", "nyud", "--root", "data", "--archive", "nowhere.tgz"], "does not exist"),
    "download unknown dataset": (lambda f, w: ["download", "coco", "--root", "data"], "unknown dataset 'coco'"),
}

# Training config values: each refused with the key named, before a run folder exists or data is read.
CONFIG_CASES = {
    "optim.lr=0": "config optim.lr must be greater than 0, got 0.0; fix it in the config file or with --set optim.lr",
    "optim.lr=-0.1": "config optim.lr must be greater than 0",
    "optim.lr=.nan": "config optim.lr must be a finite number",
    "optim.encoder_lr=-1": "config optim.encoder_lr must be 0 or more",
    "optim.weight_decay=-1": "config optim.weight_decay must be 0 or more",
    "optim.momentum=1.5": "config optim.momentum must lie in [0, 1)",
    "optim.grad_clip=0": "config optim.grad_clip must be greater than 0",
    "scheduler.factor=1": "config scheduler.factor must lie in (0, 1)",
    "scheduler.patience=-1": "config scheduler.patience must be 0 or more",
    "scheduler.warmup_steps=-3": "config scheduler.warmup_steps must be 0 or more",
    "scheduler.min_lr_ratio=2": "config scheduler.min_lr_ratio must lie in [0, 1]",
    "data.num_workers=-1": "config data.num_workers must be 0 or more, got -1",
    "data.size=0": "config data.size must be one or two positive integers",
    "data.options.foo=1": "config data.options: 'foo' is not an option of the synthetic dataset; valid options:",
    "data.val_options.length=many": "config data.val_options: length='many' has the wrong type",
    "data.dataset=coco": "config data.dataset: unknown dataset 'coco'",
    "batch_size=0": "config batch_size must be at least 1, got 0",
    "epochs=-1": "config epochs must be at least 1",
    "max_steps=0": "config max_steps must be at least 1",
    "grad_accum=0": "config grad_accum must be at least 1",
    "log_every=0": "config log_every must be at least 1",
    "checkpoint_every=-1": "config checkpoint_every must be 0 or more",
    "seed=-1": "config seed must be 0 or more",
    "validation.every=-1": "config validation.every must be 0 or more",
    "validation.max_images=0": "config validation.max_images must be at least 1",
    "validation.batch_size=0": "config validation.batch_size must be at least 1",
    "loss_weights.semseg=-1": "config loss_weights.semseg must be 0 or more",
    "model.decoder_channels=[16,8,0,8,8]": "config model.decoder_channels must be at least 1, got 0",
    "model.latent_dim=0": "config model.latent_dim must be at least 1",
    "device=tpu": "config device: 'tpu' is not a device",
    "batch_size=1.5": "config batch_size: expected int, got 1.5",
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_option_is_one_line_before_any_work(case, files, work, capsys) -> None:
    make_argv, expected = OPTION_CASES[case]
    _assert_one_line_error(make_argv(files, work), expected, capsys, work)


@pytest.mark.parametrize("override", list(CONFIG_CASES))
def test_bad_training_config_value_leaves_no_run_folder(override, work, capsys) -> None:
    argv = ["train", "--config", "tsn_r10t_synthetic", "--set", override, "--out", str(work / "run")]
    _assert_one_line_error(argv, CONFIG_CASES[override], capsys, work)
    assert not (work / "run").exists()


def test_every_packaged_preset_passes_the_config_checks() -> None:
    from tsn.training import list_presets, load_config

    for preset in list_presets():
        load_config(preset)


def test_argument_errors_are_one_line(work, capsys) -> None:
    for argv in (["predict"], ["data", "show", "synthetic", "--n", "many"], ["no-such-command"]):
        status, err = _run(argv, capsys)
        assert status == 2 and len(err.splitlines()) == 1 and "error:" in err and "--help" in err, (argv, err)


# ---------------------------------------------------------------------------------- files that are not checkpoints

CHECKPOINT_CASES = {
    "empty.pt": "is an empty file; expected a tsn checkpoint",
    "notes.pt": "it is a text file; expected a tsn checkpoint",
    "picture.png": "it is a PNG image; expected a tsn checkpoint",
    "random.bin": "it is a binary file of unknown format",
    "archive.pt": "it is a zip archive that is not a torch file",
    "tensor.pt": "it is a torch file holding a single tensor of shape (2, 3), not a model checkpoint",
    "state_dict.pt": "it is a raw state dict of 1 tensors without tsn metadata; if it holds the authors' weights, "
                     "convert it with `tsn convert`",
    "lightning.ckpt": "a 'state_dict' but no model config",
    "tsns_model.pth": "is an authors' TSNs checkpoint; convert it first: tsn convert",
    "marker_only.pt": "lacks its model config or weights",
    "run_without_checkpoint": "is a folder without checkpoints/best.pt",
    "missing.pt": "does not exist",
}


@pytest.mark.parametrize("command", ["predict", "evaluate", "analyze"])
@pytest.mark.parametrize("name", list(CHECKPOINT_CASES))
def test_a_file_that_is_not_a_checkpoint_is_named_in_one_line(command, name, files, work, capsys) -> None:
    checkpoint = str(files.bad(name))
    argv = {
        "predict": ["predict", str(files.image), "--checkpoint", checkpoint, "-o", str(work / "out")],
        "evaluate": ["evaluate", "--checkpoint", checkpoint, "--dataset", "synthetic", "-o", str(work / "r.json")],
        "analyze": ["analyze", "--checkpoint", checkpoint, "-o", str(work / "out")],
    }[command]
    _assert_one_line_error(argv, CHECKPOINT_CASES[name], capsys, work, files.root / "bad")


def test_describe_file_names_common_formats(tmp_path) -> None:
    (tmp_path / "a.json").write_text('{"a": 1}')
    (tmp_path / "a.npy").write_bytes(b"\x93NUMPY\x01\x00")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04garbage")
    assert describe_file(tmp_path / "a.json") == "a text file (JSON?)"
    assert describe_file(tmp_path / "a.npy") == "a NumPy .npy array"
    assert describe_file(tmp_path / "a.jpg") == "a JPEG image"
    assert describe_file(tmp_path / "cut.pt") == "a damaged or truncated zip / torch file"
    assert describe_file(tmp_path) == "a folder"


# ------------------------------------------------------------------------------------- the shared checks module


def test_one_line_removes_escape_codes_and_newlines() -> None:
    assert checks.one_line("\x1b[31mred\x1b[0m\nsecond\tline\r\n") == "red second line"
    assert checks.one_line("\x1b]0;title\x07ok") == "ok"
    assert len(checks.one_line("x" * 1000, limit=50)) == 50


def test_ensure_writable_dir_creates_only_when_asked(tmp_path) -> None:
    assert checks.ensure_writable_dir(tmp_path / "a" / "b", "--out", create=False) == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    assert checks.ensure_writable_dir(tmp_path / "a" / "b", "--out").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is removed


def test_ensure_writable_file(tmp_path) -> None:
    (tmp_path / "old.json").write_text("{}")
    assert checks.ensure_writable_file(tmp_path / "old.json", "-o") == tmp_path / "old.json"  # replaced later
    assert checks.ensure_writable_file(tmp_path / "new" / "r.json", "-o", create_parent=False).name == "r.json"
    assert not (tmp_path / "new").exists()
    with pytest.raises(TsnError, match="is a folder, not a file"):
        checks.ensure_writable_file(tmp_path, "-o")


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (checks.require_positive, 0, "must be greater than 0, got 0"),
        (checks.require_positive, float("inf"), "must be a finite number"),
        (checks.require_positive, True, "must be a number"),
        (checks.require_non_negative, -1, "must be 0 or more, got -1"),
        (checks.require_non_negative, "1", "must be a number"),
        (lambda name, value: checks.require_int(name, value, minimum=1), 2.0, "must be an integer"),
        (lambda name, value: checks.require_fraction(name, value, include_one=False), 1.0, "must lie in [0, 1)"),
    ],
)
def test_number_checks(check, value, message) -> None:
    with pytest.raises(TsnError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        check("--x", value)


def test_number_checks_return_valid_values() -> None:
    assert checks.require_positive("--x", 0.5) == 0.5 and checks.require_non_negative("--x", 0) == 0
    assert checks.require_int("--x", 3, minimum=3) == 3 and checks.require_fraction("--x", 1) == 1


def test_cli_turns_a_late_os_error_into_one_line(monkeypatch, capsys) -> None:
    import tsn.commands.analyze as analyze

    def run(_args):
        raise PermissionError(13, "Permission denied", "/results/analysis.json")

    monkeypatch.setattr(analyze, "run", run)
    status, err = _run(["analyze", "--checkpoint", "x.pt", "-o", "out"], capsys)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("tsn analyze: error: Permission denied (/results/analysis.json)")


def test_building_the_command_line_imports_neither_torch_nor_matplotlib() -> None:
    """``tsn --help`` and every argument error come before the heavy imports (about 0.4 s instead of 5 s)."""
    import subprocess
    import sys

    code = (
        "import sys; from tsn.cli import build_parser; build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'scipy', 'timm'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
