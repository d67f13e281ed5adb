"""Statistics over seeds (tsn.studies.statistics, tsn.studies.seeds) checked against scipy.stats on known samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tsn.errors import TsnError
from tsn.studies.seeds import (
    check_seeds,
    compare_rows,
    convergence,
    headline_curve,
    seed_folder,
    summarize_rows,
)
from tsn.studies.statistics import excludes_zero, interval_text, paired_difference, summarize, verdict

SAMPLES = [
    [25.02, 26.18, 24.47],
    [1.0, 2.0, 3.0, 4.0, 5.0],
    [-3.61, 16.08, 3.87, 8.07, 16.99],
    [0.5, 0.5000001],
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_summary_matches_scipy(sample: list[float]) -> None:
    summary = summarize(sample)
    n = len(sample)
    assert summary["n"] == n and summary["values"] == sample
    assert summary["mean"] == pytest.approx(np.mean(sample), rel=1e-12)
    assert summary["std"] == pytest.approx(np.std(sample, ddof=1), rel=1e-9)
    assert summary["sem"] == pytest.approx(stats.sem(sample), rel=1e-9)
    low, high = stats.t.interval(0.95, n - 1, loc=np.mean(sample), scale=stats.sem(sample))
    assert summary["ci"] == pytest.approx([low, high], rel=1e-9, abs=1e-12)
    assert summary["half_width"] == pytest.approx((high - low) / 2, rel=1e-9)


def test_known_interval_by_hand() -> None:
    # 1..5: mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.7764451051977987
    summary = summarize([1, 2, 3, 4, 5])
    assert summary["half_width"] == pytest.approx(2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5), rel=1e-12)
    assert summarize([1, 2, 3, 4, 5], confidence=0.9)["half_width"] < summary["half_width"]


def test_one_seed_has_no_interval_and_bad_samples_are_refused() -> None:
    one = summarize([4.2])
    assert one["mean"] == 4.2 and one["std"] is None and one["ci"] is None and one["half_width"] is None
    assert not excludes_zero(one)
    assert interval_text(one) == "4.20 ± ?" and "one seed" in verdict(one)
    with pytest.raises(ValueError, match="no values"):
        summarize([])
    with pytest.raises(ValueError, match="non-finite"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize("a, b", [
    ([29.07, 30.1, 28.4], [35.55, 33.9, 36.2]),
    ([1.0, 2.0, 3.0, 4.0], [1.1, 2.3, 2.9, 4.6]),
    ([10.0, 11.0, 9.5], [10.2, 10.9, 9.9]),
])
def test_paired_difference_matches_scipy_ttest_rel(a: list[float], b: list[float]) -> None:
    result = paired_difference(a, b)
    test = stats.ttest_rel(a, b)
    low, high = test.confidence_interval(0.95)
    assert result["ci"] == pytest.approx([low, high], rel=1e-9)
    assert result["mean"] == pytest.approx(np.mean(np.subtract(a, b)), rel=1e-12)
    # the interval excludes zero exactly when the two-sided paired t test rejects at 5 %
    assert result["excludes_zero"] == (test.pvalue < 0.05)


def test_verdicts_say_what_the_interval_supports() -> None:
    clear = paired_difference([5.0, 5.2, 4.9], [1.0, 1.1, 0.8])
    assert clear["excludes_zero"] and verdict(clear).startswith("+4.07, 95 % CI [")
    unclear = paired_difference([1.0, -1.0, 0.5], [0.0, 0.0, 0.0])
    assert not unclear["excludes_zero"]
    assert verdict(unclear).startswith("no difference detected at 3 seeds (+0.17, 95 % CI [")
    assert interval_text(unclear, signed=True).startswith("+0.17 ± ")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=8), st.floats(-1e3, 1e3))
def test_interval_properties(sample: list[float], shift: float) -> None:
    summary = summarize(sample)
    low, high = summary["ci"]
    assert low <= summary["mean"] <= high
    assert high - summary["mean"] == pytest.approx(summary["mean"] - low, abs=1e-6)
    # shifting every seed shifts the interval and keeps its width
    moved = summarize([value + shift for value in sample])
    assert moved["half_width"] == pytest.approx(summary["half_width"], rel=1e-6, abs=1e-6)
    assert moved["mean"] == pytest.approx(summary["mean"] + shift, rel=1e-9, abs=1e-6)
    # a paired difference with itself is exactly zero with no spread
    assert paired_difference(sample, sample)["mean"] == 0 and not paired_difference(sample, sample)["excludes_zero"]


def test_rows_over_seeds_and_paired_rows() -> None:
    tsn = [{"values": {"semseg": 24.0 + i, "depth": 5.0}, "drops": {"semseg": 2.0 + i, "depth": 0.0},
            "average_drop": 1.0 + i / 2} for i in range(3)]
    multi = [{"values": {"semseg": 25.0 + i, "depth": 5.5}, "drops": {"semseg": 1.0 + i, "depth": -1.0},
              "average_drop": i / 2} for i in range(3)]
    single = [{"values": {"semseg": 26.0, "depth": 5.2}} for _ in range(3)]
    summary = summarize_rows(tsn)
    assert summary["n"] == 3 and summary["values"]["semseg"]["mean"] == 25.0
    assert summary["average_drop"]["ci"] == pytest.approx(summarize([1.0, 1.5, 2.0])["ci"])
    assert "drops" not in summarize_rows(single)
    comparison = compare_rows(tsn, multi, ["semseg", "depth"])
    # semseg: tsn - multi = -1 on every seed: no spread, the interval is the point -1
    assert comparison["values"]["semseg"]["mean"] == -1.0 and comparison["values"]["semseg"]["std"] == 0
    assert comparison["average_drop"]["mean"] == pytest.approx(1.0)
    assert "average_drop" not in compare_rows(tsn, single, ["semseg"])


def test_convergence_criterion(tmp_path) -> None:
    flat = [[(20, 30.0), (40, 35.0), (80, 40.0), (100, 40.1)], [(20, 31.0), (40, 36.0), (80, 42.0), (100, 42.0)],
            [(20, 29.0), (40, 34.0), (80, 38.0), (100, 38.2)]]
    check = convergence(flat)
    assert check is not None and check["from_step"] == 80 and check["to_step"] == 100
    assert check["change"]["mean"] == pytest.approx(0.1) and check["final"]["std"] == pytest.approx(
        np.std([40.1, 42.0, 38.2], ddof=1))
    assert check["flattened"]
    rising = [[(80, 30.0), (100, 35.0)], [(80, 31.0), (100, 35.5)]]
    assert not convergence(rising)["flattened"]
    assert convergence([[(100, 1.0)], [(100, 2.0)]]) is None  # one validation per run: no curve

    history = [{"step": 10, "metrics": {"semseg": {"mIoU": 0.25}}}, {"step": 20, "metrics": {}},
               {"step": 30, "metrics": {"semseg": {"mIoU": 0.3}}}]
    (tmp_path / "history.json").write_text(json.dumps(history))
    assert headline_curve(tmp_path, "semseg") == [(10, pytest.approx(25.0)), (30, pytest.approx(30.0))]
    assert headline_curve(tmp_path / "nowhere", "semseg") == []


def test_seed_options() -> None:
    assert seed_folder(2) == "seed2"
    check_seeds(3, ["epochs=2"])
    with pytest.raises(TsnError, match="--seeds must be"):
        check_seeds(0)
    with pytest.raises(TsnError, match="more than"):
        check_seeds(10_000)
    with pytest.raises(TsnError, match="use --seeds"):
        check_seeds(3, ["seed=4"])
