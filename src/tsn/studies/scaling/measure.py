"""Measurements of finished runs, each in a fresh one-thread process: all-task inference and training-step time
and peak memory (see :mod:`tsn.studies.scaling`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, cast

from tsn.dataset_catalog import get_dataset
from tsn.studies.scaling.settings import StudySettings

MEASURE_FORMAT = 2
"""Version of the cached measurement records (a change re-measures). 2: every repeat's time, median and range."""


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class _PeakMemory:
    """Peak resident memory of what runs after construction, in MB (see the module doc)."""

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := the current resident set
            self.source = "VmHWM"
        except OSError:
            self.source = "ru_maxrss"
        current = _status_kib("VmRSS")
        self.base_kib = current if current is not None else self._peak_kib()

    def _peak_kib(self) -> int:
        import resource
        import sys

        hwm = _status_kib("VmHWM") if self.source == "VmHWM" else None
        if hwm is not None:
            return hwm
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux

    def peak_mb(self) -> float:
        return round(max(0, self._peak_kib() - self.base_kib) / 1024, 1)


def _timed(call: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """``call`` timed ``repeats`` times after a warm-up (first-call allocations and kernel choices): the median
    as ``seconds``, the range as ``min`` / ``max``, every time as ``times``."""
    import statistics

    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"seconds": round(statistics.median(times), 5), "min": round(min(times), 5), "max": round(max(times), 5),
            "repeats": repeats, "times": [round(t, 5) for t in times]}


def _training_batch(config: Any, batch: int) -> dict[str, Any]:
    """``batch`` real training scenes of ``config``'s data, transformed and collated as the trainer does."""
    from tsn.data import build_dataset, build_transforms, collate

    d = config.data
    specs = list(config.model.task_specs)
    # generated scenes: render just the batch (scene i does not depend on the split's length) instead of loading
    # the cached split
    few = {"length": batch, "cache": False} if get_dataset(d.dataset).generated else {}
    data = build_dataset(d.dataset, d.train_split, tasks=[s.name for s in specs], root=d.root,
                         **{**d.options, **d.train_options, **few})
    transform = build_transforms("eval", d.input_size, tasks=specs)
    import numpy as np

    length = len(cast(Sized, data))
    samples = [transform(data[index % length], np.random.default_rng(index)) for index in range(batch)]
    return collate(samples)


def _measure(job: Mapping[str, Any]) -> dict[str, Any]:
    """One measurement (the body of a fresh worker process): ``inference`` of every task by the models of
    ``checkpoints``, or one ``train`` step of ``config``'s network from its checkpoint."""
    import torch

    from tsn.models.checkpoint import load_model

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    if job["phase"] == "inference":
        image = torch.randn(job["batch"], 3, job["size"], job["size"])
        memory = _PeakMemory()
        models = [load_model(path) for path in job["checkpoints"]]

        def infer() -> None:
            with torch.no_grad():
                for model in models:
                    model(image)

        timing = _timed(infer, job["repeats"])
        return {**timing, "peak_mb": memory.peak_mb(), "memory_source": memory.source}
    from tsn.precision import autocast
    from tsn.training.losses import loss_weights, multitask_loss
    from tsn.training.optim import build_optimizer

    config = job["config"]
    batch = _training_batch(config, job["batch"])
    memory = _PeakMemory()
    model = load_model(job["checkpoints"][0]).train()
    optimizer = build_optimizer(model, config)
    specs = model.task_specs
    weights = loss_weights(specs, config.loss_weights)
    names = list(specs)
    labels = {name: batch[name] for name in names}

    def step() -> None:
        with autocast(torch.device("cpu"), config.amp):
            outputs = model(batch["image"], names)
        loss, _ = multitask_loss(outputs, labels, specs, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    timing = _timed(step, job["repeats"])
    return {**timing, "peak_mb": memory.peak_mb(), "memory_source": memory.source}


def _stamp(paths: Sequence[str]) -> list[list[Any]]:
    return [[str(path), os.stat(path).st_mtime_ns] for path in paths]


class Measurer:
    """Measurements cached in ``folder`` (redone when a checkpoint changed), each in a fresh process."""

    def __init__(self, folder: Path, settings: StudySettings) -> None:
        self.folder, self.settings = folder, settings
        self._pool: Any = None

    def __enter__(self) -> Measurer:
        return self

    def __exit__(self, *_: Any) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()

    def _submit(self, job: dict[str, Any]) -> dict[str, Any]:
        import multiprocessing

        from tsn.utils.processes import multiprocessing_pool

        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:  # every measurement forks from a server that has imported torch once
                context.set_forkserver_preload(["torch", "tsn.models", "tsn.training", "tsn.data"])
            self._pool = multiprocessing_pool(1, context=context, maxtasksperchild=1)  # fresh; ends with us
        result: dict[str, Any] = self._pool.apply(_measure, (job,))
        return result

    def measure(self, name: str, phase: str, checkpoints: Sequence[str], config: Any = None) -> dict[str, Any]:
        from tsn.utils.io import atomic_write_json

        s = self.settings
        path = self.folder / f"{phase}-{name}.json"
        stamp = _stamp(checkpoints)
        batch = s.measure_batch if phase == "inference" else s.batch_size  # training: the runs' own batch
        what = {"format": MEASURE_FORMAT, "checkpoints": stamp, "batch": batch, "size": s.size,
                "repeats": s.measure_repeats}
        if path.is_file():
            try:
                cached = json.loads(path.read_text())
                if {key: cached.get(key) for key in what} == json.loads(json.dumps(what)):
                    return dict(cached["result"])
            except (OSError, ValueError, AttributeError):
                pass  # unreadable: measure again
        job = {"phase": phase, "checkpoints": list(checkpoints), "config": config, "batch": batch,
               "size": s.size, "repeats": s.measure_repeats, "threads": 1}
        result = self._submit(job)
        atomic_write_json(path, {**what, "result": result})
        return result
