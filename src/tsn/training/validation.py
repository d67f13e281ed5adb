"""The validation loop of training: every task's loss and metric from one batched all-task forward per batch.

:func:`validate` runs ``model(images, tasks)`` (a TSN runs its encoder once and batches its decoder over the
tasks), computes each task's validation loss and feeds each task's metric (:func:`tsn.metrics.make_metric`) with
the postprocessed prediction at the label's size. Labels are the transformed ones the loader gives (the network
resolution); ``tsn evaluate`` scores at the original image size with the reference protocol.

In a distributed run every rank validates its share of the images; losses are summed across ranks and the
per-image predictions are gathered to rank 0, which owns the metrics (any :class:`~tsn.metrics.TaskMetric` works,
since none needs to be merged), then the result is broadcast so that every rank takes the same decisions.

:class:`ConstantPredictor` is the trivial baseline a trained model must beat: the same value at every pixel
(the majority class, the prior probability, the mean normal, the mean depth of the training labels).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from tsn.precision import autocast
from tsn.tasks import TaskSpec
from tsn.training.distributed import DistContext
from tsn.training.losses import task_loss
from tsn.utils.processes import data_loader

__all__ = [
    "ValidationResult",
    "validation_loader",
    "validate",
    "ConstantPredictor",
    "fit_constant_predictor",
]


@dataclass
class ValidationResult:
    """Per-task validation losses (unweighted), their weighted mean and per-task metric results."""

    losses: dict[str, float]
    loss: float
    """Mean over tasks of the weighted losses: the authors' validation criterion."""
    metrics: dict[str, dict[str, Any]]
    n_images: int

    def headline(self, specs: Mapping[str, TaskSpec]) -> dict[str, float]:
        """Each scored task's headline metric (``TaskSpec.metric``)."""
        return {name: float(result[specs[name].metric]) for name, result in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validation_loader(
    dataset: Dataset, batch_size: int, ctx: DistContext, *, num_workers: int = 0, max_images: int | None = None
) -> DataLoader:
    """This rank's share (every ``world_size``-th image) of the first ``max_images`` images, in order."""
    from tsn.data import collate

    total = len(dataset)  # type: ignore[arg-type]
    count = total if max_images is None else min(max_images, total)
    shard = Subset(dataset, range(ctx.rank, count, ctx.world_size))
    return data_loader(  # workers end with this process, even after kill -9
        shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator(),  # creating an iterator must not advance the global RNG (exact resume)
    )


def _padded(loader: Iterable[dict[str, Any]], rounds: int) -> Iterator[dict[str, Any] | None]:
    """The loader's batches, then None up to ``rounds``: every rank makes the same number of collective calls."""
    iterator = iter(loader)
    for _ in range(rounds):
        yield next(iterator, None)


@torch.inference_mode()
def validate(
    model: nn.Module,
    loader: Sequence[dict[str, Any]] | DataLoader,
    specs: Mapping[str, TaskSpec],
    weights: Mapping[str, float],
    *,
    ctx: DistContext | None = None,
    metric_tasks: Sequence[str] = (),
    metric_options: Mapping[str, Any] | None = None,
    protocol: str | None = None,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
) -> ValidationResult:
    """Validate ``model`` (called as ``model(images, tasks) -> {task: raw}``) on ``loader``'s batches.

    ``metric_tasks`` are scored under the evaluation protocol ``protocol`` (default: the dataset's, read from the
    batches' ``meta``; see :mod:`tsn.evaluation.protocols`), with the same metric objects and the same scoring
    form (saved 8-bit files or floats) as ``tsn evaluate``; ``metric_options`` replace the protocol's options.
    Every task of ``specs`` gets its validation loss. ``model`` is put in eval mode (and left so).
    """
    ctx = ctx or DistContext()
    device, names = ctx.device, list(specs)
    model.eval()
    scoring = _Scoring(protocol, [specs[n] for n in metric_tasks], metric_options) if ctx.is_main else None
    sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=device)  # per-task loss x images, images
    rounds = ctx.max_int(len(loader))
    bar = tqdm(total=rounds, desc="validate", unit="batch", leave=False, disable=not (progress and ctx.is_main))
    with bar:
        for batch in _padded(loader, rounds):
            scored: list[tuple[str, torch.Tensor, torch.Tensor]] = []
            if batch is not None:
                if scoring is not None:
                    scoring.start(batch)
                images = batch["image"].to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(device, amp):
                    raw = model(images, names)
                count = images.shape[0]
                for i, name in enumerate(names):
                    sums[i] += task_loss(specs[name], raw[name].float(), batch[name].to(device)).double() * count
                sums[-1] += count
                scored = [
                    item for name in metric_tasks for item in _predictions(specs[name], raw[name].float(), batch[name])
                ]
            for items in ctx.gather(scored) or []:
                for name, pred, label in items:
                    assert scoring is not None  # gather gives items on rank 0 only, which owns the metrics
                    scoring.update(name, pred, label)
            bar.update()
    ctx.all_reduce_sum(sums)
    n_images = int(sums[-1].item())
    losses = {name: float(sums[i].item()) / max(n_images, 1) for i, name in enumerate(names)}
    result = ValidationResult(
        losses=losses,
        loss=sum(weights[name] * value for name, value in losses.items()) / len(names),
        metrics=scoring.compute() if scoring is not None else {},
        n_images=n_images,
    )
    return ctx.broadcast(result)


class _Scoring:
    """The validation metrics of an evaluation protocol, built on the first batch (whose ``meta`` names the
    dataset, which chooses the default protocol and its per-dataset options)."""

    def __init__(self, protocol: str | None, specs: Sequence[TaskSpec], options: Mapping[str, Any] | None) -> None:
        self.protocol_name, self.specs, self.options = protocol, {s.name: s for s in specs}, dict(options or {})
        self.metrics: dict[str, Any] | None = None

    def start(self, batch: Mapping[str, Any], dataset: str = "") -> None:
        if self.metrics is not None:
            return
        from tsn.evaluation.protocols import default_protocol, get_protocol

        meta = batch.get("meta") or [{}]
        dataset = str(meta[0].get("dataset", dataset)) if isinstance(meta, list) and meta else dataset
        self.protocol = get_protocol(self.protocol_name) if self.protocol_name else default_protocol(dataset)
        options = {**self.protocol.options_for(dataset), **self.options}
        self.metrics = {name: spec.make_metric(**options) for name, spec in self.specs.items()}

    def update(self, name: str, pred: torch.Tensor, label: torch.Tensor) -> None:
        if self.metrics is None:
            self.start({})
        assert self.metrics is not None
        prediction = self.protocol.prepare(self.specs[name], pred.numpy())
        self.metrics[name].update(prediction, label)

    def compute(self) -> dict[str, dict[str, Any]]:
        if self.metrics is None:
            self.start({})
        assert self.metrics is not None
        return {name: metric.compute() for name, metric in self.metrics.items()}


def _predictions(spec: TaskSpec, raw: torch.Tensor, labels: torch.Tensor) -> Iterable[tuple[str, torch.Tensor, Any]]:
    """``(task, prediction at the label's size, label)`` per image, on the CPU (ready to gather and score)."""
    predictions = spec.postprocess(raw).cpu()
    for pred, label in zip(predictions, labels, strict=False):
        yield spec.name, spec.resize_prediction(pred[None], tuple(label.shape[-2:]))[0], label


class ConstantPredictor(nn.Module):
    """The trivial baseline: for every task the same raw output at every pixel.

    Its outputs go through the same ``postprocess`` and metrics as a network's, so its scores are the floor a
    trained model is compared with.
    """

    def __init__(self, values: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = {name: value.float().reshape(-1) for name, value in values.items()}

    def forward(self, image: torch.Tensor, tasks: Sequence[str]) -> dict[str, torch.Tensor]:
        n, _, h, w = image.shape
        return {t: self.values[t].to(image.device)[None, :, None, None].expand(n, -1, h, w) for t in tasks}


def fit_constant_predictor(
    loader: Iterable[Mapping[str, Any]], specs: Mapping[str, TaskSpec]
) -> tuple[ConstantPredictor, dict[str, str]]:
    """The trivial predictor fitted on the labels of ``loader``'s batches (the training split), and what it
    predicts per task in words."""
    labels: dict[str, list[torch.Tensor]] = {name: [] for name in specs}
    for batch in loader:
        for name in specs:
            labels[name].append(batch[name])
    fitted = {name: spec.constant_output(torch.cat(labels[name])) for name, spec in specs.items()}
    return ConstantPredictor({n: v for n, (v, _) in fitted.items()}), {n: d for n, (_, d) in fitted.items()}
