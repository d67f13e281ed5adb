"""`tsn export` verifies onnxruntime against PyTorch within the float32 error model (tsn.utils.error_model), not a
fixed absolute tolerance: a model whose outputs reach about 10 (as a trained semseg head's do) exports with the
default settings, the difference an AVX2 AMD EPYC measured on such a model (1.49e-4, refused by the former fixed
1e-4) is within the bound, and a graph that is wrong (one output value, or one weight) is still refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from tsn.cli import main
from tsn.errors import TsnError
from tsn.inference import export as export_module
from tsn.models import build_model, model_config
from tsn.models.checkpoint import save_checkpoint
from tsn.utils.error_model import network_reductions, rounding_error_bound

SMALL = dict(backbone="resnet10t", decoder_channels=(32, 16, 16, 8, 8), n_fc=2, latent_dim=16)
AMD_AVX2_DIFFERENCE = 1.49e-4
"""onnxruntime - PyTorch on semseg (values up to about 10) on an AMD EPYC with AVX2 only, same graph."""


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    """A small TSN whose output layer is scaled so that its outputs reach 10, saved and exported by `tsn export`
    with its default settings."""
    torch.manual_seed(0)
    model = build_model(model_config("tsn_r18_pascal", **SMALL)).eval()
    with torch.no_grad():
        largest = max(float(out.abs().max()) for out in model(torch.randn(2, 3, 64, 64)).values())
        model.head.weight.mul_(10 / largest)
        model.head.bias.mul_(10 / largest)
    folder = tmp_path_factory.mktemp("export")
    save_checkpoint(folder / "model.pt", model)
    assert main(["export", "--onnx", str(folder / "model.onnx"), "--checkpoint", str(folder / "model.pt")]) == 0
    return model, folder / "model.pt", folder / "model.onnx"


def _verify(model: torch.nn.Module, onnx_file: Path, tolerance: float | None = None) -> tuple[dict, dict]:
    """The export's own verification of an exported file (all probes, every task)."""
    return export_module._verify(model, onnx_file.read_bytes(), onnx_file, 64, tolerance)


def test_realistic_scale_exports_with_default_settings(realistic) -> None:
    model, _, onnx_file = realistic
    assert onnx_file.is_file()
    diffs, bounds = _verify(model, onnx_file)
    assert set(diffs) == set(model.tasks)
    assert all(diffs[task] <= bounds[task] for task in diffs)
    # The bound follows the output's magnitude: semseg's values reach about 10 here, so its bound is about ten
    # times that of a task at scale 1, and above the difference the AMD machine measured.
    scale_one = rounding_error_bound(scale=1.0, reduction=[*network_reductions(model), 64 * 64])
    assert bounds["semseg"] > AMD_AVX2_DIFFERENCE and bounds["semseg"] > 5 * scale_one


def _perturbing(task_index: int, delta: float):
    """``run_onnx`` with one value of task ``task_index``'s output moved by ``delta``."""
    real = export_module.run_onnx

    def run(session, image, task=None):
        outputs = real(session, image, task)
        if task == task_index:
            outputs[0] = outputs[0].copy()
            outputs[0][0, 0, 5, 7] += delta
        return outputs

    return run


def test_the_amd_difference_passes_where_a_fixed_tolerance_refused(realistic, monkeypatch) -> None:
    model, _, onnx_file = realistic
    monkeypatch.setattr(export_module, "run_onnx", _perturbing(0, AMD_AVX2_DIFFERENCE))
    diffs, _ = _verify(model, onnx_file)
    assert diffs["semseg"] >= AMD_AVX2_DIFFERENCE / 2  # the perturbation, give or take the actual difference
    with pytest.raises(TsnError, match=r"onnxruntime differs from PyTorch by 1\.\d+e-04 on semseg .*tolerance 0\.0001"):
        _verify(model, onnx_file, tolerance=1e-4)  # what the former fixed tolerance said of a correct graph


def test_a_wrong_output_value_is_refused(realistic, monkeypatch) -> None:
    model, _, onnx_file = realistic
    _, bounds = _verify(model, onnx_file)
    monkeypatch.setattr(export_module, "run_onnx", _perturbing(3, 2 * bounds["normals"]))
    with pytest.raises(TsnError, match=r"differs from PyTorch by .* on normals at 64 x 64 .*the float32 error model "
                                       r"allows .* for values up to .*nothing written") as error:
        _verify(model, onnx_file)
    assert "\n" not in str(error.value)


def test_a_wrong_weight_is_refused_and_nothing_is_written(realistic, tmp_path, monkeypatch, capsys) -> None:
    """A graph whose output layer's bias is off by 1e-2 (1e-3 of the outputs' magnitude): refused by `tsn export`
    (the exporter is replaced by one returning that graph; the verification is the real one)."""
    _, checkpoint, onnx_file = realistic
    proto = onnx.load(str(onnx_file))
    (bias,) = [init for init in proto.graph.initializer if init.name.endswith("head.bias")]
    values = numpy_helper.to_array(bias).copy()
    values[0] += 1e-2
    bias.CopyFrom(numpy_helper.from_array(values.astype(np.float32), bias.name))

    class Program:  # what the exporter returns, holding the wrong graph
        model_proto = proto

    monkeypatch.setattr(export_module, "_run_exporter", lambda *args: Program)
    target = tmp_path / "wrong.onnx"
    assert main(["export", "--onnx", str(target), "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime differs from PyTorch by" in err and "semseg" in err, err
    assert not target.exists()
