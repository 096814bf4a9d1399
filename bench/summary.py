"""Medians over several runs, as a Markdown table: `python -m bench.summary RESULT.json ...`.

Each row shows the median, every run's figure, the target and whether the median meets it;
then the CPU split of the end-to-end sections (median CPU ms per job by component).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import report


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The median of every figure present in all runs."""
    keys = set.intersection(*(set(r["figures"]) for r in runs))
    return {k: statistics.median(r["figures"][k] for r in runs) for k in keys}


def markdown(runs: list[dict[str, Any]]) -> str:
    """The medians table and the CPU split, in Markdown."""
    middle = medians(runs)
    names = report.labels(runs[0]["sections"])
    head = ["#", "measurement", "median", *(f"run {i + 1}" for i in range(len(runs)))]
    lines = [_row([*head, "target", "verdict"]), _row(["---"] * (len(head) + 2))]
    for key, section, _, fmt in report.FIGURES:
        if key not in middle:
            continue
        target, outcome = report.verdict(key, middle[key])
        each = [fmt.format(r["figures"][key]) for r in runs]
        cells = [section, names[key], f"**{fmt.format(middle[key])}**", *each, target, outcome]
        lines.append(_row(cells))
    return "\n".join(lines) + "\n\n" + cpu_table(runs)


def cpu_table(runs: list[dict[str, Any]]) -> str:
    """Median CPU ms per job by component for sections 1-3 and 7, and how busy the machine was."""
    places = {
        "1 single": lambda s: s["single"]["cpu"],
        "2 batch": lambda s: s["batch"]["cpu"],
        "3 drain (Courier)": lambda s: s["drain"]["courier"]["cpu"],
        "7 drain (Celery)": lambda s: s["peers"]["celery"]["cpu"],
        "7 drain (Procrastinate)": lambda s: s["peers"]["procrastinate"]["cpu"],
    }
    usages = {}
    for name, get in places.items():
        try:
            usages[name] = [get(r["sections"]) for r in runs]
        except KeyError:
            continue
    if not usages:
        return ""
    roles = sorted({role for us in usages.values() for u in us for role in u["cpu_ms_per_job"]})
    header = ["section", *roles, "machine busy %", "others %", "deadlocks (each run)"]
    lines = [_row(header), _row(["---"] * len(header))]
    for name, us in usages.items():
        cells = [name]
        for role in roles:
            values = [u["cpu_ms_per_job"].get(role, 0.0) for u in us]
            cells.append(f"{statistics.median(values):.1f}")
        cells.append(f"{statistics.median(u['machine_busy_pct'] for u in us):.0f}")
        cells.append(f"{statistics.median(u['others_busy_pct'] for u in us):.0f}")
        cells.append(" / ".join(str(u.get("deadlocks", "?")) for u in us))
        lines.append(_row(cells))
    return "CPU ms per job (median):\n\n" + "\n".join(lines) + "\n"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python -m bench.summary RESULT.json [RESULT.json ...]", file=sys.stderr)
        return 2
    runs = [json.loads(Path(p).read_text()) for p in paths]
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
