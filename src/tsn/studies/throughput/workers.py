"""The worker processes: one configuration each (inference or a training step), timed, with its peak memory."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsn.studies.throughput.machine import synchronize
from tsn.studies.throughput.settings import BenchmarkSettings
from tsn.utils.io import atomic_torch_save


@dataclass
class Job:
    """One configuration to measure in a worker process."""

    kind: str  # "inference" or "training"
    config: str
    size: int
    batch: int
    settings: BenchmarkSettings
    onnx_path: str | None = None
    save_outputs: str | None = None
    profile: bool = False
    channels: dict[str, int] = field(default_factory=dict)
    """Channels per task (the onnxruntime configuration slices the zero-padded output with them)."""


def _current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return _peak_rss_mb()


def _process_peak_mb() -> float | None:
    """This process's high-water resident set in MB (``VmHWM``, reset by ``exec``, unlike ``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


class _Memory:
    """Peak memory of what runs between construction and :meth:`peak_mb`, in MB."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device.startswith("cuda")
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(torch.device(device))
            self.base = torch.cuda.memory_allocated(torch.device(device)) / 2**20
        else:
            self.base = _current_rss_mb()
        self.device = device

    def peak_mb(self) -> float:
        import torch

        peak = torch.cuda.max_memory_allocated(torch.device(self.device)) / 2**20 if self.cuda else _peak_rss_mb()
        return round(max(0.0, peak - self.base), 1)

    def figures(self) -> dict[str, float | None]:
        """``peak_memory_mb`` (growth over the baseline) and ``process_peak_mb`` (the whole process; CPU only)."""
        return {"peak_memory_mb": self.peak_mb(), "process_peak_mb": None if self.cuda else _process_peak_mb()}


def _timings(run: Callable[[], Any], warmup: Callable[[], Any], settings: BenchmarkSettings,
             repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``run`` after ``settings.warmup`` calls of ``warmup``."""
    device = settings.device
    for _ in range(settings.warmup):
        warmup()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: the profiler's C++ libraries print to it directly (on a CPU-only
    machine, kineto reports "gpuGetDeviceCount failed" on every profile)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _top_ops(run: Callable[[], Any], rows: int = 12) -> list[dict[str, Any]]:
    """The operators with the most self time in one call of ``run`` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # this worker process only: kineto's own log lines
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 1),
         "percent": round(100 * e.self_cpu_time_total / total, 1), "calls": e.count}
        for e in events[:rows]
    ]


def build_benchmark_model(settings: BenchmarkSettings) -> Any:
    import torch

    from tsn.models import create_model

    torch.manual_seed(0)
    return create_model(settings.preset, **({"backbone": settings.backbone} if settings.backbone else {})).to(
        settings.device)


def _image(batch: int, size: int, device: str) -> Any:
    import torch

    generator = torch.Generator().manual_seed(size)  # the same first image whatever the batch
    return torch.randn(batch, 3, size, size, generator=generator).to(device)


def _inference_options(config: str, settings: BenchmarkSettings) -> Any:
    from tsn.inference.speed import SpeedOptions, fastest_options

    if config not in ("fastest", "all_tasks_fp32_fast"):
        return SpeedOptions()
    options = fastest_options(settings.device, allow_bf16=config == "fastest")
    return dataclasses.replace(options, compile=options.compile and settings.compile)


TUNED_PROCESS = ("authors_tuned", "all_tasks_fp32_fast", "fastest", "naive_tuned", "all_tasks_fast")
"""The configurations whose processes get the fast path's settings (``--tune-allocator``, ``--threads``); the
others run in a process as shipped."""


def _process_setup(settings: BenchmarkSettings, config: str) -> str:
    """Apply the process settings of ``config`` to this worker process; the suffix of the options' text."""
    import torch

    from tsn.inference.speed import tune_glibc_allocator

    if config not in TUNED_PROCESS:
        return ""
    suffix = ""
    if settings.threads:
        torch.set_num_threads(settings.threads)
        suffix += f",threads={settings.threads}"
    if settings.tune_allocator and settings.device == "cpu" and tune_glibc_allocator():
        suffix += ",tuned_allocator"
    return suffix


def _inference_worker(job: Job) -> dict[str, Any]:
    import torch

    from tsn.inference.speed import optimize, prepare
    from tsn.precision import autocast

    settings, device = job.settings, job.settings.device
    process = _process_setup(settings, job.config)
    # Inductor's C++ build warns "No CUDA runtime is found" on a CPU-only machine with a CUDA build of torch.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    model = build_benchmark_model(settings).eval()
    names = list(model.tasks)
    image = _image(job.batch, job.size, device)
    options = _inference_options(job.config, settings)
    if job.config == "onnxruntime":
        run, warmup = _onnx_runner(job, image, names)
    else:
        model = optimize(model, options)
        image = prepare(image, options)

        def call(tasks: list[str]) -> dict[str, Any]:
            # Through model.__call__, which is what torch.compile compiles.
            with torch.inference_mode(), autocast(device, options.precision):
                if job.config.startswith("authors"):
                    return model.forward_per_task(image, tasks)
                return model(image, tasks)

        run = functools.partial(call, names)
        # One task is a complete warm-up of the authors' way (same shapes for every task), at a fifth of the cost,
        # and of the all-task path where it decodes one task per call (512 px); compiled models need the real call.
        one_per_call = not options.compile and _one_task_per_call(model, image, options)
        warmup = functools.partial(call, names[:1]) if job.config.startswith("authors") or one_per_call else run
    memory = _Memory(device)
    repeats = settings.repeats if job.batch == settings.batches[0] else settings.repeats_large
    times = _timings(run, warmup, settings, repeats)
    result: dict[str, Any] = {"times": [round(t, 4) for t in times], **memory.figures(),
                              "options": ("onnxruntime" if job.config == "onnxruntime" else str(options)) + process}
    if job.save_outputs:
        outputs = run()
        atomic_torch_save({k: torch.as_tensor(v).float().cpu() for k, v in outputs.items()}, job.save_outputs)
    if job.profile and job.config != "onnxruntime":
        result["top_ops"] = _top_ops(run)
    return result


def _one_task_per_call(model: Any, image: Any, options: Any) -> bool:
    """Whether the all-task path decodes one task per call here (then one task is a complete warm-up)."""
    import torch

    from tsn.models.backbone import encode, padded_size

    if not hasattr(model, "tasks_per_call"):
        return False
    with torch.inference_mode():  # the shapes of one image's features; the batch is passed apart
        features = encode(model.encoder, image[:1], model.input_multiple)
    size = padded_size(image.shape[-2:], model.input_multiple)
    dtype = torch.bfloat16 if options.bf16 else image.dtype
    return bool(model.tasks_per_call(features, size, image.shape[0], dtype) == 1)


def _onnx_runner(job: Job, image: Any, names: list[str]) -> tuple[Callable, Callable]:
    """``(run every task, warm-up)`` on an onnxruntime session of the exported file."""
    import onnxruntime

    from tsn.inference.export import run_onnx

    options = onnxruntime.SessionOptions()
    if job.settings.threads:
        options.intra_op_num_threads = job.settings.threads
    session = onnxruntime.InferenceSession(job.onnx_path, options, providers=["CPUExecutionProvider"])
    array = image.cpu().numpy()

    def run() -> dict[str, Any]:
        return {t: run_onnx(session, array, i)[0][:, : job.channels[t]] for i, t in enumerate(names)}

    return run, functools.partial(run_onnx, session, array, 0)


def _random_labels(specs: Mapping[str, Any], batch: int, size: int, device: str) -> dict[str, Any]:
    """Random labels of the right kind for every task (the transformed-label layout the losses take)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    return {
        name: spec.kind.random_label(spec.channels, batch, size, generator).to(device) for name, spec in specs.items()
    }


def _training_worker(job: Job) -> dict[str, Any]:
    import torch

    from tsn.inference.speed import SpeedOptions, fastest_options, optimize, prepare
    from tsn.precision import autocast
    from tsn.training import load_config
    from tsn.training.losses import loss_weights, multitask_loss
    from tsn.training.optim import build_optimizer

    settings, device = job.settings, job.settings.device
    process = _process_setup(settings, job.config)
    recipe = load_config(settings.preset)  # the one copy of the preset's optimizer, learning rates, loss weights
    model = build_benchmark_model(settings).train()
    if job.config.startswith("naive"):
        options = SpeedOptions()
    else:  # compiled on CUDA only: on the CPU, Inductor's backward kernels measured slower than eager (1.6x, 512 px
        # bf16, 2-core AMX Xeon, docs/performance.md), besides minutes of compilation
        fastest = fastest_options(device)
        compile_ = fastest.compile and settings.compile and device.startswith("cuda")
        options = dataclasses.replace(fastest, compile=compile_)
    model = optimize(model, options, inference=False)
    # As the trainer with compile: true, the losses (full-resolution pointwise work) are compiled with the model.
    loss_function = torch.compile(multitask_loss) if options.compile else multitask_loss
    optimizer = build_optimizer(model, recipe)
    image = prepare(_image(job.batch, job.size, device), options)
    specs = model.task_specs
    labels = _random_labels(specs, job.batch, job.size, device)
    weights = loss_weights(specs, recipe.loss_weights)
    names = list(specs)

    def step(tasks: list[str]) -> None:
        with autocast(device, options.precision):
            outputs = model(image, tasks)
            loss, _ = loss_function(outputs, labels, specs, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def step_per_task() -> None:
        for task in names:
            step([task])

    if job.config.startswith("naive"):  # one step per task in turn, as the authors' loop
        steps = len(names)
        run, warmup = step_per_task, functools.partial(step, names[:1])
    else:
        steps = 1
        run = warmup = functools.partial(step, names)
    memory = _Memory(device)
    compile_seconds = None
    if options.compile:  # the first call compiles forward, backward and losses; the warm-up then runs compiled
        started = time.perf_counter()
        warmup()
        compile_seconds = round(time.perf_counter() - started, 1)
    times = _timings(run, warmup, settings, settings.train_repeats)
    task_samples = job.batch * len(names)  # per call of run: every task once, for each image of the batch
    return {
        "times": [round(t, 4) for t in times],
        "options": str(options) + process,
        "steps_per_call": steps,
        "task_samples_per_s": round(task_samples / statistics.median(times), 3),
        "images_per_s": round(job.batch * steps / statistics.median(times), 3),
        "compile_seconds": compile_seconds,  # the first (compiling) call, one step included; None: not compiled
        **memory.figures(),
    }


def run_job(job: Job) -> dict[str, Any]:
    """Entry point of a worker process: one configuration, any failure returned as an ``error`` string."""
    try:
        return (_inference_worker if job.kind == "inference" else _training_worker)(job)
    except Exception as error:  # a configuration the machine cannot run (no compiler, no memory...) is reported
        return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"}
