"""The machine: its description, the measured peaks (matmul and convolution probes) and the theoretical peak from
the CPU's instruction set, and the cap that keeps every percentage of peak at or below 100."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def device_tag(device: str) -> str:
    """``cpu-<cores>core`` or ``cuda-<gpu name>``: the results file's name."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device)).lower()
        return "cuda-" + "".join(c if c.isalnum() else "-" for c in name).strip("-")
    return f"cpu-{os.cpu_count()}core"


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (else what the platform module knows)."""
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
        "cpu": cpu_model(),
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


def synchronize(device: str) -> None:
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
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
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
            synchronize(device)
            start = time.perf_counter()
            torch.nn.functional.conv2d(image, weight, padding=1)
            synchronize(device)
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


def theoretical_for(device: str, threads: int) -> dict[str, Any] | None:
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
