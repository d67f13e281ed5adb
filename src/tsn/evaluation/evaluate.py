"""Evaluation of a model under a named protocol: ``tsn evaluate --checkpoint`` and the scoring step of ``tsn
reproduce``.

The field's evaluators score predictions at each image's *original* size against the raw labels; how they get
there, and what they score, is the protocol's (:mod:`tsn.evaluation.protocols`). In one pass:

1. every image of the split is read without transforms, so its labels keep their original resolution;
2. the inference pipeline (:mod:`tsn.inference.pipeline`) brings the image to the network with the protocol's fit
   on the dataset (a bicubic resize to the evaluation size; the image at its size padded to a multiple of 32; or,
   as the InvPT family, centred in a fixed size) and every task runs in one call (the encoder once; a TSN batches
   its task passes);
3. each prediction is postprocessed and brought back to the original size (cropped and / or resized), and turned
   into the array the authors save (:meth:`TaskSpec.to_saved`); the metrics score what those files hold, read
   back as the reference evaluators read them, or the float predictions, as the protocol says; ``save_dir`` gets
   the files themselves (:mod:`tsn.inference.conventions`);
4. edges go to the seism-compatible benchmark (:mod:`tsn.metrics.edges`) against the dataset's edge-evaluation
   ground truth, restricted to the protocol's image set where the dataset has that list; the per-image matching
   (about a second per PASCAL image) runs on a process pool while the network goes on
   (:class:`tsn.evaluation.scoring.SplitScorer`).

:func:`evaluate_checkpoint` returns a JSON-ready record (:func:`tsn.evaluation.records.evaluation_record`);
:mod:`tsn.evaluation.tables` adds per-task drops and the average drop against single-task scores and prints the
paper-style table. Predictions saved by another codebase are scored by
:func:`tsn.evaluation.saved_predictions.evaluate_predictions`.
"""


from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from tsn.dataset_catalog import dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.evaluation.protocols import ScoringProtocol, default_protocol, get_protocol
from tsn.evaluation.records import evaluation_record
from tsn.evaluation.scoring import SplitScorer, edge_ground_truth, edge_image_set
from tsn.inference.pipeline import PreparedImage, Preparer
from tsn.inference.speed import SpeedOptions
from tsn.models.base import DensePredictionModel
from tsn.tasks import TaskSpec, get_task
from tsn.utils.processes import data_loader
from tsn.utils.progress import progress_enabled

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "resolve_eval_tasks",
    "edge_ground_truth",
    "edge_image_set",
    "evaluate_model",
    "evaluate_checkpoint",
]

DEFAULT_INPUT_SIZE = 512
"""The paper's network input side for the real datasets; synthetic scenes run at their own size."""

# ------------------------------------------------------------------------------------------------------- tasks


def resolve_eval_tasks(
    model: DensePredictionModel, dataset: str, tasks: Sequence[str] | None = None
) -> tuple[TaskSpec, ...]:
    """The tasks to score, with the dataset's specs: those asked, else every task of the model the dataset has.

    A task missing from the checkpoint or the dataset, or predicted with another channel count than the dataset's
    (a model trained for another dataset), is a one-line error.
    """
    available = {spec.name: spec for spec in dataset_tasks(dataset)}
    if tasks:
        names = [get_task(name).name for name in tasks]
        for name in names:
            if name not in model.task_specs:
                raise TsnError(f"the checkpoint has no task {name!r}; its tasks: {', '.join(model.tasks)}")
            if name not in available:
                raise TsnError(f"dataset {dataset!r} has no task {name!r}; its tasks: {', '.join(available)}")
        names = list(dict.fromkeys(names))
    else:
        names = [name for name in model.tasks if name in available]
        if not names:
            raise TsnError(
                f"none of the checkpoint's tasks ({', '.join(model.tasks)}) is a task of {dataset!r} "
                f"({', '.join(available)}); evaluate it on the dataset it was trained for"
            )
    for name in names:
        ours, theirs = model.task_specs[name].channels, available[name].channels
        if ours != theirs:
            raise TsnError(
                f"the checkpoint predicts {ours} channels for {name} but {dataset!r} has {theirs}; "
                "it was trained for another dataset"
            )
    return tuple(available[name] for name in names)


# ---------------------------------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class _Item:
    labels: dict[str, Any]
    """The raw labels of the scored tasks and ``meta``."""
    prepared: PreparedImage
    """The image brought to the network by the pipeline (its fit: the protocol's)."""
    edge_truth: np.ndarray | None


class _EvalInputs(Dataset):
    """A raw dataset seen as (raw labels, prepared image, edge ground truth): the heavy reading runs in workers."""

    def __init__(self, dataset: Dataset, preparer: Preparer, tasks: Sequence[str], edges: bool) -> None:
        self.dataset, self.preparer, self.tasks, self.edges = dataset, preparer, tuple(tasks), edges

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> _Item | _Refused:
        sample = self.dataset[index]
        labels = {key: sample[key] for key in (*self.tasks, "meta")}
        try:
            prepared = self.preparer.prepare_pixels(np.asarray(sample["image"]), name=f"image {sample['meta']['id']}")
        except TsnError as error:  # carried to the main process as it is (a worker's exception gains a traceback)
            return _Refused(str(error))
        truth = edge_ground_truth(self.dataset, sample) if self.edges else None
        return _Item(labels, prepared, truth)


@dataclass(frozen=True)
class _Refused:
    """An image the fit refuses (larger than a fixed pad size): the evaluation stops with this one line."""

    message: str


def _same_size_groups(items: Sequence[_Item]) -> list[list[_Item]]:
    """A pad fit runs each image at its own (padded) size: the batch is split into groups of one network size."""
    groups: dict[tuple[int, ...], list[_Item]] = {}
    for item in items:
        groups.setdefault(tuple(item.prepared.tensor.shape), []).append(item)
    return list(groups.values())


def evaluate_model(
    model: DensePredictionModel,
    dataset: Dataset,
    specs: Sequence[TaskSpec],
    *,
    protocol: str | ScoringProtocol = "astmt",
    dataset_name: str = "",
    size: tuple[int, int] | None = None,
    batch_size: int = 8,
    workers: int = 0,
    edge_protocol: str | None = None,
    depth_protocol: str | None = None,
    save_dir: str | os.PathLike[str] | None = None,
    save_convention: str = "authors",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Score ``specs`` of ``model`` on every image of the raw ``dataset`` (built without a transform).

    ``protocol`` (:mod:`tsn.evaluation.protocols`) decides how images reach the network (its fit on
    ``dataset_name``: a resize to ``size = (H, W)``, default the dataset's evaluation size or 512 x 512; a pad to a
    multiple of 32; or a centred pad to ``size``, default the protocol's fixed size there), what the metrics score
    and how; ``dataset_name`` selects its per-dataset choices (fit, edge preset, LibMTL's batches).
    ``edge_protocol`` and ``depth_protocol`` replace the protocol's presets. ``model`` is in eval mode on its
    device; ``workers`` processes read the data and match edges. Returns each
    task's metric result (see :mod:`tsn.metrics`), in the order of ``specs``; the edge result also says which
    ``image_set`` it used. ``save_dir`` receives every prediction in ``save_convention``
    (:mod:`tsn.inference.conventions`), at the original size.
    """
    from tsn.inference.conventions import write_prediction
    from tsn.inference.pipeline import Pipeline, make_fit

    if batch_size < 1 or workers < 0:
        raise TsnError(f"batch size must be >= 1 and workers >= 0 (got {batch_size} and {workers})")
    chosen = get_protocol(protocol)
    by_name = {spec.name: spec for spec in specs}
    scorer = SplitScorer(chosen, specs, dataset, dataset_name, workers=workers,
                         overrides={"edge_protocol": edge_protocol, "depth_protocol": depth_protocol})
    fit = make_fit(chosen.fit_for(dataset_name), size=size or _fit_size(chosen, dataset_name), multiple=32)
    pipeline = Pipeline(model, tasks=list(by_name), fit=fit, budget=None, what="--size")
    inputs = _EvalInputs(dataset, pipeline.preparer, list(by_name), edges=bool(scorer.boundary))
    loader = data_loader(inputs, batch_size=batch_size, num_workers=workers, collate_fn=list)  # end with us
    try:
        shown = None if progress and progress_enabled() else True
        with tqdm(total=len(inputs), unit="img", desc="evaluate", disable=shown) as bar:
            for items in loader:
                for refused in (item for item in items if isinstance(item, _Refused)):
                    raise TsnError(refused.message)
                for group in _same_size_groups(items):
                    raw = pipeline.forward([item.prepared for item in group])
                    for index, item in enumerate(group):
                        image_id = str(item.labels["meta"]["id"])
                        floats = dict(pipeline.predictions(raw, index, item.prepared))
                        saved = {name: by_name[name].to_saved(prediction) for name, prediction in floats.items()}
                        if save_dir is not None:
                            for name, prediction in floats.items():
                                write_prediction(by_name[name], prediction, save_dir, image_id, save_convention)
                        scorer.add(image_id, item.labels, item.edge_truth, saved=saved, floats=floats)
                bar.update(len(items))
    except BaseException:
        scorer.close()
        raise
    return scorer.results()


def _fit_size(protocol: ScoringProtocol, dataset: str) -> tuple[int, int]:
    """The network input when none is given: a pad-to-size protocol's fixed size on ``dataset``, else the
    dataset's evaluation size, else the paper's 512 x 512."""
    fixed = protocol.fit_size(dataset) if protocol.fit_for(dataset) == "pad-to-size" else None
    if fixed is not None:
        return fixed
    try:
        registered = get_dataset(dataset).eval_size
    except TsnError:  # a dataset the catalog does not know (a caller's own): the paper's size
        registered = None
    return registered or (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)


# -------------------------------------------------------------------------------------------------- checkpoints


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _input_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from one side or two: the syntax and largest side every command accepts
    (:func:`tsn.inference.input_size.input_size`); the model's smallest side is checked once it is loaded."""
    from tsn.inference.input_size import input_size

    return input_size(size, "--size")


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    dataset: str = "pascal_context",
    split: str = "val",
    *,
    tasks: Sequence[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    size: int | Sequence[int] | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    device: str = "auto",
    speed: SpeedOptions | None = None,
    protocol: str | ScoringProtocol | None = None,
    edge_protocol: str | None = None,
    depth_protocol: str | None = None,
    save_dir: str | os.PathLike[str] | None = None,
    save_convention: str = "authors",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split under an evaluation protocol; returns the JSON-ready record.

    ``protocol`` (a name of :func:`tsn.evaluation.protocols.list_protocols`; default: the dataset's,
    :func:`~tsn.evaluation.protocols.default_protocol`) decides every scoring choice; ``edge_protocol`` and
    ``depth_protocol`` replace its edge preset and depth variant (recorded per task). ``speed``: the
    :mod:`tsn.inference.speed` options applied to the loaded model (default
    :func:`~tsn.inference.speed.exact_options`: float32 results, no compilation).

    ``dataset_options`` go to :func:`tsn.data.build_dataset` (e.g. ``size``, ``length``, ``seed`` of the
    synthetic scenes). ``size`` is the network input of a resize protocol, one side or ``(H, W)``: default the
    dataset's evaluation size (512 x 512 on PASCAL-Context and NYUD, 288 x 384 on NYUv2-13, 128 x 256 on
    Cityscapes-7), or the synthetic scenes' own size; of a pad-to-size protocol, the fixed size images are padded
    to (default the protocol's, e.g. InvPT's 512 x 512 on PASCAL-Context and 448 x 576 on NYUD; an image larger
    than it is refused in one line); a pad protocol does not use it. ``workers`` (default: every core) read data
    and match edges in parallel. ``save_dir`` also receives every prediction in ``save_convention``.

    Record keys: ``format``, ``format_version``, ``tsn_version``, ``checkpoint`` (path, config, parameters),
    ``dataset`` (name, split, root, options, n_images), ``input_size``, ``protocol`` (the protocol's description
    and metric options), ``protocols`` (per task), ``tasks`` (every metric, fractions as the metrics give them),
    ``headline`` (per task: metric, value, table value, direction), ``reported``, ``n_images`` (per task),
    ``predictions`` (the save folder or null), ``time`` (start, seconds, device).
    """
    from tsn.data import build_dataset
    from tsn.inference.conventions import get_convention
    from tsn.inference.input_size import check_input_size
    from tsn.inference.speed import exact_options, optimize
    from tsn.models.checkpoint import load_model
    from tsn.utils.device import resolve_device

    started, clock = time.time(), time.perf_counter()
    registered = get_dataset(dataset)  # an unknown name, size, protocol or convention fails before any loading
    name = registered.name
    chosen = get_protocol(protocol) if protocol is not None else default_protocol(name)
    fit = chosen.fit_for(name)
    get_convention(save_convention)
    input_size = _input_size(size) if size else None
    run_on = resolve_device(device)
    model = load_model(checkpoint, map_location=run_on)
    if input_size is None and fit == "pad-to-size":
        input_size = _fit_size(chosen, name)
    if input_size is not None and fit != "pad":
        check_input_size(model, input_size, "--size")  # the model's minimum, before the dataset is built
    model = optimize(model, exact_options(run_on) if speed is None else speed)
    specs = resolve_eval_tasks(model, name, tasks)
    options = dict(dataset_options or {})
    data = build_dataset(name, split, tasks=[s.name for s in specs], root=data_root, **options)
    # The dataset's evaluation size, else its own size (synthetic scenes), else the paper's.
    if input_size is None:
        own_size: int | Sequence[int] = getattr(data, "size", DEFAULT_INPUT_SIZE)
        input_size = _input_size(registered.eval_size or own_size)
    results = evaluate_model(
        model, data, specs, protocol=chosen, dataset_name=name, size=input_size, batch_size=batch_size,
        workers=_default_workers() if workers is None else workers, edge_protocol=edge_protocol,
        depth_protocol=depth_protocol, save_dir=save_dir, save_convention=save_convention, progress=progress,
    )
    source = {"checkpoint": {"path": str(Path(checkpoint).resolve()), "config": model.config.to_dict(),
                             "parameters": model.num_parameters()}}
    data_entry = {"name": name, "split": split, "root": str(getattr(data, "root", "")) or None,
                  "options": options, "n_images": len(data)}  # type: ignore[arg-type]
    return evaluation_record(
        source=source, dataset=data_entry, input_size=input_size if fit != "pad" else None,
        protocol=chosen, specs=specs, results=results,
        predictions=str(Path(save_dir).resolve()) if save_dir is not None else None,
        started=started, clock=clock, device=str(run_on),
    )
