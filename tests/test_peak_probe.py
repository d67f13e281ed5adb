"""The benchmark's peaks: probes that reach the machine's rate, the theoretical peak from the CPU's instruction
set, and percentages of peak that never exceed 100."""

from __future__ import annotations

import re

import pytest

from tsn.studies.throughput import (
    cap_peaks,
    conv_peak_gflops,
    cpu_features,
    format_report,
    measured_peaks,
    theoretical_peak,
)
from tsn.studies.throughput import machine as benchmark_machine

SAPPHIRE_RAPIDS = ["fma", "avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]


def test_theoretical_peak_from_flags_and_clock() -> None:
    peak = theoretical_peak(SAPPHIRE_RAPIDS, cores=2, clock_mhz=2600.0)
    assert peak["gflops"] == {"float32": 2 * 2.6 * 64, "bfloat16": pytest.approx(2 * 2.6 * 1024)}
    assert peak["isa"]["bfloat16"].startswith("AMX")
    assert any("FMA units" in a for a in peak["assumptions"]["float32"])
    assert not any("FMA units" in a for a in peak["assumptions"]["bfloat16"])  # AMX has one tile unit
    assert any("clock" in a for a in peak["assumptions"]["bfloat16"])
    one_unit = theoretical_peak(SAPPHIRE_RAPIDS, cores=2, clock_mhz=2600.0, fma_units=1, clock_assumed=False)
    assert one_unit["gflops"]["float32"] == 2 * 2.6 * 32 and one_unit["assumptions"]["float32"] == []


@pytest.mark.parametrize("flags, fp32, bf16", [
    (["avx512f", "avx512_bf16", "fma"], 64, 128),   # Cooper Lake: vdpbf16ps on both FMA units
    (["avx", "avx2", "fma"], 32, 32),                # AVX2: bfloat16 runs on the float32 units
    (["avx"], 16, 16),                               # Sandy Bridge: one add and one multiply port
    (["sse2"], 8, 8),
])
def test_flop_per_cycle_per_instruction_set(flags, fp32, bf16) -> None:
    peak = theoretical_peak(flags, cores=4, clock_mhz=3000.0)
    assert peak["flop_per_cycle_per_core"] == {"float32": fp32, "bfloat16": bf16}
    assert peak["gflops"]["float32"] == pytest.approx(4 * 3.0 * fp32)
    assert theoretical_peak(flags, cores=4, clock_mhz=None)["gflops"] == {"float32": None, "bfloat16": None}


CPUINFO = "".join(
    f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {core}\ncpu MHz\t\t: 2100.000\nflags\t\t: fpu avx2 fma\n\n"
    for cpu, core in [(0, 0), (1, 0), (2, 1), (3, 1)]  # two cores with two hyperthreads each
)


def test_cpu_features_counts_physical_cores_and_says_where_the_clock_came_from(monkeypatch) -> None:
    monkeypatch.setattr(benchmark_machine.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(benchmark_machine, "_max_clock_mhz", lambda: (None, ""))
    features = cpu_features(CPUINFO)
    assert features["physical_cores"] == 2 and {"avx2", "fma"} <= set(features["flags"])
    assert features["clock_mhz"] == 2100.0 and features["clock_assumed"]
    monkeypatch.setattr(benchmark_machine, "_max_clock_mhz", lambda: (3500.0, "cpufreq max"))
    features = cpu_features(CPUINFO)
    assert features["clock_mhz"] == 3500.0 and not features["clock_assumed"]


def _entry(config: str, gflops: float, dtype: str = "float32") -> dict:
    return {"config": config, "size": 64, "batch": 1, "gflops": gflops, "peak_dtype": dtype}


def test_a_rate_above_every_probe_becomes_the_peak() -> None:
    """The machine of issue 9: fp32 convolutions at 358 GFLOP/s against a 175 GFLOP/s matmul."""
    peaks = {"float32": {"measured": 175.0, "source": "matmul"}, "bfloat16": {"measured": 2000.0, "source": "m"}}
    entries = [_entry("fast", 358.0), _entry("slow", 100.0), _entry("bf16", 1000.0, "bfloat16"), {"error": "x"}]
    notes = cap_peaks(peaks, entries, {"gflops": {"float32": 400.0, "bfloat16": 900.0}})
    assert peaks["float32"]["used"] == 358.0 and "fast" in peaks["float32"]["raised_by"]
    assert [e.get("peak_fraction") for e in entries] == [1.0, round(100 / 358, 3), 0.5, None]
    assert entries[1]["theoretical_fraction"] == 0.25
    assert entries[2]["theoretical_fraction"] is None  # the theoretical bfloat16 peak is below a measured rate
    assert any("358.0" in n for n in notes) and any("exceeds the theoretical 900.0" in n for n in notes)


def test_the_report_never_prints_more_than_100_percent() -> None:
    peaks = {"float32": {"measured": 175.0, "source": "matmul"}}
    inference = [dict(_entry("fast", 358.0), seconds=1.0, images_per_s=1.0, peak_memory_mb=1.0)]
    training = [dict(_entry("train", 500.0), task_samples_per_s=1.0, peak_memory_mb=1.0)]
    notes = cap_peaks(peaks, inference + training, None)
    text = format_report({"inference": inference, "training": training, "peak_gflops": peaks, "peak_notes": notes})
    rows = {line.split()[0]: [float(v) for v in re.findall(r"\d+\.\d+", line)] for line in text.splitlines()
            if line.startswith(("fast", "train"))}
    # inference: seconds, img/s, GFLOP/s, % peak, ...; training: task-samples/s, GFLOP/s, % peak, ...
    assert (rows["fast"][3], rows["train"][2]) == (71.6, 100.0) and "raised to the rate of" in text


def test_probes_return_positive_rates_on_tiny_sizes() -> None:
    assert conv_peak_gflops("float32", "cpu", channels=8, size=8, repeats=1) > 0
    peaks = measured_peaks("cpu", matmul_n=64, conv_size=8, repeats=2)
    for peak in peaks.values():
        assert set(peak["probes"]) == {"matmul", "conv3x3_nchw", "conv3x3_channels_last"}
        assert min(peak["probes"].values()) > 0 and peak["measured"] == max(peak["probes"].values())
