"""ONNX export: one file serving every task, reproduced by onnxruntime within 1e-4."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from tsn.checkpoint import save_checkpoint
from tsn.cli import main
from tsn.export import export_onnx, run_onnx, task_pool_matrices
from tsn.models import build_model, model_config
from tsn.models.layers import pool_channels

SMALL = dict(backbone="resnet18", decoder_channels=(32, 16, 16, 8, 8), n_fc=2, latent_dim=16)


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
        np.testing.assert_allclose(output[:, :channels], reference.numpy(), atol=1e-4, rtol=0, err_msg=task)
        assert not output[:, channels:].any()  # zero padding beyond the task's channels


def test_one_batch_can_mix_tasks(exported) -> None:
    model, path, _ = exported
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = torch.randn(2, 3, 64, 64)
    (output,) = session.run(None, {"image": image.numpy(), "task": np.array([3, 0], dtype=np.int64)})
    with torch.no_grad():
        normals, semseg = model(image[:1], "normals"), model(image[1:], "semseg")
    np.testing.assert_allclose(output[0, :3], normals[0].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(output[1], semseg[0].numpy(), atol=1e-4, rtol=0)


def test_metadata_describes_the_tasks(exported) -> None:
    model, path, _ = exported
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
    raw = torch.randn(1, 21, 3, 4)
    for index, spec in enumerate(model.task_specs.values()):
        padded = torch.einsum("oc,nchw->nohw", pools[index], raw)
        torch.testing.assert_close(padded[:, : spec.channels], pool_channels(raw, spec.channels))
        assert not padded[:, spec.channels :].any()


def test_cli_exports_a_single_task_model_without_task_input(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = build_model(model_config("single_task_r18_pascal", tasks=["normals"], **SMALL)).eval()
    save_checkpoint(tmp_path / "normals.pt", model)
    assert main(["export", "--onnx", str(tmp_path / "normals.onnx"), "--checkpoint", str(tmp_path / "normals.pt")]) == 0
    assert "inputs image; outputs output" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "normals.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(image, "normals").numpy()
    np.testing.assert_allclose(run_onnx(session, image.numpy())[0], expected, atol=1e-4, rtol=0)


def test_cli_missing_checkpoint_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["export", "--onnx", str(tmp_path / "x.onnx"), "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tsn export: error:") and "nope.pt does not exist" in err[0]
    assert not (tmp_path / "x.onnx").exists()
