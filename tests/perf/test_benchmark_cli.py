"""``tsn benchmark --quick`` end to end, its JSON, and the FLOP counts it relies on."""

from __future__ import annotations

import json

import pytest

from tsn.cli import main
from tsn.studies.throughput import GOALS, INFERENCE_CONFIGS, TRAINING_CONFIGS, count_gflop


def test_flop_count_of_the_paper_model_matches_the_reference() -> None:
    """151.2 GFLOP per forward at 512 x 512 (reference-model.md); all tasks share one encoder pass (18.9)."""
    one = count_gflop("tsn_r18_pascal", 512, 1, "one")
    assert round(one, 1) == 151.2
    assert count_gflop("tsn_r18_pascal", 512, 2, "one") == pytest.approx(2 * one)
    assert count_gflop("tsn_r18_pascal", 512, 1, "all") < 5 * one - 4 * 18.9


@pytest.mark.slow
def test_quick_benchmark_writes_every_figure(tmp_path, capfd) -> None:
    output = tmp_path / "bench.json"
    assert main(["benchmark", "--quick", "--threads", "1", "--tune-allocator", "-o", str(output)]) == 0
    printed = capfd.readouterr()  # file descriptors: the workers' C++ libraries write to fd 2 directly
    assert "x authors" in printed.out and "goal bf16_vs_authors_tuned" in printed.out
    assert "gpuGetDeviceCount" not in printed.err and "profiler_start" not in printed.err
    results = json.loads(output.read_text())
    assert results["schema"] == "tsn-benchmark/2"
    assert {"cpu", "cores", "threads", "torch", "onnxruntime"} <= set(results["machine"])
    assert results["matmul_peak_gflops"]["float32"] > 0 and results["matmul_peak_gflops"]["bfloat16"] > 0
    for dtype, peak in results["peak_gflops"].items():  # the best probe, raised to any faster measured rate
        assert peak["used"] >= peak["measured"] >= results["matmul_peak_gflops"][dtype]
        assert f"% peak ({dtype})" in printed.out
    assert results["theoretical_peak"]["cores"] >= 1 and isinstance(results["peak_notes"], list)
    entries = [e for e in results["inference"] + results["training"] if "gflops" in e]
    assert all(0 < e["peak_fraction"] <= 1 for e in entries)
    inference = {(e["config"], e["batch"]): e for e in results["inference"]}
    assert set(inference) == {(c, b) for c in INFERENCE_CONFIGS for b in (1, 2)} - {("onnxruntime", 2)}
    for entry in inference.values():
        assert entry["size"] == 64 and "error" not in entry
        assert entry["seconds"] > 0 and entry["gflops"] > 0 and entry["peak_memory_mb"] >= 0
        assert entry["speedup_vs_authors"] > 0 and entry["speedup_vs_authors_tuned"] > 0
        assert entry["process_peak_mb"] > 100 and entry["memory_vs_authors"] > 0  # the whole fresh process
    # Each in its own process: as shipped (default allocator and threads) or with the fast path's settings.
    assert "tuned_allocator" in inference[("authors_tuned", 1)]["options"]
    assert "threads=1" in inference[("fastest", 1)]["options"]
    assert "tuned_allocator" not in inference[("authors", 1)]["options"]
    assert inference[("authors", 1)]["gflop"] == pytest.approx(5 * count_gflop("tsn_r18_pascal", 64, 1, "one"), 0.01)
    assert inference[("authors", 1)]["top_ops"][0]["op"].startswith("aten::")
    tasks = results["model"]["tasks"]
    for config in ("all_tasks", "all_tasks_fp32_fast", "onnxruntime"):  # float32: the authors' outputs
        accuracy = inference[(config, 1)]["accuracy_vs_authors"]
        assert set(accuracy) == set(tasks) and max(a["max_abs"] for a in accuracy.values()) <= 1e-4, config
    assert min(a.get("agreement", 1) for a in inference[("fastest", 1)]["accuracy_vs_authors"].values()) >= 0.95
    training = {e["config"]: e for e in results["training"]}
    assert set(training) == set(TRAINING_CONFIGS)
    assert training["naive"]["images_per_s"] == pytest.approx(training["naive"]["task_samples_per_s"], 0.01)
    assert training["all_tasks_fast"]["task_samples_per_s"] > 0 and training["all_tasks_fast"]["speedup_vs_naive"] > 0
    assert training["all_tasks_fast"]["speedup_vs_naive_tuned"] > 0 and training["naive"]["process_peak_mb"] > 0
    assert set(results["goals"]) == set(GOALS) and all(g["measured"] is not None for g in results["goals"].values())
    flops = results["flops"]
    assert flops["shared"] + sum(flops["per_task"].values()) == pytest.approx(flops["all_tasks"], abs=0.01)


def test_bad_options_are_one_line_errors(capsys) -> None:
    assert main(["benchmark", "--device", "tpu"]) == 2
    assert capsys.readouterr().err.strip() == "tsn benchmark: error: unknown device 'tpu'; use cpu or cuda[:N]"
    with pytest.raises(SystemExit):
        main(["benchmark", "--batches", "0"])
