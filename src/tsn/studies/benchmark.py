"""``tsn benchmark``: all-task inference and training speed, side by side, in one run.

Inference, for every size and batch (``model`` = the paper's TSN, random weights):

* ``authors``: the authors' way, the whole network once per task, eager float32, in a process as shipped
  (glibc's default allocator, torch's default threads);
* ``authors_tuned``: the same in a process with the fast configurations' settings (the allocator of
  ``--tune-allocator``, ``--threads``): the like-for-like baseline. Every ratio is given against both;
* ``all_tasks``: :meth:`TaskSwitchingNet.predict_tasks`, eager float32 (encoder once, decoder batched);
* ``all_tasks_fp32_fast``: the same with the fastest float32 options (channels_last, fused);
* ``fastest``: :func:`tsn.inference.speed.fastest_options` (adds bfloat16 where the hardware has it);
* ``onnxruntime``: the ``tsn export`` file on onnxruntime's CPU provider, one task per run (CPU only; first
  batch size only).

With ``--tune-allocator`` (:attr:`BenchmarkSettings.tune_allocator`), the worker processes of the fast
configurations and of the tuned baselines also run :func:`tsn.inference.speed.tune_glibc_allocator` (CPU only),
and ``--threads`` is applied to those processes only; ``authors``, ``all_tasks`` and ``naive`` run as shipped.

Training: one optimizer step of the preset's training recipe (:func:`tsn.training.load_config`: the paper's Adam
with encoder lr 1e-6, its losses and weights) on random images and labels: ``naive`` is the authors' loop (one
task per step, eager float32), ``all_tasks_fast`` the all-task schedule (every task of a batch in one step) with
the training speed options (:func:`~tsn.inference.speed.fastest_options`; on CUDA the model and the losses are
compiled, and the first call, which compiles, is reported as ``compile_seconds``), and ``naive_tuned`` the naive
loop with the process settings of ``all_tasks_fast`` (like-for-like). Throughput counts *task-samples* (an image
with one task's label), the unit in which both schedules consume an epoch.

Every configuration runs in a fresh Python process (``spawn``: nothing inherited from the driver, no allocator
state, no imported library; ``--quick`` forks from a server instead), so its peak memory is its own:
``process_peak_mb`` is the process's high-water resident set (``VmHWM``: interpreter, torch, the model and the
run), ``peak_memory_mb`` its growth over the resident set once the model is built; on CUDA,
``torch.cuda.max_memory_allocated``. FLOPs are counted once per shape with
:class:`torch.utils.flop_counter.FlopCounterMode` on the meta device; :func:`flop_split` splits the
all-task path's FLOPs into what the tasks share and what each task adds.

Achieved GFLOP/s are compared with two peaks per dtype (float32, bfloat16):

* the *measured* peak: the best of probes that reach it, a large matmul and a large 3x3 convolution in both memory
  formats (a machine's BLAS may take a slow path that its convolutions do not). If a configuration runs faster
  than every probe, its rate becomes the peak and the report says so, so a percentage of peak never exceeds 100;
* the *theoretical* peak: physical cores x clock x FLOP per cycle from the CPU's instruction set (AVX2 / AVX-512
  FMA, AVX512-BF16, AMX), read from ``/proc/cpuinfo`` and cpufreq. The clock and the FMA unit count are often not
  knowable inside a VM; the report says which figures are assumptions (:func:`theoretical_peak`).

Accuracy: every configuration's outputs at batch 1 are compared with the authors' way (largest absolute difference
and decision agreement).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tsn.utils.io import atomic_torch_save, atomic_write_json

__all__ = [
    "BenchmarkSettings",
    "INFERENCE_CONFIGS",
    "TRAINING_CONFIGS",
    "run_benchmark",
    "machine_info",
    "device_tag",
    "matmul_peak_gflops",
    "conv_peak_gflops",
    "measured_peaks",
    "cpu_features",
    "theoretical_peak",
    "cap_peaks",
    "count_gflop",
    "format_report",
    "default_output",
]

SCHEMA = "tsn-benchmark/2"
GOALS: dict[str, tuple[str, float]] = {
    "fp32_vs_authors_tuned": (">=", 1.85),
    "bf16_vs_authors_tuned": (">=", 3.3),
    "fp32_peak_fraction": (">=", 0.9),
    "bf16_peak_fraction": (">=", 0.9),
    "fp32_memory_vs_authors_batch1": ("<=", 1.25),
    "fp32_memory_vs_authors_large_batch": ("<=", 1.0),
    "training_vs_naive_tuned": (">=", 3.0),
}
"""Targets of issue 12: like-for-like speed-ups (against the authors' way with the same process settings) at the
largest size and batch 1, the fraction of the measured peak, the process peak memory of the fastest float32
path against the authors' way as shipped (batch 1 and the largest batch), and training against the naive loop
with the same process settings."""

INFERENCE_CONFIGS: dict[str, str] = {
    "authors": "the authors' way: whole network once per task, eager float32, process as shipped",
    "authors_tuned": "the authors' way with the fast configurations' process settings (allocator, threads)",
    "all_tasks": "all-task path (encoder once, decoder batched over tasks), eager float32",
    "all_tasks_fp32_fast": "all-task path, fastest float32 options (fastest_options(allow_bf16=False))",
    "fastest": "all-task path, fastest accurate options (fastest_options(): bfloat16 where native)",
    "onnxruntime": "the exported ONNX file on onnxruntime (CPU), one task per run",
}
TRAINING_CONFIGS: dict[str, str] = {
    "naive": "authors' loop: one task per step, whole network, eager float32, process as shipped",
    "naive_tuned": "authors' loop with the fast configuration's process settings (allocator, threads)",
    "all_tasks_fast": "all-task schedule: encoder once per batch, decoder batched, training speed options",
}


@dataclass(frozen=True)
class BenchmarkSettings:
    """What to measure. :meth:`quick` is the small variant used by the tests."""

    sizes: tuple[int, ...] = (512,)
    batches: tuple[int, ...] = (1, 8)
    device: str = "cpu"
    preset: str = "tsn_r18_pascal"
    backbone: str | None = None
    """Another timm encoder for the preset's model (``convnext_tiny``, ``vit_small_patch14_dinov2``...); None: the
    preset's. Random weights, default decoder widths for the preset's family (docs/backbones.md)."""
    warmup: int = 1
    repeats: int = 2
    """Timed calls per configuration at the first batch size (the median is reported)."""
    repeats_large: int = 1
    """Timed calls at the other batch sizes: one 8-image call of the authors' way takes ~40 s on 2 cores."""
    train_size: int = 512
    train_batch: int = 2
    train_repeats: int = 1
    threads: int | None = None
    compile: bool = True
    onnx: bool = True
    quick: bool = False
    tune_allocator: bool = False
    """CPU only: glibc keeps freed memory in the processes of the fast configurations and the tuned baselines."""

    @classmethod
    def quick_settings(cls, **overrides: Any) -> BenchmarkSettings:
        """Tiny images, one repeat, no compilation: a smoke run of the whole benchmark in well under a minute."""
        values: dict[str, Any] = dict(sizes=(64,), batches=(1, 2), repeats=1, repeats_large=1, train_size=64,
                                      train_repeats=1,
                                      compile=False, quick=True)
        values.update(overrides)
        return cls(**values)


# --------------------------------------------------------------------------------------------- machine and FLOPs
def device_tag(device: str) -> str:
    """``cpu-<cores>core`` or ``cuda-<gpu name>``: the results file's name."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device)).lower()
        return "cuda-" + "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return f"cpu-{os.cpu_count()}core"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    """CPU model, cores, threads, library versions, GPU name, and the load average (other work on the machine)."""
    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def matmul_peak_gflops(dtype_name: str, device: str, n: int | None = None, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n x n`` matmul in ``dtype_name`` (``float32`` / ``bfloat16``): the machine's peak."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = n or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for index in range(repeats + 1):
        _synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _synchronize(device)
        if index:  # the first call is the warm-up
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def conv_peak_gflops(dtype_name: str, device: str, channels_last: bool = True, *, channels: int | None = None,
                     size: int | None = None, batch: int = 1, repeats: int = 5) -> float:
    """Best GFLOP/s of a ``channels -> channels`` 3x3 convolution (padding 1) on ``batch x channels x size x size``.

    The decoder's dominant kernel, in the model's dtype and memory format: oneDNN's convolutions can run faster
    than the BLAS behind ``torch.mm`` (one machine measured 358 GFLOP/s in fp32 convolutions against a 175 GFLOP/s
    matmul), so a matmul alone is not the machine's peak.
    """
    import torch

    dtype = getattr(torch, dtype_name)
    cuda = device.startswith("cuda")
    channels = channels or (256 if cuda else 128)
    size = size or 128
    batch = batch if not cuda else max(batch, 8)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, channels, size, size, generator=generator).to(device=device, dtype=dtype)
    weight = torch.randn(channels, channels, 3, 3, generator=generator).to(device=device, dtype=dtype)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode():
        for index in range(repeats + 1):
            _synchronize(device)
            start = time.perf_counter()
            torch.nn.functional.conv2d(image, weight, padding=1)
            _synchronize(device)
            if index:  # the first call is the warm-up (and oneDNN's kernel selection)
                best = min(best, time.perf_counter() - start)
    return 2 * batch * channels * channels * 9 * size * size / best / 1e9


PEAK_DTYPES = ("float32", "bfloat16")


def measured_peaks(device: str, *, matmul_n: int | None = None, conv_size: int | None = None,
                   repeats: int = 5) -> dict[str, dict[str, Any]]:
    """Per dtype: every probe's GFLOP/s (``probes``), the best of them (``measured``) and which one it was."""
    peaks: dict[str, dict[str, Any]] = {}
    for dtype in PEAK_DTYPES:
        probes = {
            "matmul": matmul_peak_gflops(dtype, device, n=matmul_n, repeats=repeats),
            "conv3x3_nchw": conv_peak_gflops(dtype, device, channels_last=False, size=conv_size, repeats=repeats),
            "conv3x3_channels_last": conv_peak_gflops(dtype, device, channels_last=True, size=conv_size,
                                                      repeats=repeats),
        }
        best = max(probes, key=probes.__getitem__)
        rounded = {k: float(f"{v:.4g}") for k, v in probes.items()}  # significant digits: tiny probes stay > 0
        peaks[dtype] = {"probes": rounded, "measured": rounded[best], "source": best}
    return peaks


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    """``/proc/cpuinfo`` as one ``{field: value}`` dict per logical processor."""
    blocks: list[dict[str, str]] = []
    block: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if block:
                blocks.append(block)
            block = {}
        elif ":" in line:
            key, value = line.split(":", 1)
            block[key.strip()] = value.strip()
    if block:
        blocks.append(block)
    return blocks


def _max_clock_mhz() -> tuple[float | None, str]:
    """The CPU's maximum clock and where it was read: cpufreq's ``cpuinfo_max_freq``, else lscpu's max MHz."""
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000, "cpufreq max"
    except (OSError, ValueError):
        pass
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in output.splitlines():
            if line.startswith("CPU max MHz:"):
                return float(line.split(":", 1)[1]), "lscpu max MHz"
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return None, ""


def cpu_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """Instruction-set flags, physical cores usable by this process and the clock, with where each came from.

    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when None). Without a cpufreq / lscpu maximum the clock is
    ``/proc/cpuinfo``'s "cpu MHz" (the current or, in a VM, the nominal clock) and ``clock_assumed`` is true.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    blocks = _cpuinfo_blocks(cpuinfo)
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    usable = [b for b in blocks if int(b.get("processor", -1)) in allowed] or blocks
    # Hyperthreads share their core's vector units: count distinct (socket, core) pairs.
    cores = len({(b.get("physical id"), b.get("core id", b.get("processor"))) for b in usable}) or len(allowed)
    flags = sorted(set(usable[0].get("flags", "").split())) if usable else []
    clock, source = _max_clock_mhz()
    if clock is None and usable and "cpu MHz" in usable[0]:
        clock, source = float(usable[0]["cpu MHz"]), "/proc/cpuinfo cpu MHz (current or nominal clock)"
    return {"flags": flags, "physical_cores": cores, "clock_mhz": clock, "clock_source": source,
            "clock_assumed": source not in ("cpufreq max", "lscpu max MHz")}


def theoretical_peak(flags: Iterable[str], cores: int, clock_mhz: float | None,
                     fma_units: int | None = None, *, clock_assumed: bool = True) -> dict[str, Any]:
    """Peak GFLOP/s per dtype = ``cores x clock x FLOP per cycle per core`` from the instruction set.

    Per core and cycle, float32: AVX-512 FMA 16 lanes x 2 FLOP x FMA units; AVX2 FMA 8 x 2 x units; AVX without
    FMA 8 x 2 (one add and one multiply port); SSE 4 x 2. bfloat16: AMX-BF16 1024 (one tile multiply unit), else
    AVX512-BF16 ``vdpbf16ps`` 32 x 2 x units, else the float32 figure. ``fma_units`` is 2 unless given: every
    AVX2 core since Haswell has two, but some AVX-512 parts (Xeon Bronze / Silver, client Ice Lake) have one, and
    a VM's flags do not say which, so the report marks it an assumption. The clock is the maximum turbo when read
    from cpufreq; heavy AVX-512 or AMX work runs below it, so the figure is an upper bound.
    """
    flags = set(flags)
    units, units_assumed = (fma_units, False) if fma_units else (2, True)
    if "avx512f" in flags:
        fp32, fp32_isa = 16 * 2 * units, f"AVX-512 FMA x {units} units"
    elif "avx2" in flags and "fma" in flags:
        fp32, fp32_isa = 8 * 2 * units, f"AVX2 FMA x {units} units"
    elif "avx" in flags:
        fp32, fp32_isa, units_assumed = 8 * 2, "AVX (separate add and multiply)", False
    else:
        fp32, fp32_isa, units_assumed = 4 * 2, "SSE", False
    if "amx_bf16" in flags:
        bf16, bf16_isa = 1024, "AMX-BF16 tile multiply"
    elif "avx512_bf16" in flags:
        bf16, bf16_isa = 32 * 2 * units, f"AVX512-BF16 x {units} units"
    else:
        bf16, bf16_isa = fp32, f"{fp32_isa}, no bfloat16 instructions"
    uses_units = {"float32": "units" in fp32_isa, "bfloat16": "units" in bf16_isa}
    assumptions: dict[str, list[str]] = {}
    for dtype, needs_units in uses_units.items():
        assumed = []
        if clock_assumed:
            assumed.append("clock: no maximum clock readable (a VM?), the reported one was used; turbo may be higher")
        if units_assumed and needs_units:
            assumed.append(f"{units} FMA units per core (not readable from the CPU flags)")
        assumptions[dtype] = assumed
    gflops = {d: round(cores * clock_mhz * per_cycle / 1e3, 1) if clock_mhz else None
              for d, per_cycle in (("float32", fp32), ("bfloat16", bf16))}
    return {"gflops": gflops, "cores": cores, "clock_mhz": clock_mhz, "flop_per_cycle_per_core":
            {"float32": fp32, "bfloat16": bf16}, "isa": {"float32": fp32_isa, "bfloat16": bf16_isa},
            "fma_units": units, "assumptions": assumptions}


def _theoretical_for(device: str, threads: int) -> dict[str, Any] | None:
    """The theoretical peak of the cores the benchmark's threads can use; None on a GPU (not computed)."""
    if device.startswith("cuda"):
        return None
    features = cpu_features()
    cores = min(features["physical_cores"], threads)
    peak = theoretical_peak(features["flags"], cores, features["clock_mhz"],
                            clock_assumed=features["clock_assumed"])
    peak["clock_source"] = features["clock_source"]
    return peak


def cap_peaks(peaks: dict[str, dict[str, Any]], entries: Iterable[dict[str, Any]],
              theoretical: Mapping[str, Any] | None = None) -> list[str]:
    """Set every entry's ``peak_fraction`` (<= 1) and ``theoretical_fraction``; returns notes for the report.

    An entry has ``gflops`` and ``peak_dtype``. The peak used for a dtype (``peaks[dtype]["used"]``) is the
    measured peak, or the fastest entry's rate where that is higher ("raised_by" names it). A theoretical peak
    below a measured rate shows a wrong assumption: it is then not used for percentages, and a note says so.
    """
    entries = [e for e in entries if "gflops" in e]
    notes = []
    for dtype, peak in peaks.items():
        peak["used"], peak["raised_by"] = peak["measured"], None
        fastest = max((e for e in entries if e["peak_dtype"] == dtype), key=lambda e: e["gflops"], default=None)
        if fastest is not None and fastest["gflops"] > peak["measured"]:
            kind = fastest.get("kind", "inference")
            name = f"{kind} {fastest['config']} {fastest['size']}px batch {fastest['batch']}"
            peak["used"], peak["raised_by"] = fastest["gflops"], name
            notes.append(f"{dtype}: {name} ran at {fastest['gflops']} GFLOP/s, above every probe "
                         f"(best {peak['measured']}, {peak['source']}); that rate is used as the peak")
    usable_theory = {}
    for dtype, peak in peaks.items():
        value = (theoretical or {}).get("gflops", {}).get(dtype)
        if value and peak["used"] > value:
            notes.append(f"{dtype}: measured {peak['used']} GFLOP/s exceeds the theoretical {value}: its clock or "
                         "FMA-unit assumption is wrong, so no percentage of it is given")
        elif value:
            usable_theory[dtype] = value
    for entry in entries:
        entry["peak_fraction"] = round(min(1.0, entry["gflops"] / peaks[entry["peak_dtype"]]["used"]), 3)
        theory = usable_theory.get(entry["peak_dtype"])
        entry["theoretical_fraction"] = round(entry["gflops"] / theory, 3) if theory else None
    return notes


@functools.cache
def count_gflop(preset: str, size: int, batch: int, tasks: str, *, backward: bool = False,
                backbone: str | None = None) -> float:
    """Convolution and matmul GFLOP of one pass of ``preset`` on a ``batch x 3 x size x size`` input.

    ``tasks`` is ``"one"`` (the network once for one task) or ``"all"`` (the all-task path); counted on the meta
    device, so no arithmetic is done.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tsn.models import create_model

    with torch.device("meta"):
        model = create_model(preset, **({"backbone": backbone} if backbone else {}))
        image = torch.empty(batch, 3, size, size)
    # Inference runs without autograd, and then the all-task path streams its tasks (decode_bytes): count that.
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(backward):
        outputs = model(image, None if tasks == "all" else model.tasks[0])
        if backward:
            values = outputs.values() if isinstance(outputs, dict) else [outputs]
            torch.stack([v.float().mean() for v in values]).sum().backward()
    return counter.get_total_flops() / 1e9


def _layer_flops(module: Any, inputs: Any, output: Any) -> int:
    """FLOPs of one call of a convolution or linear layer from its shapes: 2 x multiply-adds, as FlopCounterMode."""
    import torch

    if isinstance(module, torch.nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return 2 * output.numel() * per_output
    return 2 * output.numel() * inputs[0].shape[-1]  # a linear layer: rows x out features x in features


@functools.cache
def flop_split(preset: str, size: int, batch: int = 1) -> dict[str, Any]:
    """Exact FLOPs of ``preset``'s TSN on ``batch x 3 x size x size``: what every task shares and what each adds.

    Counted from the shapes each layer sees on the meta device (no arithmetic): every convolution and linear layer
    (forward hooks, ``2 x`` multiply-adds as :class:`torch.utils.flop_counter.FlopCounterMode` counts them) and the
    channel pooling of the output layer (:func:`tsn.models.layers.pool_channels`, a matrix product). Shared, i.e.
    computed once for any number of tasks: the encoder and the lateral blocks' 1x1 convolutions. Everything else
    depends on the task: the fusion convolutions see AdaIN-modulated, LeakyReLU-activated lateral maps, which
    differ between tasks (tests/perf/test_sharing.py). ``unattributed`` is whatever FlopCounterMode counts beyond
    these layers (an encoder's attention matmuls; 0 for CNN encoders), run once and so shared as well.

    Returns integer FLOPs: ``encoder``, ``lateral_convs``, ``unattributed``, ``shared`` (their sum), ``per_task``
    (task -> FLOPs), ``all_tasks`` (shared + every task, one decoder call), ``per_task_way`` (the network once per
    task) and ``tasks``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tsn.models import create_model
    from tsn.models.layers import EqualLinear

    with torch.device("meta"):
        model: Any = create_model(preset)
        image = torch.empty(batch, 3, size, size)
    model.decode_bytes = 2**62  # every task in one decoder call: the lateral convolutions run once
    heads = model.head.out_channels
    tasks = list(model.tasks)
    counts: dict[str, int] = {}
    names = {module: name for name, module in model.named_modules()}

    def record(module: Any, inputs: Any, output: Any) -> None:
        counts[names[module]] = counts.get(names[module], 0) + _layer_flops(module, inputs, output)
        if module is model.head:  # the pooling of every task's output to its channels, per task in this pass
            for name in pass_tasks:
                channels = model.task_specs[name].channels
                if channels != heads:
                    pixels = output.numel() // (output.shape[1] * len(pass_tasks))
                    counts[f"pool.{name}"] = 2 * channels * heads * pixels

    layers = (torch.nn.Conv2d, torch.nn.Linear, EqualLinear)
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, layers)]
    per_pass: dict[str, int] = {}
    try:
        for pass_tasks in [[t] for t in tasks] + [tasks]:
            counts.clear()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(image, pass_tasks)
            per_pass[",".join(pass_tasks)] = counter.get_total_flops()
            one = dict(counts)
            if len(pass_tasks) == 1:
                per_pass["layers:" + pass_tasks[0]] = sum(one.values())
    finally:
        for hook in hooks:
            hook.remove()
    encoder = sum(v for k, v in one.items() if k.startswith("encoder."))
    lateral = sum(v for k, v in one.items() if k.startswith("decoder.laterals.") and k.endswith(".conv"))
    unattributed = per_pass[",".join(tasks)] - sum(one.values())
    shared = encoder + lateral + unattributed
    per_task = {t: per_pass["layers:" + t] - encoder - lateral for t in tasks}
    return {"tasks": tasks, "encoder": encoder, "lateral_convs": lateral, "unattributed": unattributed,
            "shared": shared, "per_task": per_task, "all_tasks": shared + sum(per_task.values()),
            "per_task_way": sum(per_pass[t] for t in tasks)}


# --------------------------------------------------------------------------------------------------- workers
@dataclass
class _Job:
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
        _synchronize(device)
        start = time.perf_counter()
        run()
        _synchronize(device)
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


def _build(settings: BenchmarkSettings) -> Any:
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


def _inference_worker(job: _Job) -> dict[str, Any]:
    import torch

    from tsn.inference.speed import autocast, optimize, prepare

    settings, device = job.settings, job.settings.device
    process = _process_setup(settings, job.config)
    # Inductor's C++ build warns "No CUDA runtime is found" on a CPU-only machine with a CUDA build of torch.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    model = _build(settings).eval()
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
            with torch.inference_mode(), autocast(options, device):
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


def _onnx_runner(job: _Job, image: Any, names: list[str]) -> tuple[Callable, Callable]:
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


def _training_worker(job: _Job) -> dict[str, Any]:
    import torch

    from tsn.inference.speed import SpeedOptions, autocast, fastest_options, optimize, prepare
    from tsn.training import load_config
    from tsn.training.losses import loss_weights, multitask_loss
    from tsn.training.trainer import build_optimizer

    settings, device = job.settings, job.settings.device
    process = _process_setup(settings, job.config)
    recipe = load_config(settings.preset)  # the one copy of the preset's optimizer, learning rates, loss weights
    model = _build(settings).train()
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
        with autocast(options, device):
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


def _worker(job: _Job) -> dict[str, Any]:
    """Entry point of a worker process: one configuration, any failure returned as an ``error`` string."""
    try:
        return (_inference_worker if job.kind == "inference" else _training_worker)(job)
    except Exception as error:  # a configuration the machine cannot run (no compiler, no memory...) is reported
        return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"}


# --------------------------------------------------------------------------------------------------- accuracy
def _accuracy(reference: Mapping[str, Any], outputs: Mapping[str, Any], specs: Mapping[str, Any]) -> dict:
    """Per task: largest absolute difference, and the fraction of pixels whose decision is unchanged
    (class argmax, binary threshold) or the mean and largest angle between normal vectors, in degrees: what
    the output kind measures (:meth:`tsn.kinds.OutputKind.agreement`)."""
    report = {}
    for name, ref in reference.items():
        out, spec = outputs[name], specs[name]
        entry: dict[str, float] = {"max_abs": float((out - ref).abs().max()), "ref_max_abs": float(ref.abs().max())}
        entry.update(spec.kind.agreement(out, ref))
        report[name] = {k: float(f"{v:.3g}") for k, v in entry.items()}
    return report


# --------------------------------------------------------------------------------------------------- driver
def _pool(settings: BenchmarkSettings) -> Any:
    """A pool that runs every configuration in a new Python process (``spawn``), one at a time.

    Not a fork: a forked child shares its parent's pages and inherits its allocator state, so neither its memory
    nor its "as shipped" settings would be its own. Each process imports torch anew (a few seconds each). The
    ``quick`` smoke run, whose figures are not quoted, forks its workers from a server that imported torch once.
    """
    methods = multiprocessing.get_all_start_methods()
    if settings.quick and "forkserver" in methods:
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(
            ["torch", "timm", "tsn.studies.benchmark", "tsn.models", "tsn.inference.speed", "tsn.training"]
        )
        return forkserver.Pool(processes=1, maxtasksperchild=1)
    return multiprocessing.get_context("spawn").Pool(processes=1, maxtasksperchild=1)


def _inference_jobs(settings: BenchmarkSettings, tmp: Path, onnx_path: str | None,
                    channels: dict[str, int]) -> Iterable[_Job]:
    for size in settings.sizes:
        for batch in settings.batches:
            first = batch == settings.batches[0]
            # onnxruntime runs one task per call, so its cost per image does not depend on the batch: measured at
            # the first batch size only, which keeps the whole CPU benchmark under ten minutes.
            configs = [c for c in INFERENCE_CONFIGS if c != "onnxruntime" or (onnx_path and first)]
            for config in configs:
                # The tuned baseline runs the authors' very operations: its outputs and profile add nothing.
                extras = first and config != "authors_tuned"
                yield _Job(
                    "inference", config, size, batch, settings, onnx_path=onnx_path,
                    save_outputs=str(tmp / f"{config}-{size}.pt") if extras else None,
                    profile=extras and size == max(settings.sizes), channels=channels,
                )


def run_benchmark(settings: BenchmarkSettings, output: str | os.PathLike[str] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure all that :mod:`tsn.studies.benchmark` describes, print the table, write the JSON; returns the results."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    model = _build(settings)  # the workers' weights
    specs, names = model.task_specs, list(model.tasks)
    info = machine_info(settings.device)
    log(f"tsn benchmark on {info['cpu']} ({info['cores']} cores, {info['threads']} threads, torch {info['torch']})"
        + (f", {info['gpu']}" if info["gpu"] else "") + f"; load average {info.get('load_average_at_start')}")
    peaks = measured_peaks(settings.device)
    theoretical = _theoretical_for(settings.device, info["threads"])
    for dtype, peak in peaks.items():
        probes = ", ".join(f"{name} {value}" for name, value in peak["probes"].items())
        log(f"{dtype} peak probes (GFLOP/s): {probes}" + _theory_text(theoretical, dtype))
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {**asdict(settings), "sizes": list(settings.sizes), "batches": list(settings.batches)},
        "machine": info,
        "model": {"preset": settings.preset, "backbone": model.config.backbone, "tasks": names,
                  "parameters": model.num_parameters()},
        "matmul_peak_gflops": {dtype: peak["probes"]["matmul"] for dtype, peak in peaks.items()},
        "peak_gflops": peaks,
        "theoretical_peak": theoretical,
        "flops": _flops_summary(settings.preset, max(settings.sizes)),
        "inference": [],
        "training": [],
    }
    with tempfile.TemporaryDirectory(prefix="tsn-bench-") as tmp_dir, _pool(settings) as pool:
        tmp = Path(tmp_dir)
        onnx_path = _export_for_onnxruntime(model, settings, tmp, log)
        jobs = list(_inference_jobs(settings, tmp, onnx_path, {n: s.channels for n, s in specs.items()}))
        for job in jobs:
            results["inference"].append(_measure_inference(pool, job, log))
            _write_partial(results, output)
        _add_accuracy(results["inference"], tmp, specs, settings.batches[0])
        for config in TRAINING_CONFIGS:
            job = _Job("training", config, settings.train_size, settings.train_batch, settings)
            results["training"].append(_measure_training(pool, job, log))
            _write_partial(results, output)
    results["complete"] = True
    results["peak_notes"] = cap_peaks(peaks, results["inference"] + results["training"], theoretical)
    _add_ratios(results)
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    log(format_report(results))
    if output is not None:
        atomic_write_json(output, results)
        log(f"wrote {output}")
    return results


def _write_partial(results: dict[str, Any], output: str | os.PathLike[str] | None) -> None:
    """The results so far (``"complete": false``), written atomically after every configuration: a run cut short
    keeps what it measured."""
    if output is not None:
        atomic_write_json(output, {**results, "complete": False})


def _flops_summary(preset: str, size: int) -> dict[str, Any]:
    """:func:`flop_split` at ``size``, batch 1, in GFLOP: what the tasks share and what each adds."""
    split = flop_split(preset, size, 1)
    gflop = {k: round(v / 1e9, 3) for k, v in split.items() if isinstance(v, int)}
    return {"size": size, "batch": 1, **gflop,
            "per_task": {t: round(v / 1e9, 3) for t, v in split["per_task"].items()}}


def _export_for_onnxruntime(model: Any, settings: BenchmarkSettings, tmp: Path,
                            log: Callable[[str], None]) -> str | None:
    """The workers' model exported for the ``onnxruntime`` configuration; None where it is not measured."""
    if not settings.onnx or settings.device.startswith("cuda"):
        return None
    from tsn.inference.export import export_onnx

    try:
        return str(export_onnx(model, tmp / "model.onnx", verify_size=None).path)
    except Exception as error:  # onnxscript missing or an exporter failure: benchmark the rest
        log(f"onnxruntime skipped: {str(error).strip().splitlines()[0]}")
        return None


def _theory_text(theoretical: Mapping[str, Any] | None, dtype: str) -> str:
    """``"; theoretical T (cores x GHz x FLOP/cycle, ISA; assumptions)"`` for the log, or nothing."""
    if not theoretical or not theoretical["gflops"][dtype]:
        return ""
    assumed = "; ".join(theoretical["assumptions"][dtype])
    return (f"; theoretical {theoretical['gflops'][dtype]} = {theoretical['cores']} cores x "
            f"{theoretical['clock_mhz'] / 1e3:.2f} GHz x {theoretical['flop_per_cycle_per_core'][dtype]} FLOP/cycle "
            f"({theoretical['isa'][dtype]})" + (f" [assumed: {assumed}]" if assumed else ""))


def _peak_dtype(options: str) -> str:
    return "bfloat16" if "bf16" in options else "float32"


def _measure_inference(pool: Any, job: _Job, log: Callable) -> dict[str, Any]:
    result = pool.apply(_worker, (job,))
    entry = {"config": job.config, "size": job.size, "batch": job.batch, **result, "load_average": _load()}
    if "error" not in result:
        seconds = statistics.median(result["times"])
        gflop = count_gflop(job.settings.preset, job.size, job.batch, "all" if _all_tasks(job.config) else "one",
                            backbone=job.settings.backbone)
        gflop *= 1 if _all_tasks(job.config) else len(job.channels)
        entry.update(seconds=round(seconds, 4), images_per_s=round(job.batch / seconds, 3), gflop=round(gflop, 1),
                     gflops=round(gflop / seconds, 1), peak_dtype=_peak_dtype(result["options"]))
        log(f"  {job.config:<20} {job.size}px batch {job.batch}: {seconds:8.3f} s  "
            f"{entry['gflops']:7.1f} GFLOP/s  peak mem {result['peak_memory_mb']:8.1f} MB")
    else:
        log(f"  {job.config:<20} {job.size}px batch {job.batch}: failed ({result['error']})")
    return entry


def _load() -> float | None:
    """The 1-minute load average when a configuration finished (other work on the machine), where known."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _all_tasks(config: str) -> bool:
    return config not in ("authors", "authors_tuned", "onnxruntime")


def _measure_training(pool: Any, job: _Job, log: Callable) -> dict[str, Any]:
    result = pool.apply(_worker, (job,))
    entry = {"kind": "training", "config": job.config, "size": job.size, "batch": job.batch, **result,
             "load_average": _load()}
    if "error" not in result:
        seconds = statistics.median(result["times"])
        one_step = count_gflop(job.settings.preset, job.size, job.batch,
                               "one" if job.config.startswith("naive") else "all", backward=True,
                               backbone=job.settings.backbone)
        gflop = one_step * result["steps_per_call"]
        entry.update(gflop=round(gflop, 1), gflops=round(gflop / seconds, 1), peak_dtype=_peak_dtype(result["options"]))
        compiled = f"  (compiled in {result['compile_seconds']:.0f} s)" if result.get("compile_seconds") else ""
        log(f"  train {job.config:<14} {job.size}px batch {job.batch}: {result['task_samples_per_s']:.3f} "
            f"task-samples/s  peak mem {result['peak_memory_mb']:8.1f} MB{compiled}")
    else:
        log(f"  train {job.config:<14}: failed ({result['error']})")
    return entry


def _add_accuracy(entries: list[dict[str, Any]], tmp: Path, specs: Mapping[str, Any], batch: int) -> None:
    """Compare every configuration's outputs saved at the first batch size with the authors' way."""
    import torch

    for entry in entries:
        mine = tmp / f"{entry['config']}-{entry['size']}.pt"
        reference = tmp / f"authors-{entry['size']}.pt"
        if entry["config"] == "authors" or entry["batch"] != batch or not (mine.exists() and reference.exists()):
            continue
        entry["accuracy_vs_authors"] = _accuracy(
            torch.load(reference, weights_only=True), torch.load(mine, weights_only=True), specs
        )


def _add_ratios(results: dict[str, Any]) -> None:
    """Speed-ups over both authors' baselines and the naive loops, memory ratios, and the goals of issue 12."""
    inference = [e for e in results["inference"] if "seconds" in e]
    for baseline in ("authors", "authors_tuned"):
        base = {(e["size"], e["batch"]): e for e in inference if e["config"] == baseline}
        for entry in inference:
            reference = base.get((entry["size"], entry["batch"]))
            if reference is None:
                continue
            entry[f"speedup_vs_{baseline}"] = round(reference["seconds"] / entry["seconds"], 2)
            if entry.get("process_peak_mb") and reference.get("process_peak_mb"):
                entry[f"memory_vs_{baseline}"] = round(entry["process_peak_mb"] / reference["process_peak_mb"], 2)
    training = {e["config"]: e for e in results["training"] if "task_samples_per_s" in e}
    for baseline in ("naive", "naive_tuned"):
        if baseline in training:
            for entry in training.values():
                rate = training[baseline]["task_samples_per_s"]
                entry[f"speedup_vs_{baseline}"] = round(entry["task_samples_per_s"] / rate, 2)
    size = max(results["settings"]["sizes"])
    batches = results["settings"]["batches"]

    def figure(config: str, key: str, batch: int) -> float | None:
        found = [e.get(key) for e in inference if e["config"] == config and e["size"] == size and e["batch"] == batch]
        return found[0] if found else None

    small, large = min(batches), max(batches)
    measured = {
        "fp32_vs_authors_tuned": figure("all_tasks_fp32_fast", "speedup_vs_authors_tuned", small),
        "bf16_vs_authors_tuned": figure("fastest", "speedup_vs_authors_tuned", small),
        "fp32_peak_fraction": figure("all_tasks_fp32_fast", "peak_fraction", small),
        "bf16_peak_fraction": figure("fastest", "peak_fraction", small),
        "fp32_memory_vs_authors_batch1": figure("all_tasks_fp32_fast", "memory_vs_authors", small),
        "fp32_memory_vs_authors_large_batch": (figure("all_tasks_fp32_fast", "memory_vs_authors", large)
                                               if large != small else None),
        "training_vs_naive_tuned": training.get("all_tasks_fast", {}).get("speedup_vs_naive_tuned"),
    }
    results["goals"] = {}
    for name, (direction, target) in GOALS.items():
        value = measured[name]
        met = value is not None and (value >= target if direction == ">=" else value <= target)
        results["goals"][name] = {"target": target, "direction": direction, "measured": value, "met": met}


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}"


def _ratio(value: float | None, width: int) -> str:
    return f"{'-' if value is None else f'{value:.2f}':>{width}}"


def _memory(entry: Mapping[str, Any]) -> float:
    """The process peak where measured (CPU), else the growth figure (CUDA)."""
    return entry.get("process_peak_mb") or entry["peak_memory_mb"]


def format_report(results: Mapping[str, Any]) -> str:
    """The human-readable table printed at the end of a run (percentages of peak are at most 100)."""
    lines = ["", f"{'inference':<22}{'size':>6}{'batch':>6}{'seconds':>10}{'img/s':>8}{'GFLOP/s':>9}"
             f"{'% peak':>8}{'% theor':>8}{'mem MB':>8}{'x authors':>10}{'x tuned':>8}{'mem x':>7}"]
    for e in results["inference"]:
        if "seconds" not in e:
            lines.append(f"{e['config']:<22}{e['size']:>6}{e['batch']:>6}  failed: {e['error']}")
            continue
        lines.append(f"{e['config']:<22}{e['size']:>6}{e['batch']:>6}{e['seconds']:>10.3f}{e['images_per_s']:>8.2f}"
                     f"{e['gflops']:>9.1f}{_percent(e.get('peak_fraction')):>8}"
                     f"{_percent(e.get('theoretical_fraction')):>8}{_memory(e):>8.0f}"
                     f"{_ratio(e.get('speedup_vs_authors'), 10)}{_ratio(e.get('speedup_vs_authors_tuned'), 8)}"
                     f"{_ratio(e.get('memory_vs_authors'), 7)}")
    lines += ["", f"{'training':<22}{'size':>6}{'batch':>6}{'task-samples/s':>16}{'GFLOP/s':>9}{'% peak':>8}"
              f"{'mem MB':>8}{'x naive':>9}{'x tuned':>8}"]
    for e in results["training"]:
        if "task_samples_per_s" not in e:
            lines.append(f"{e['config']:<22}{e['size']:>6}{e['batch']:>6}  failed: {e['error']}")
            continue
        lines.append(f"{e['config']:<22}{e['size']:>6}{e['batch']:>6}{e['task_samples_per_s']:>16.3f}"
                     f"{e['gflops']:>9.1f}{_percent(e.get('peak_fraction')):>8}{_memory(e):>8.0f}"
                     f"{_ratio(e.get('speedup_vs_naive'), 9)}{_ratio(e.get('speedup_vs_naive_tuned'), 8)}")
    lines.append("")
    flops = results.get("flops")
    if flops:
        per_task = flops["per_task"]
        lines.append(f"FLOPs at {flops['size']} px, batch 1: shared {flops['shared']:.1f} GFLOP (encoder "
                     f"{flops['encoder']:.1f}, lateral convolutions {flops['lateral_convs']:.2f}), per task "
                     f"{min(per_task.values()):.1f}-{max(per_task.values()):.1f}; all {len(per_task)} tasks "
                     f"{flops['all_tasks']:.1f} vs {flops['per_task_way']:.1f} the authors' way")
    theoretical = results.get("theoretical_peak")
    for dtype, peak in results.get("peak_gflops", {}).items():
        raised = peak.get("raised_by")
        source = f"raised to the rate of {raised}" if raised else f"best probe: {peak['source']}"
        lines.append(f"% peak ({dtype}) is of {peak.get('used', peak['measured'])} GFLOP/s ({source})"
                     + _theory_text(theoretical, dtype))
    lines += [f"note: {note}" for note in results.get("peak_notes", [])]
    for name, goal in results.get("goals", {}).items():
        verdict = "met" if goal["met"] else "MISSED"
        lines.append(f"goal {name}: {goal.get('direction', '>=')} {goal['target']}, measured {goal['measured']} "
                     f"({verdict})")
    return "\n".join(lines)


def default_output(device: str, quick: bool) -> Path:
    """``benchmarks/results/<device tag>[-quick].json`` under the current folder."""
    return Path("benchmarks") / "results" / f"{device_tag(device)}{'-quick' if quick else ''}.json"

