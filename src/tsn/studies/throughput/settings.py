"""What ``tsn benchmark`` measures: its settings, the configurations and the goals of issue 12."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    probe_matmul_n: int | None = None
    """Side of the matmul peak probe (None: 2048 on a CPU, 8192 on a GPU)."""
    probe_conv_size: int | None = None
    """Side of the convolution peak probes' feature map (None: 128)."""
    probe_repeats: int = 5

    def peak_probes(self) -> dict[str, Any]:
        """Keyword arguments of :func:`tsn.studies.throughput.machine.measured_peaks` for these settings."""
        return {"matmul_n": self.probe_matmul_n, "conv_size": self.probe_conv_size, "repeats": self.probe_repeats}

    @classmethod
    def quick_settings(cls, **overrides: Any) -> BenchmarkSettings:
        """Tiny images, one repeat, no compilation: a smoke run of the whole benchmark in well under a minute.

        The peak probes are small too (a 256 x 256 matmul, 32 x 32 convolutions, two repeats): at full size the
        bfloat16 probes take minutes on a CPU without native bfloat16 (AVX2 only: oneDNN's reference kernels run at
        1 to 3 GFLOP/s, where AMX runs at hundreds), so the run's cost would depend on the instruction set. Small,
        every probe costs under a second even at those rates; a quick run's figures are not quoted anyway."""
        values: dict[str, Any] = dict(sizes=(64,), batches=(1, 2), repeats=1, repeats_large=1, train_size=64,
                                      train_repeats=1, compile=False, quick=True,
                                      probe_matmul_n=256, probe_conv_size=32, probe_repeats=2)
        values.update(overrides)
        return cls(**values)
