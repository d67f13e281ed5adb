"""Statistics over seeds: every table cell and every comparison of ``tsn reproduce`` and ``tsn study``.

A study trains each network once per seed (the seed fixes initialisation, data order, sampling, label subsets and
augmentation; the scenes and the test split are the same for every seed). A cell of a table is then a sample of
``n`` values, one per seed, summarised by :func:`summarize`: mean, sample standard deviation and the two-sided
95 % confidence interval of the mean from Student's t distribution with ``n - 1`` degrees of freedom
(``mean +- t_{0.975, n-1} * sd / sqrt(n)``; the quantile is ``scipy.stats.t.ppf``).

Comparisons are **paired**: network A and network B trained with the same seed share their data order and label
subsets, so :func:`paired_difference` summarises the per-seed differences ``a_i - b_i`` (a paired t interval),
which is narrower than comparing two unpaired means whenever the seeds move both networks the same way. The
average drop of a multi-task network is computed per seed against the single-task networks of the same seed and
then summarised the same way.

An interval that contains zero means that no difference was detected at ``n`` seeds (:func:`verdict`); it does not
mean that there is none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CONFIDENCE", "summarize", "paired_difference", "excludes_zero", "verdict", "interval_text"]

CONFIDENCE = 0.95
"""Two-sided confidence level of every interval."""


def _finite(values: Sequence[float], what: str) -> list[float]:
    numbers = [float(value) for value in values]
    if not numbers:
        raise ValueError(f"{what}: no values to summarise")
    if not all(math.isfinite(value) for value in numbers):
        raise ValueError(f"{what}: non-finite value in {numbers}")
    return numbers


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``n``, ``mean``, ``std`` (sample, ``ddof=1``), ``sem``, ``ci`` ``[low, high]`` (t interval at
    ``confidence``), ``half_width`` and the ``values`` themselves. With one value the spread is unknown:
    ``std``, ``sem``, ``ci`` and ``half_width`` are None."""
    from scipy import stats

    numbers = _finite(values, "summarize")
    n = len(numbers)
    mean = math.fsum(numbers) / n
    summary: dict[str, Any] = {"n": n, "mean": mean, "std": None, "sem": None, "ci": None, "half_width": None,
                               "confidence": confidence, "values": numbers}
    if n < 2:
        return summary
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in numbers) / (n - 1))
    sem = std / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem
    summary.update(std=std, sem=sem, ci=[mean - half, mean + half], half_width=half)
    return summary


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """:func:`summarize` of the per-seed differences ``a_i - b_i`` (the two samples come from the same seeds, in
    the same order), plus ``excludes_zero``."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need the same seeds: {len(a)} values against {len(b)}")
    summary = summarize([float(x) - float(y) for x, y in zip(a, b, strict=True)], confidence)
    return {**summary, "excludes_zero": excludes_zero(summary)}


def excludes_zero(summary: Mapping[str, Any]) -> bool:
    """True when the summary's confidence interval lies entirely above or below zero (never with one value)."""
    ci = summary.get("ci")
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def interval_text(summary: Mapping[str, Any], digits: int = 2, signed: bool = False) -> str:
    """``mean ± half-width`` (``± ?`` with one seed), e.g. ``+3.87 ± 1.20``."""
    sign = "+" if signed else ""
    mean = f"{summary['mean']:{sign}.{digits}f}"
    half = summary.get("half_width")
    return f"{mean} ± {'?' if half is None else f'{half:.{digits}f}'}"


def verdict(summary: Mapping[str, Any], digits: int = 2) -> str:
    """One phrase for a difference: its interval when it excludes zero, else "no difference detected at n
    seeds" (with the interval, so that a reader sees how large a difference could still hide in it)."""
    n = summary["n"]
    ci = summary.get("ci")
    if ci is None:
        return f"{summary['mean']:+.{digits}f} (one seed: no interval)"
    interval = f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"
    if excludes_zero(summary):
        return f"{summary['mean']:+.{digits}f}, 95 % CI {interval} ({n} seeds)"
    return f"no difference detected at {n} seeds ({summary['mean']:+.{digits}f}, 95 % CI {interval})"
