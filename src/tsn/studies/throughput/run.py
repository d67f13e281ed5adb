"""The driver: every configuration in a fresh process, the ratios against both baselines, accuracy against the
authors' way, the goals, the JSON record and the text report."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tsn.studies.throughput.flops import count_gflop, flop_split
from tsn.studies.throughput.machine import cap_peaks, device_tag, machine_info, measured_peaks, theoretical_for
from tsn.studies.throughput.settings import GOALS, INFERENCE_CONFIGS, SCHEMA, TRAINING_CONFIGS, BenchmarkSettings
from tsn.studies.throughput.workers import Job, build_benchmark_model, run_job
from tsn.utils.io import atomic_write_json
from tsn.utils.processes import multiprocessing_pool


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
            ["torch", "timm", "tsn.studies.throughput", "tsn.models", "tsn.inference.speed", "tsn.training"]
        )
        return multiprocessing_pool(1, context=forkserver, maxtasksperchild=1)
    return multiprocessing_pool(1, context=multiprocessing.get_context("spawn"), maxtasksperchild=1)


def _inference_jobs(settings: BenchmarkSettings, tmp: Path, onnx_path: str | None,
                    channels: dict[str, int]) -> Iterable[Job]:
    for size in settings.sizes:
        for batch in settings.batches:
            first = batch == settings.batches[0]
            # onnxruntime runs one task per call, so its cost per image does not depend on the batch: measured at
            # the first batch size only, which keeps the whole CPU benchmark under ten minutes.
            configs = [c for c in INFERENCE_CONFIGS if c != "onnxruntime" or (onnx_path and first)]
            for config in configs:
                # The tuned baseline runs the authors' very operations: its outputs and profile add nothing.
                extras = first and config != "authors_tuned"
                yield Job(
                    "inference", config, size, batch, settings, onnx_path=onnx_path,
                    save_outputs=str(tmp / f"{config}-{size}.pt") if extras else None,
                    profile=extras and size == max(settings.sizes), channels=channels,
                )


def run_benchmark(settings: BenchmarkSettings, output: str | os.PathLike[str] | None = None,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure all that :mod:`tsn.studies.throughput` describes, print the table, write the JSON; return the
    results."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    model = build_benchmark_model(settings)  # the workers' weights
    specs, names = model.task_specs, list(model.tasks)
    info = machine_info(settings.device)
    log(f"tsn benchmark on {info['cpu']} ({info['cores']} cores, {info['threads']} threads, torch {info['torch']})"
        + (f", {info['gpu']}" if info["gpu"] else "") + f"; load average {info.get('load_average_at_start')}")
    peaks = measured_peaks(settings.device, **settings.peak_probes())
    theoretical = theoretical_for(settings.device, info["threads"])
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
            job = Job("training", config, settings.train_size, settings.train_batch, settings)
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


def _measure_inference(pool: Any, job: Job, log: Callable) -> dict[str, Any]:
    result = pool.apply(run_job, (job,))
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


def _measure_training(pool: Any, job: Job, log: Callable) -> dict[str, Any]:
    result = pool.apply(run_job, (job,))
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
