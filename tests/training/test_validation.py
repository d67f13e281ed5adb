"""The validation loop and the trivial predictor, checked against scores computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from error_model import assert_close_float32
from tsn.dataset_catalog import dataset_tasks
from tsn.errors import TsnError
from tsn.precision import autocast, check_precision, native_bf16, resolve_precision
from tsn.training.criterion import criterion
from tsn.training.validation import ConstantPredictor, fit_constant_predictor, validate

SPECS = {spec.name: spec for spec in dataset_tasks("synthetic", ["semseg", "saliency", "normals", "depth"])}
WEIGHTS = {"semseg": 1.0, "saliency": 5.0, "normals": 10.0, "depth": 1.0}


def row(*values: float) -> torch.Tensor:
    """One image, one channel, one row of pixels: ``1 x 1 x 1 x W``."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def batch() -> dict[str, torch.Tensor]:
    normals = torch.zeros(1, 3, 1, 4)
    normals[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    normals[0, :, 0, 1] = torch.tensor([0.0, 1.0, 0.0])
    normals[0, :, 0, 2:] = 255.0  # invalid
    return {
        "image": torch.zeros(1, 3, 1, 4),
        "semseg": row(0, 0, 0, 1),
        "saliency": row(1, 0, 0, 0),
        "normals": normals,
        "depth": row(1.0, 3.0, 0.0, 255.0),
    }


def test_the_trivial_predictor_is_fitted_on_the_labels() -> None:
    trivial, described = fit_constant_predictor([batch()], SPECS)
    raw = trivial(torch.zeros(2, 3, 5, 6), list(SPECS))
    assert raw["semseg"].shape == (2, 7, 5, 6) and raw["semseg"][0, :, 0, 0].argmax() == 0
    assert torch.sigmoid(raw["saliency"][0, 0, 0, 0]).item() == pytest.approx(0.25)
    assert_close_float32(raw["normals"][0, :, 0, 0], [0.0, 1.0 / math.sqrt(2), 1.0 / math.sqrt(2)], reduction=3,
                         depth=2, sides=1)  # a float32 normalisation (sum of 3 squares, then a division)
    assert raw["depth"][0, 0, 0, 0].item() == pytest.approx(2.0)
    assert described["semseg"] == "majority class 0" and described["saliency"] == "constant probability 0.250"


def test_validate_scores_a_constant_predictor_as_computed_by_hand() -> None:
    trivial = ConstantPredictor({
        "semseg": torch.nn.functional.one_hot(torch.tensor(0), 7).float(),
        "saliency": torch.tensor([0.0]),  # p = 0.5
        "normals": torch.tensor([0.0, 0.0, 1.0]),
        "depth": torch.tensor([2.0]),
    })
    # InvPT's protocol scores the float predictions (no 8-bit normals), so the angles are exactly 0 and 90 degrees.
    result = validate(trivial, [batch()], SPECS, WEIGHTS, metric_tasks=["semseg", "normals", "depth"],
                      metric_options={"depth_protocol": "pooled"}, protocol="invpt")
    assert result.n_images == 1
    # semseg: IoU 3/4 for class 0 and 0 for the six others (absent classes count, as the reference does)
    assert result.metrics["semseg"]["mIoU"] == pytest.approx(0.75 / 7)
    assert result.metrics["normals"]["mErr"] == pytest.approx(45.0)  # 0 and 90 degrees
    assert result.metrics["depth"]["rmse"] == pytest.approx(1.0)  # errors 1 and 1 on the two valid pixels
    assert result.losses["depth"] == pytest.approx(1.0)
    assert result.losses["saliency"] == pytest.approx(math.log(2) * (0.75 + 3 * 0.25) / 4)  # w = 3/4 negatives
    assert result.loss == pytest.approx(sum(WEIGHTS[t] * v for t, v in result.losses.items()) / 4)
    assert set(result.metrics) == {"semseg", "normals", "depth"}


def test_the_best_criterion() -> None:
    scored = ["semseg", "depth"]
    assert criterion("loss", SPECS, {}, scored).higher_is_better is False
    semseg = criterion("seg", SPECS, {}, scored)  # aliases work
    assert semseg.name == "semseg/mIoU" and semseg.higher_is_better
    assert criterion("depth", SPECS, {}, scored).higher_is_better is False
    assert criterion("loss/normals", SPECS, {}, scored).name == "loss/normals"
    assert semseg.improved(0.5, None) and semseg.improved(0.6, 0.5) and not semseg.improved(float("nan"), 0.5)
    with pytest.raises(TsnError, match="needs the normals metric"):
        criterion("normals", SPECS, {}, scored)
    with pytest.raises(TsnError, match="does not have"):
        criterion("human_parts", SPECS, {}, scored)
    with pytest.raises(TsnError, match="reference"):
        criterion("average_drop", SPECS, {"semseg": 0.5}, list(SPECS))


def test_the_precision_policy_resolves_auto_refuses_what_the_device_cannot_run_and_autocasts() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "none")
    assert resolve_precision("fp16", cpu) == "fp16" and resolve_precision("none", "cpu") == "none"
    with pytest.raises(TsnError, match="fp16 needs a CUDA GPU"):
        check_precision("fp16", cpu)
    with pytest.raises(TsnError, match="not one of none, bf16, fp16, auto"):
        resolve_precision("fp8", cpu)
    layer, x = torch.nn.Linear(4, 4), torch.ones(2, 4)
    with autocast(cpu, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast("cpu", "none"):
        assert layer(x).dtype == torch.float32
