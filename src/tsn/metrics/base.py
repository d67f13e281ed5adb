"""The accumulator protocol shared by every task metric, and the input checks they all need.

A metric sees one image at a time: ``update(pred, label)`` with the *postprocessed* prediction (see
:meth:`tsn.tasks.TaskSpec.postprocess`) already resized to the label's size, and the *raw* label. It keeps
dataset-level sums (float64 / int64), and for the exact normals median the errors near it, so the order of the
images and how they are split into batches do not change the result beyond float64 rounding. ``compute()``
returns plain Python values (JSON-ready); it can be called any number of times.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from tsn.errors import TsnError

__all__ = ["ArrayLike", "MetricValue", "MetricResult", "TaskMetric", "to_numpy", "single_map", "check_same_shape"]

MetricValue = float | int | str | list
"""One entry of a metric result: a score, a count, a protocol name or a per-class / per-threshold list."""

MetricResult = dict[str, MetricValue]
"""What :meth:`TaskMetric.compute` returns; the task's headline key (``TaskSpec.metric``) is always present."""

ArrayLike = np.ndarray | torch.Tensor


@runtime_checkable
class TaskMetric(Protocol):
    """A dataset-level accumulator for one task."""

    def update(self, pred: ArrayLike, label: ArrayLike) -> None:
        """Add one image: its postprocessed prediction at the label's size, and its raw label."""

    def compute(self) -> MetricResult:
        """The scores over every image added since the last :meth:`reset`."""

    def reset(self) -> None:
        """Forget every image added so far."""


def to_numpy(value: ArrayLike) -> np.ndarray:
    """A numpy view of a tensor (any device, detached) or an array-like."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def single_map(value: ArrayLike, what: str) -> np.ndarray:
    """One ``H x W`` map from an ``H x W`` array or one with leading singleton axes (``1 x H x W``)."""
    array = to_numpy(value)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise TsnError(f"{what} has shape {tuple(array.shape)}; pass one image as an H x W (or 1 x H x W) array")
    return array


def check_same_shape(pred: np.ndarray, label: np.ndarray, task: str) -> None:
    """Refuse a prediction that was not resized to its label (the evaluators compare pixel by pixel)."""
    if pred.shape != label.shape:
        raise TsnError(
            f"{task} prediction has shape {tuple(pred.shape)} but its label has {tuple(label.shape)}; "
            "resize the prediction to the label size first (TaskSpec.resize_prediction)"
        )
