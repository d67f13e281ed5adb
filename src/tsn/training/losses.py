"""Task losses, chosen from the task registry: ``TaskSpec.loss`` names an entry of the loss registry :data:`LOSSES`.

A user's loss is added with :func:`register_loss` (``@register_loss("soft_dice")`` on the function, from a
plugin or any module imported before training; docs/extending.md); a name already taken is refused in one line.

Every loss takes the raw network output ``(N, C, H, W)`` and the transformed label (``(N, 1, H, W)``, normals
``(N, 3, H, W)``), ignores the task's ``ignore_index`` pixels and returns a scalar that is the *mean over valid
pixels* of the batch. Averaging (not summing) keeps a loss's scale independent of the image size and the batch
size, so the paper's loss weights (tuned by ASTMT with averaged losses) mean the same thing at 64 x 64 on a CPU as
at 512 x 512 on a GPU.

Each loss divides a masked sum by ``max(valid count, 1)`` instead of branching on "is anything valid?": a batch in
which a task has no valid pixel (an image without a person for human parts, an all-sky depth map) then yields an
exact zero that still belongs to the autograd graph, never a NaN, and the GPU never waits for a host-side check.
Losses are computed in float32 whatever the autocast dtype of the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar, overload

import torch
import torch.nn.functional as F

from tsn.errors import TsnError
from tsn.tasks import IGNORE_INDEX, TaskSpec
from tsn.utils.registry import Registry

__all__ = [
    "LossFn",
    "LOSSES",
    "register_loss",
    "get_loss",
    "cross_entropy",
    "balanced_bce",
    "normals_l1",
    "depth_l1",
    "task_loss",
    "loss_weights",
    "mask_unlabelled",
    "multitask_loss",
]

LossFn = Callable[..., torch.Tensor]
"""``loss(raw, label, *, ignore_index, **TaskSpec.loss_options) -> scalar tensor``."""


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``valid`` elements; an exact, graph-connected zero when none is valid."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp(min=1)


def cross_entropy(raw: torch.Tensor, label: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Softmax cross-entropy averaged over labelled pixels (semseg x1 and human parts x2 in the paper)."""
    target = label.long().squeeze(1)
    valid = target != ignore_index
    per_pixel = F.cross_entropy(raw.float(), torch.where(valid, target, 0), reduction="none")
    return _masked_mean(per_pixel, valid)


def balanced_bce(
    raw: torch.Tensor, label: torch.Tensor, *, ignore_index: int = IGNORE_INDEX, pos_weight: float | None = None
) -> torch.Tensor:
    """Class-balanced binary cross-entropy on logits, averaged over valid pixels.

    ``loss = -w * y * log(p) - (1 - w) * (1 - y) * log(1 - p)`` with ``y = label >= 0.5``. ``pos_weight`` fixes
    ``w`` (edges: 0.95, because boundary pixels are rare); without it ``w`` is the fraction of negative pixels
    in the batch (saliency), recomputed for every batch as the authors do.
    """
    valid = label != ignore_index
    positive = (label >= 0.5) & valid
    if pos_weight is None:
        w = (valid.sum() - positive.sum()) / valid.sum().clamp(min=1)
    else:
        w = torch.as_tensor(float(pos_weight), device=raw.device)
    weight = torch.where(positive, w, 1.0 - w)
    per_pixel = F.binary_cross_entropy_with_logits(raw.float(), positive.float(), reduction="none")
    return _masked_mean(weight * per_pixel, valid)


def normals_l1(raw: torch.Tensor, label: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """L1 between the L2-normalised prediction and the label, averaged over valid elements (pixels x 3).

    A pixel is valid when no component equals ``ignore_index`` and the vector is not zero (the raw loaders' mark
    of an unknown normal), so the loss is right before and after a transform rewrote invalid pixels to 255.
    """
    pred = F.normalize(raw.float(), p=2, dim=1)
    valid = (label != ignore_index).all(dim=1, keepdim=True) & (label != 0).any(dim=1, keepdim=True)
    return _masked_mean((pred - label).abs(), valid.expand_as(label))


def depth_l1(raw: torch.Tensor, label: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """L1 depth error over valid pixels (label not ``ignore_index`` and > 0)."""
    valid = (label != ignore_index) & (label > 0)
    return _masked_mean((raw.float() - label).abs(), valid)


LOSSES: Registry[LossFn] = Registry("loss", "register one with tsn.register_loss in a plugin: tsn --plugin MODULE")
"""Loss functions by the name a :class:`~tsn.tasks.TaskSpec` gives in ``loss``."""


_Loss = TypeVar("_Loss", bound=LossFn)


@overload
def register_loss(name: str, loss: _Loss) -> _Loss: ...


@overload
def register_loss(name: str, loss: None = None) -> Callable[[_Loss], _Loss]: ...


def register_loss(name: str, loss: _Loss | None = None) -> _Loss | Callable[[_Loss], _Loss]:
    """Register ``loss`` under ``name`` (returns it), or, without ``loss``, a decorator that does:

    .. code-block:: python

        @register_loss("soft_dice")
        def soft_dice(raw, label, *, ignore_index=255): ...

    A loss takes the raw output ``(N, C, H, W)`` and the label, ignores ``ignore_index`` pixels, takes the task's
    ``loss_options`` as keywords and returns the mean over valid pixels (module docstring). A name already taken
    is refused in one line.
    """
    if loss is None:
        return lambda decorated: register_loss(name, decorated)
    LOSSES.register(name, loss)
    return loss


def get_loss(name: str) -> LossFn:
    """The loss registered as ``name`` (one-line :class:`TsnError` listing the known ones otherwise)."""
    return LOSSES.lookup(name)


register_loss("cross_entropy", cross_entropy)
register_loss("balanced_bce", balanced_bce)
register_loss("normals_l1", normals_l1)
register_loss("depth_l1", depth_l1)
# The same masked L1 for any scalar map whose 0 marks "no label" (the synthetic albedo, shading, distances).
register_loss("scalar_l1", depth_l1)


def task_loss(spec: TaskSpec, raw: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The (unweighted) loss of one task, dispatched on ``spec.loss`` with ``spec.loss_options``."""
    if spec.loss not in LOSSES:
        raise TsnError(f"task {spec.name!r} names loss {spec.loss!r}; known losses: {', '.join(LOSSES)} "
                       f"({LOSSES.hint})")
    loss = LOSSES[spec.loss]
    return loss(raw, label.to(raw.device, torch.float32), ignore_index=spec.ignore_index, **spec.loss_options)


def loss_weights(specs: Mapping[str, TaskSpec], overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Each task's loss weight: the registry's (the paper's) unless ``overrides`` names the task."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(specs))
    if unknown:
        raise TsnError(f"loss weight given for {unknown[0]!r}, which is not a task of the model ({', '.join(specs)})")
    return {name: float(overrides.get(name, spec.loss_weight)) for name, spec in specs.items()}


def mask_unlabelled(label: torch.Tensor, labelled: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    """``label`` with every pixel of the samples not labelled for the task (``labelled``: ``BoolTensor[N]``) set
    to ``ignore_index``.

    Every loss already leaves ``ignore_index`` pixels out of both the sum and the count, so an unlabelled sample is
    *excluded* (the mean is over the labelled samples' valid pixels, and whatever its label holds, NaN included,
    never reaches the loss or the gradient) rather than zero-weighted into the mean. A batch with no labelled
    sample gives the exact, graph-connected zero of an all-ignored label: no loss and no gradient for the task.
    """
    if labelled is None:
        return label
    keep = labelled.to(device=label.device, dtype=torch.bool).reshape(-1, *([1] * (label.dim() - 1)))
    return torch.where(keep, label, torch.full_like(label, float(ignore_index)))


def multitask_loss(
    outputs: Mapping[str, torch.Tensor],
    labels: Mapping[str, torch.Tensor],
    specs: Mapping[str, TaskSpec],
    weights: Mapping[str, float],
    labelled: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(sum_t weight_t * loss_t, {task: unweighted loss_t})`` over the tasks in ``outputs``.

    ``labelled`` (a batch's ``sample["labelled"]``, :mod:`tsn.data.partial`) excludes each task's unlabelled
    samples (:func:`mask_unlabelled`); a task it does not name is labelled in every sample.
    """
    labelled = labelled or {}
    losses = {
        name: task_loss(specs[name], raw, mask_unlabelled(labels[name], labelled.get(name), specs[name].ignore_index))
        for name, raw in outputs.items()
    }
    total = torch.stack([weights[name] * value for name, value in losses.items()]).sum()
    return total, losses
