"""The figures a micro-benchmark prints for a list of timings."""

from __future__ import annotations

import json
import statistics
from typing import Any


def summary(ms: list[float]) -> dict[str, float]:
    """How many, and the median, mean and p90 of `ms` (milliseconds), rounded to µs."""
    return {
        "transactions": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "p90_ms": round(statistics.quantiles(ms, n=10)[-1], 3),
    }


def report(head: dict[str, Any], times: dict[str, list[float]]) -> int:
    """Print `head` and the summary of each variant's timings as JSON; exit status 0."""
    print(json.dumps({**head, **{name: summary(ms) for name, ms in times.items()}}, indent=2))
    return 0
