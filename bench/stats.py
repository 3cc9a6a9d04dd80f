"""Distributions: percentiles and summaries of latency samples (all in milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linear interpolation."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac)


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """count, min, median, p95, p99, p99.9, max and mean of a sample, in ms."""
    values = sorted(samples_ms)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": round(values[0], 4),
        "p50": round(percentile(values, 50), 4),
        "p95": round(percentile(values, 95), 4),
        "p99": round(percentile(values, 99), 4),
        "p999": round(percentile(values, 99.9), 4),
        "max": round(values[-1], 4),
        "mean": round(sum(values) / len(values), 4),
    }


def latencies_ms(sent_ns: dict[str, int], received_ns: dict[str, int]) -> tuple[list[float], int]:
    """Per-key latency (received - sent) in ms, and how many sent keys never arrived."""
    out: list[float] = []
    missing = 0
    for key, t0 in sent_ns.items():
        t1 = received_ns.get(key)
        if t1 is None:
            missing += 1
        else:
            out.append((t1 - t0) / 1e6)
    return out, missing


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator
