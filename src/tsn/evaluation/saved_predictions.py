"""Score predictions saved elsewhere: ``tsn evaluate --predictions DIR --dataset D --protocol P``.

Any method's outputs, saved in the authors', ASTMT's / the survey's or InvPT's convention
(:mod:`tsn.inference.conventions`), are scored against the dataset's raw labels under any protocol, with the
same metrics and record as a checkpoint's evaluation. Every file is checked to exist before any is scored;
sizes and value ranges are checked as each is read. Saved files are 8-bit: a protocol that scores float
predictions (InvPT, LibMTL) scores them as the files hold them, and says so in the record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tsn.dataset_catalog import dataset_tasks, get_dataset
from tsn.errors import TsnError
from tsn.evaluation.protocols import ScoringProtocol, default_protocol, get_protocol
from tsn.evaluation.records import evaluation_record
from tsn.evaluation.scoring import SplitScorer, edge_ground_truth
from tsn.inference.conventions import get_convention, prediction_path, read_saved_prediction
from tsn.utils.progress import progress_enabled

__all__ = ["evaluate_predictions"]


def _tasks(root: Path, dataset: str, tasks: Sequence[str] | None, convention: str) -> list[Any]:
    chosen = get_convention(convention)
    specs = dataset_tasks(dataset, list(tasks) if tasks else None)
    if tasks:
        return list(specs)
    present = [spec for spec in specs if (root / chosen.folder(spec.name)).is_dir()]
    if not present:
        folders = ", ".join(chosen.folder(spec.name) for spec in specs)
        raise TsnError(f"{root} has no prediction folder of {dataset!r} in the {chosen.name} convention "
                       f"(expected one of: {folders}); pass --format for another convention")
    return present


def evaluate_predictions(
    predictions: str | os.PathLike[str],
    dataset: str = "pascal_context",
    split: str = "val",
    *,
    protocol: str | ScoringProtocol | None = None,
    convention: str = "authors",
    tasks: Sequence[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    workers: int = 0,
    edge_protocol: str | None = None,
    depth_protocol: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the saved predictions under ``predictions`` (one folder per task, ``<id>.png`` / ``<id>.mat``) on
    ``dataset``'s ``split``; returns the record of :func:`tsn.evaluation.records.evaluation_record`.

    ``tasks``: default every task of the dataset with a folder in the convention. ``protocol``: default the
    dataset's. ``edge_protocol`` / ``depth_protocol`` replace the protocol's presets.
    """
    from tsn.data import build_dataset

    started, clock = time.time(), time.perf_counter()
    root = Path(predictions)
    if not root.is_dir():
        raise TsnError(f"--predictions {root} is not a folder; give the folder holding one sub-folder per task")
    name = get_dataset(dataset).name
    chosen = get_protocol(protocol) if protocol is not None else default_protocol(name)
    specs = _tasks(root, name, tasks, convention)
    options = dict(dataset_options or {})
    data = build_dataset(name, split, tasks=[s.name for s in specs], root=data_root, **options)
    count = len(data)  # type: ignore[arg-type]
    ids = [str(i) for i in getattr(data, "ids", [])] or [str(data[i]["meta"]["id"]) for i in range(count)]
    missing = [prediction_path(spec, root, i, convention) for spec in specs for i in ids
               if not prediction_path(spec, root, i, convention).is_file()]
    if missing:
        raise TsnError(f"{len(missing)} of {len(ids) * len(specs)} predictions are missing under {root} (first: "
                       f"{missing[0]}); save one file per image and task, named by the image id")
    scorer = SplitScorer(chosen, specs, data, name, workers=workers,
                         overrides={"edge_protocol": edge_protocol, "depth_protocol": depth_protocol})
    try:
        for index in tqdm(range(count), unit="img", desc="evaluate",
                          disable=None if progress and progress_enabled() else True):
            sample = data[index]
            image_id, size = str(sample["meta"]["id"]), tuple(sample["meta"]["size"])
            saved = {spec.name: read_saved_prediction(spec, prediction_path(spec, root, image_id, convention), size)
                     for spec in specs}
            truth = edge_ground_truth(data, sample) if scorer.wants_edges(image_id) else None
            scorer.add(image_id, sample, truth, saved=saved)
    except BaseException:
        scorer.close()
        raise
    results = scorer.results()
    source = {"predictions_from": {"path": str(root.resolve()), "convention": convention}}
    data_entry = {"name": name, "split": split, "root": str(getattr(data, "root", "")) or None,
                  "options": options, "n_images": count}
    return evaluation_record(
        source=source, dataset=data_entry, input_size=None, protocol=chosen, specs=specs, results=results,
        predictions=None, started=started, clock=clock, device="cpu",
    )
