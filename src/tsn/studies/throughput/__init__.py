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


from tsn.studies.throughput.flops import count_gflop, flop_split
from tsn.studies.throughput.machine import (
    cap_peaks,
    conv_peak_gflops,
    cpu_features,
    device_tag,
    machine_info,
    matmul_peak_gflops,
    measured_peaks,
    theoretical_peak,
)
from tsn.studies.throughput.run import default_output, format_report, run_benchmark
from tsn.studies.throughput.settings import GOALS, INFERENCE_CONFIGS, TRAINING_CONFIGS, BenchmarkSettings

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
    "flop_split",
    "GOALS",
    "format_report",
    "default_output",
]
