"""ONNX export: one file serving every task at any size PyTorch accepts, reproduced by onnxruntime within the
float32 error model; bad task indices, opsets and output paths are refused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from error_model import assert_close_float32, network_reductions
from tsn.cli import main
from tsn.errors import TsnError
from tsn.inference.export import export_onnx, run_onnx, supported_opsets, task_pool_matrices
from tsn.models import build_model, model_config
from tsn.models.checkpoint import save_checkpoint
from tsn.models.layers import pool_channels

# ResNet-10-T: its ceil_mode average pooling is what made the exporter assume sizes divisible by 32.
SMALL = dict(backbone="resnet10t", decoder_channels=(32, 16, 16, 8, 8), n_fc=2, latent_dim=16)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(model_config("tsn_r18_pascal", **SMALL)).eval()
    path = tmp_path_factory.mktemp("onnx") / "tsn.onnx"
    report = export_onnx(model, path, verify_size=64)
    return model, path, report


def test_every_task_matches_pytorch_at_another_size_and_batch(exported) -> None:
    model, path, report = exported
    assert report.inputs == ["image", "task"] and report.outputs == ["output"]
    assert set(report.max_abs_diff) == set(model.tasks) and max(report.max_abs_diff.values()) <= 1e-4
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.randn(3, 3, 96, 128)  # not the export's probe shape: the axes are dynamic
    with torch.no_grad():
        expected = model(image)
    for index, (task, reference) in enumerate(expected.items()):
        (output,) = run_onnx(session, image.numpy(), index)
        channels = reference.shape[1]
        assert output.shape == (3, 21, 96, 128)
        assert_close_float32(output[:, :channels], reference, reduction=network_reductions(model) + [96 * 128],
                             what=task)
        assert not output[:, channels:].any()  # zero padding beyond the task's channels


def test_one_batch_can_mix_tasks(exported) -> None:
    model, path, _ = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.randn(2, 3, 64, 64)
    (output,) = session.run(None, {"image": image.numpy(), "task": np.array([3, 0], dtype=np.int64)})
    with torch.no_grad():
        normals, semseg = model(image[:1], "normals"), model(image[1:], "semseg")
    reduction = network_reductions(model) + [64 * 64]
    assert_close_float32(output[0, :3], normals[0], reduction=reduction, what="normals")
    assert_close_float32(output[1], semseg[0], reduction=reduction, what="semseg")


def test_metadata_describes_the_tasks(exported) -> None:
    _, path, _ = exported
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["tsn.tasks"]) == ["semseg", "human_parts", "edges", "normals", "saliency"]
    assert json.loads(props["tsn.task_channels"]) == {"semseg": 21, "human_parts": 7, "edges": 1, "normals": 3,
                                                      "saliency": 1}
    assert json.loads(props["tsn.task_outputs"])["normals"] == "unit_vector"
    assert json.loads(props["tsn.input_mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert json.loads(props["tsn.model_config"])["decoder_channels"] == [32, 16, 16, 8, 8]


def test_pool_matrices_are_the_model_pooling_zero_padded(exported) -> None:
    model, _, _ = exported
    pools = task_pool_matrices(model)
    assert pools.dtype == torch.float64  # rounded once, by the exporter's cast to the model's dtype
    raw = torch.randn(1, 21, 3, 4, dtype=torch.float64)
    for index, spec in enumerate(model.task_specs.values()):
        padded = torch.einsum("oc,nchw->nohw", pools[index], raw)
        # Both sides are the same float64 weights and at most 21-term sums: agreement to float64 rounding.
        torch.testing.assert_close(padded[:, : spec.channels], pool_channels(raw, spec.channels), rtol=0, atol=1e-13)
        assert not padded[:, spec.channels :].any()


def test_cli_exports_a_single_task_model_without_task_input(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = build_model(model_config("single_r18_pascal", tasks=["normals"], **SMALL)).eval()
    save_checkpoint(tmp_path / "normals.pt", model)
    assert main(["export", "--onnx", str(tmp_path / "normals.onnx"), "--checkpoint", str(tmp_path / "normals.pt")]) == 0
    assert "inputs image; outputs output" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "normals.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(image, "normals").numpy()
    assert_close_float32(run_onnx(session, image.numpy())[0], expected,
                         reduction=network_reductions(model) + [64 * 64], what="normals")


def test_cli_missing_checkpoint_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["export", "--onnx", str(tmp_path / "x.onnx"), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tsn export: error:") and "nope.pt does not exist" in err[0]
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    "height, width",
    [(100, 75), (96, 100), (80, 80), (64, 65), (33, 47), (47, 161), (130, 36), (64, 64)],
)
def test_every_size_pytorch_accepts_runs_in_onnxruntime(exported, height: int, width: int) -> None:
    """Sizes not divisible by 32, odd, non-square: every task in one mixed batch, within the float32 error
    model (both sides float32, different kernels: sides=2)."""
    model, path, _ = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height * 1000 + width))
    with torch.no_grad():
        expected = model(image)
    tasks = np.arange(len(expected), dtype=np.int64)
    (output,) = session.run(None, {"image": image.repeat(len(tasks), 1, 1, 1).numpy(), "task": tasks})
    assert output.shape == (len(tasks), 21, height, width)
    for index, (task, reference) in enumerate(expected.items()):
        channels = reference.shape[1]
        assert_close_float32(output[index : index + 1, :channels], reference,
                             reduction=network_reductions(model) + [height * width], what=f"{task} {height}x{width}")
        assert not output[index, channels:].any()


def test_out_of_range_task_index_is_an_error(exported) -> None:
    model, path, _ = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = np.zeros((1, 3, 64, 64), np.float32)
    for bad in (-1, -len(model.tasks), len(model.tasks), 100):
        with pytest.raises(Exception, match="invalid index"):  # onnxruntime's own error type
            session.run(None, {"image": image, "task": np.array([bad], np.int64)})
        with pytest.raises(TsnError, match=rf"task index {bad} is out of range; give 0 to 4 \(semseg, "):
            run_onnx(session, image, bad)
    (output,) = run_onnx(session, image, len(model.tasks) - 1)  # the last valid index still runs
    assert output.shape == (1, 21, 64, 64)


def test_written_opset_is_in_the_supported_range(exported) -> None:
    _, path, _ = exported
    lowest, highest = supported_opsets()
    opsets = {o.domain: o.version for o in onnx.load(str(path)).opset_import}
    assert lowest == 18 and lowest <= opsets.get("", opsets.get("ai.onnx")) <= highest


@pytest.mark.parametrize("opset", ["17", "7", "1000"])
def test_cli_refuses_unsupported_opsets_up_front(tmp_path, capsys, opset: str) -> None:
    lowest, highest = supported_opsets()
    # The checkpoint does not exist: the opset is refused before anything is loaded.
    code = main(["export", "--onnx", str(tmp_path / "x.onnx"), "--checkpoint", str(tmp_path / "nope.pt"),
                 "--opset", opset])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"--opset {opset} is not supported" in err[0] and f"opsets {lowest} to {highest}" in err[0]
    assert not (tmp_path / "x.onnx").exists()


def test_an_opset_the_exporter_did_not_write_is_an_error(exported, tmp_path, monkeypatch) -> None:
    """If the exporter hands back another opset than asked for, nothing is written."""
    model, path, _ = exported
    proto = onnx.load(str(path))
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    asked = written + 1 if written < supported_opsets()[1] else written - 1

    class Program:
        model_proto = proto

    monkeypatch.setattr("tsn.inference.export._run_exporter", lambda *args: Program())
    with pytest.raises(TsnError, match=f"wrote opset {written}, not the requested {asked}"):
        export_onnx(model, tmp_path / "x.onnx", opset=asked, verify_size=None)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_cli_bad_output_location_is_one_line_before_exporting(tmp_path, capsys, where: str) -> None:
    (tmp_path / "a_file").write_text("x")
    target = tmp_path if where == "folder" else tmp_path / "a_file" / "x.onnx"
    code = main(["export", "--onnx", str(target), "--checkpoint", str(tmp_path / "nope.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tsn export: error: --onnx")
    assert "nope.pt" not in err[0]  # refused before the checkpoint was even looked at
