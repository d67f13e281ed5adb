"""Task losses: hand-computed values, ignore handling, empty labels, and dispatch from the task registry."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tsn.errors import TsnError
from tsn.tasks import TASKS, get_task
from tsn.training.losses import (
    LOSSES,
    balanced_bce,
    cross_entropy,
    depth_l1,
    loss_weights,
    multitask_loss,
    normals_l1,
    task_loss,
)

LN2 = math.log(2.0)


def grid(*values: float) -> torch.Tensor:
    """A ``1 x 1 x 1 x len(values)`` map (one image, one channel, one row)."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


def test_cross_entropy_by_hand_skips_ignored_pixels() -> None:
    # Logits (0, ln 3) give probabilities (1/4, 3/4) at every pixel.
    raw = torch.zeros(1, 2, 1, 3)
    raw[:, 1] = math.log(3.0)
    label = grid(1, 0, 255)
    expected = (-math.log(3 / 4) - math.log(1 / 4)) / 2  # the ignored pixel counts in neither sum nor mean
    assert cross_entropy(raw, label).item() == pytest.approx(expected, rel=1e-6)


def test_balanced_bce_fixed_weight_for_edges() -> None:
    # Logit 0 -> p = 1/2: a positive pixel costs 0.95 ln 2, a negative one 0.05 ln 2; mean over valid pixels.
    raw = torch.zeros(1, 1, 1, 4)
    label = grid(1, 0, 0, 255)
    assert balanced_bce(raw, label, pos_weight=0.95).item() == pytest.approx((0.95 + 2 * 0.05) * LN2 / 3, rel=1e-6)


def test_balanced_bce_batch_weight_for_saliency() -> None:
    # One positive and three negatives in the batch: w = 3/4 (the fraction of negatives).
    raw = torch.zeros(2, 1, 1, 2)
    label = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    expected = (0.75 * LN2 + 3 * 0.25 * LN2) / 4
    assert balanced_bce(raw, label).item() == pytest.approx(expected, rel=1e-6)


def test_balanced_bce_by_hand_with_nonzero_logits() -> None:
    raw = grid(2.0, -1.0)
    label = grid(1, 0)
    w = 0.95
    expected = (w * -math.log(1 / (1 + math.exp(-2.0))) + (1 - w) * -math.log(1 - 1 / (1 + math.exp(1.0)))) / 2
    assert balanced_bce(raw, label, pos_weight=w).item() == pytest.approx(expected, rel=1e-6)


def test_normals_l1_normalises_the_prediction_and_skips_invalid_pixels() -> None:
    raw = torch.zeros(1, 3, 1, 3)
    raw[0, :, 0, 0] = torch.tensor([2.0, 0.0, 0.0])  # normalised to (1, 0, 0)
    raw[0, :, 0, 1] = torch.tensor([5.0, 5.0, 5.0])  # under an ignored label
    raw[0, :, 0, 2] = torch.tensor([-3.0, 1.0, 0.0])  # under a zero (unknown) label
    label = torch.zeros(1, 3, 1, 3)
    label[0, :, 0, 0] = torch.tensor([0.0, 1.0, 0.0])
    label[0, :, 0, 1] = 255.0
    # |1 - 0| + |0 - 1| + |0 - 0| = 2 over the 3 elements of the one valid pixel.
    assert normals_l1(raw, label).item() == pytest.approx(2 / 3, rel=1e-6)


def test_depth_l1_skips_ignored_and_zero_depth() -> None:
    raw = grid(3.0, 10.0, 10.0, 0.5)
    label = grid(1.0, 255.0, 0.0, 1.5)
    assert depth_l1(raw, label).item() == pytest.approx((2.0 + 1.0) / 2, rel=1e-6)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_no_valid_pixel_gives_a_graph_connected_zero(task: str) -> None:
    spec = get_task(task)
    raw = torch.randn(2, spec.channels, 4, 4, requires_grad=True)
    label = torch.full((2, 3 if spec.output == "unit_vector" else 1, 4, 4), float(spec.ignore_index))
    loss = task_loss(spec, raw, label)
    assert loss.item() == 0.0
    loss.backward()
    assert raw.grad is not None and torch.count_nonzero(raw.grad) == 0


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_registered_task_has_a_loss(task: str) -> None:
    spec = get_task(task)
    assert spec.loss in LOSSES
    raw = torch.randn(2, spec.channels, 8, 8, requires_grad=True)
    labels = {  # a plausible label of each output kind
        "classes": torch.randint(0, 2, (2, 1, 8, 8)).float(),
        "binary": torch.randint(0, 2, (2, 1, 8, 8)).float(),
        "unit_vector": torch.nn.functional.normalize(torch.randn(2, 3, 8, 8), dim=1),
        "scalar": torch.rand(2, 1, 8, 8) + 0.5,
    }
    loss = task_loss(spec, raw, labels[spec.output])
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0 and raw.grad.abs().sum() > 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), task=st.sampled_from(sorted(TASKS)))
def test_ignored_pixels_never_change_the_loss(seed: int, task: str) -> None:
    spec = get_task(task)
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(2, spec.channels, 5, 5, generator=generator)
    channels = 3 if spec.output == "unit_vector" else 1
    label = torch.randint(1, min(spec.channels, 2) + 1, (2, channels, 5, 5), generator=generator).float()
    ignored = torch.rand(2, 1, 5, 5, generator=generator) < 0.4
    label = torch.where(ignored.expand_as(label), torch.tensor(float(spec.ignore_index)), label)
    other = torch.where(ignored.expand_as(raw), raw + 100 * torch.randn(raw.shape, generator=generator), raw)
    assert task_loss(spec, other, label).item() == pytest.approx(task_loss(spec, raw, label).item(), abs=1e-5)


def test_loss_weights_default_to_the_papers_and_take_overrides() -> None:
    specs = {name: get_task(name) for name in ("semseg", "human_parts", "edges", "normals", "saliency")}
    assert loss_weights(specs) == {"semseg": 1.0, "human_parts": 2.0, "edges": 50.0, "normals": 10.0, "saliency": 5.0}
    assert loss_weights(specs, {"edges": 1})["edges"] == 1.0
    with pytest.raises(TsnError, match="depth"):
        loss_weights(specs, {"depth": 1.0})


def test_multitask_loss_is_the_weighted_sum() -> None:
    specs = {name: get_task(name) for name in ("semseg", "depth")}
    outputs = {"semseg": torch.zeros(1, 21, 1, 2), "depth": grid(1.0, 1.0)}
    labels = {"semseg": grid(0, 3), "depth": grid(2.0, 4.0)}
    total, losses = multitask_loss(outputs, labels, specs, {"semseg": 2.0, "depth": 0.5})
    assert losses["semseg"].item() == pytest.approx(math.log(21), rel=1e-6)
    assert losses["depth"].item() == pytest.approx(2.0, rel=1e-6)
    assert total.item() == pytest.approx(2 * math.log(21) + 0.5 * 2.0, rel=1e-6)
