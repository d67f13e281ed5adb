"""Segmentation / human parts: confusion-matrix IoU pooled over the data set, as the reference evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tsn.errors import TsnError
from tsn.metrics import SegmentationMetric, make_metric
from tsn.tasks import get_task

IGNORE = 255


def _score(pairs, num_classes, **options):
    metric = SegmentationMetric(num_classes, **options)
    for pred, label in pairs:
        metric.update(pred, label)
    return metric.compute()


def test_golden_iou_with_ignore() -> None:
    label = np.array([[0, 0, 1], [1, 2, IGNORE]], dtype=np.float32)
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    result = _score([(pred, label)], 3)
    # class 0: TP 1, FN 1 (the predicted 0 sits on an ignored pixel); class 1: TP 1, FP 1, FN 1; class 2: TP 1, FP 1.
    assert result["IoU"] == pytest.approx([1 / 2, 1 / 3, 1 / 2])
    assert result["mIoU"] == pytest.approx(4 / 9)
    assert result["pixel_acc"] == pytest.approx(3 / 5)
    assert (result["n_images"], result["n_skipped"], result["num_classes"]) == (1, 0, 3)


def test_absent_class_counts_as_zero() -> None:
    label = np.array([[0, 0, 1], [1, 2, IGNORE]], dtype=np.float32)
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    result = _score([(pred, label)], 4)
    assert result["IoU"][3] == 0.0
    assert result["mIoU"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 4)


def test_pooled_over_images_not_averaged_per_image() -> None:
    first = (np.array([[0, 1]]), np.array([[0, 0]], dtype=np.float32))
    second = (np.ones((2, 2), dtype=np.int64), np.ones((2, 2), dtype=np.float32))
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 4, FP 1 -> 4/5 (a per-image mean would give 0.75 then 1).
    assert _score([first, second], 2)["mIoU"] == pytest.approx((1 / 2 + 4 / 5) / 2)


def test_skip_uniform_labels() -> None:
    kept = (np.array([[0, 1]]), np.array([[0, 1]], dtype=np.float32))
    background_only = (np.ones((2, 2), dtype=np.int64), np.zeros((2, 2), dtype=np.float32))
    all_ignored = (np.ones((2, 2), dtype=np.int64), np.full((2, 2), IGNORE, dtype=np.float32))
    skipping = _score([kept, background_only, all_ignored], 2, skip_uniform_labels=True)
    assert skipping["mIoU"] == 1.0
    assert (skipping["n_images"], skipping["n_skipped"]) == (1, 2)
    counting = _score([kept, background_only, all_ignored], 2)
    assert counting["IoU"] == pytest.approx([1 / 5, 1 / 5])
    assert (counting["n_images"], counting["n_skipped"]) == (3, 0)


def test_parts_skip_uniform_labels_by_default_but_not_semseg() -> None:
    background_only = (np.ones((2, 2), dtype=np.int64), np.zeros((2, 2), dtype=np.float32))
    parts = make_metric(get_task("human_parts"))
    semseg = make_metric(get_task("semseg"))
    for metric in (parts, semseg):
        metric.update(*background_only)
    assert parts.compute()["n_skipped"] == 1
    assert semseg.compute()["n_skipped"] == 0
    assert make_metric(get_task("human_parts"), skip_uniform_labels=False).num_classes == 7


def test_reference_perfect_prediction_with_absent_classes() -> None:
    """datasets.md section 7: perfect predictions give IoU 1 per present class, mIoU < 1 over 21 / 7 classes."""
    rng = np.random.default_rng(0)
    for task, present in (("semseg", [0, 15, 7]), ("human_parts", [0, 1, 2, 6])):
        label = rng.choice(present, size=(6, 9)).astype(np.float32)
        label[0, 0] = IGNORE
        pred = np.where(label == IGNORE, 3, label).astype(np.int64)
        metric = make_metric(get_task(task))
        metric.update(pred, label)
        result = metric.compute()
        iou = np.array(result["IoU"])
        assert np.all(iou[present] == 1.0)
        assert np.all(np.delete(iou, present) == 0.0)
        assert result["mIoU"] == pytest.approx(len(present) / len(iou)) and result["mIoU"] < 1


def test_accepts_postprocessed_tensors() -> None:
    spec = get_task("semseg")
    raw = torch.zeros(1, spec.channels, 3, 4)
    raw[:, 15, :, :2] = 1.0  # left half predicted as person, right half as background
    label = torch.tensor([[15, 15, 0, 0]] * 3, dtype=torch.float32)[None]  # 1 x H x W, as after ToTensor
    metric = make_metric(spec)
    metric.update(spec.postprocess(raw)[0], label)
    result = metric.compute()
    assert result["IoU"][0] == result["IoU"][15] == 1.0
    assert result["class_names"][15] == "person"


def test_bad_input_is_a_one_line_error() -> None:
    metric = SegmentationMetric(3)
    with pytest.raises(TsnError, match="contains class 5 but the metric has 3 classes"):
        metric.update(np.zeros((2, 2), dtype=np.int64), np.full((2, 2), 5.0))
    with pytest.raises(TsnError, match="prediction has shape"):
        metric.update(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 2)))
    with pytest.raises(TsnError, match="one image"):
        metric.update(np.zeros((2, 2, 2), dtype=np.int64), np.zeros((2, 2, 2)))
    with pytest.raises(TsnError, match="class names"):
        SegmentationMetric(3, class_names=("a", "b"))


def test_empty_is_nan_and_reset_forgets() -> None:
    metric = SegmentationMetric(2)
    assert np.isnan(metric.compute()["mIoU"])
    metric.update(np.array([[0, 1]]), np.array([[1, 0]]))
    assert metric.compute()["mIoU"] == 0.0
    metric.reset()
    assert metric.compute()["n_images"] == 0


_maps = st.integers(1, 5).flatmap(
    lambda h: st.lists(
        st.tuples(
            arrays(np.int64, (h, 4), elements=st.integers(0, 3)),  # predictions
            arrays(np.int64, (h, 4), elements=st.integers(0, 4)),  # labels, 4 = ignored
        ),
        min_size=1,
        max_size=4,
    )
)


def _with_ignore(pairs):
    # Label value 4 stands for the ignore index.
    return [(pred, np.where(label == 4, IGNORE, label).astype(np.float32)) for pred, label in pairs]


@settings(max_examples=60, deadline=None)
@given(_maps, st.randoms(use_true_random=False))
def test_invariant_to_order_and_to_cutting_images(pairs, random) -> None:
    pairs = _with_ignore(pairs)
    whole = _score(pairs, 4)
    shuffled = random.sample(pairs, len(pairs))
    cut = [(p[rows], g[rows]) for p, g in shuffled for rows in (slice(None, 1), slice(1, None)) if g[rows].size]
    for other in (_score(shuffled, 4), _score(cut, 4)):
        assert other["IoU"] == pytest.approx(whole["IoU"])
        assert other["pixel_acc"] == pytest.approx(whole["pixel_acc"])


@settings(max_examples=60, deadline=None)
@given(_maps)
def test_perfect_prediction_scores_present_classes_one(pairs) -> None:
    pairs = _with_ignore(pairs)
    perfect = [(np.where(label == IGNORE, 0, label).astype(np.int64), label) for _, label in pairs]
    result = _score(perfect, 4)
    present = np.unique(np.concatenate([label[label != IGNORE] for _, label in pairs]))
    iou = np.array(result["IoU"])
    assert np.all(iou[present.astype(int)] == 1.0)
    assert result["mIoU"] == pytest.approx(present.size / 4)
