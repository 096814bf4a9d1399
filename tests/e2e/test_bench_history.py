"""`python -m bench --history N` runs sections 1-3 on empty tables and again on N finished
jobs, and reports both figures, their ratio and the worker ticks at both sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report, ticks
from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e

HISTORY = 2000


def test_history_run_reports_both_sizes_and_ratios(
    tmp_path: Path, postgres_template: None, rabbitmq_available: None
) -> None:
    done, result, _ = run_bench(
        tmp_path,
        *("--quick", "--history", str(HISTORY), "--only", "1,2,3", "--tick-calls", "20"),
        label="history",
        timeout=300,
    )
    history = result["history"]
    assert history["rows"] == HISTORY
    assert set(history["sections"]) == set(result["sections"]) == {"single", "batch", "drain"}
    # The second round counts its own jobs, not the history its tenants hold.
    for name in ("single", "batch"):
        second = history["sections"][name]
        assert second["succeeded"] == second["jobs"], second["statuses"]
        assert sum(second["statuses"].values()) == second["jobs"]
    assert history["sections"]["drain"]["courier"]["all_finished"]
    comparison = history["comparison"]
    for key in ("single.completed_per_s", "batch.completed_per_s", "drain.courier_per_s"):
        c = comparison[key]
        assert c["empty"] == result["figures"][key]
        assert c["history"] == history["figures"][key]
        assert c["ratio"] == pytest.approx(c["history"] / c["empty"])
    assert history["verdict"] in ("met", "missed")
    # The ticks at both sizes, and their plans at the larger one without a Seq Scan on jobs.
    assert set(history["ticks"]["ticks"]) == set(ticks.TICKS)
    for name, tick in history["ticks"]["ticks"].items():
        assert tick["empty_median_ms"] > 0 and tick["history_median_ms"] > 0, name
        assert tick["seq_scan"] == [], (name, history["plans"][name])
    assert f"{HISTORY:,} history" in done.stdout
    assert "history/empty" in done.stdout
    assert "POST /v1/jobs: completed/s" in done.stdout
    assert "reaper: expired leases" in done.stdout


def test_history_verdicts_follow_the_figure_direction() -> None:
    empty = {"single.completed_per_s": 1000.0, "single.done_p99_ms": 100.0}
    full = {"single.completed_per_s": 700.0, "single.done_p99_ms": 110.0}
    comparison = report.history_comparison(empty, full)
    assert comparison["single.completed_per_s"]["within"] is False  # 30 % slower
    assert comparison["single.done_p99_ms"]["within"] is True  # 10 % longer
    table = report.history_table(comparison, report.labels({}), 1_000_000)
    assert "1,000,000 history" in table and "missed by 10.0 points" in table


def test_ticks_verdict_sees_growth_and_seq_scans() -> None:
    empty = {n: {"median_ms": 1.0, "p90_ms": 1.5} for n in ticks.TICKS}
    full = {n: {"median_ms": 1.1, "p90_ms": 1.6} for n in ticks.TICKS}
    assert ticks.compare(empty, full, {})["verdict"] == "met"
    full["relay: due jobs"] = {"median_ms": 3.0, "p90_ms": 4.0}
    assert ticks.compare(empty, full, {})["verdict"] == "missed"
    plans = {"reaper: expired leases": ["Seq Scan on jobs  (cost=0.00..1.00 rows=1 width=8)"]}
    scans = ticks.seq_scans(plans)
    assert scans == {
        "reaper: expired leases": ["Seq Scan on jobs  (cost=0.00..1.00 rows=1 width=8)"]
    }
    same = {n: {"median_ms": 1.0, "p90_ms": 1.5} for n in ticks.TICKS}
    assert ticks.compare(empty, same, scans)["verdict"] == "missed"
