"""`python -m bench.ticks`: does a worker tick cost the same with a month of history?

Times the statements each worker tick sends (the relay's due jobs and dead letters to copy,
the reaper's expired leases, the reconciler's counts of a queue's waiting and running jobs,
the scheduler's due schedules: `TICKS`, captured from `bench.plans.QUERIES`), each call in a
transaction that is rolled back, `--calls` (200) times each: first on empty tables, then with
`--history` (1,000,000) finished jobs and one attempt each bulk-loaded (`bench.history`).
Prints the median and p90 of each at both sizes, PostgreSQL's plans at the larger one, and a
verdict: the same cost (within 20 % or 0.5 ms) and no Seq Scan on jobs or attempts. Runs in a
database of its own (`--database`, recreated and migrated, dropped at the end unless --keep).
`python -m bench --history N` runs the same measurement on the stack's database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import psycopg
from sqlalchemy import Engine

from bench import history, plans, report, scratch_database, timings
from store import migrate
from store.db import make_engine

#: The statements of the worker's periodic ticks (middleware/{relay,reaper,reconciler,scheduler}).
TICKS = [
    "relay: due jobs",
    "relay: dead letters to copy",
    "reaper: expired leases",
    "reconciler: settled waiting jobs of a queue",
    "reconciler: running attempts of a queue",
    "scheduler: due schedules",
]
#: The same cost: within this share of the empty-table median, or this many milliseconds.
SAME_SHARE = 0.20
SAME_MS = 0.5
SCANNED = ("Seq Scan on jobs", "Seq Scan on attempts")


def timed(engine: Engine, *, calls: int, warmup: int = 10) -> dict[str, dict[str, float]]:
    """Median, mean and p90 (ms) of `calls` rolled-back transactions of each tick query."""
    out = {}
    for name in TICKS:
        run = plans.QUERIES[name]
        ms = []
        with engine.connect() as db:
            for n in range(warmup + calls):
                began = time.perf_counter()
                with db.begin() as transaction:
                    run(db)
                    transaction.rollback()
                if n >= warmup:
                    ms.append((time.perf_counter() - began) * 1000)
        out[name] = timings.summary(ms)
    return out


def tick_plans(engine: Engine) -> dict[str, list[str]]:
    """PostgreSQL's plan of each statement the ticks send."""
    return plans.plans(engine, TICKS)


def seq_scans(explained: dict[str, list[str]]) -> dict[str, list[str]]:
    """`{tick: [plan lines with a Seq Scan on jobs or attempts]}` of the ticks that have any."""
    found = {}
    for name, statements in explained.items():
        lines = [
            line.strip()
            for plan in statements
            for line in plan.splitlines()
            if any(s in line for s in SCANNED)
        ]
        if lines:
            found[name] = lines
    return found


def compare(empty: dict[str, dict], full: dict[str, dict], scans: dict[str, list]) -> dict:
    """Per tick: both medians, the ratio and whether it costs the same; overall verdict."""
    rows = {}
    for name in TICKS:
        a, b = empty[name]["median_ms"], full[name]["median_ms"]
        same = b <= a * (1 + SAME_SHARE) or b - a <= SAME_MS
        rows[name] = {
            "empty_median_ms": a,
            "history_median_ms": b,
            "empty_p90_ms": empty[name]["p90_ms"],
            "history_p90_ms": full[name]["p90_ms"],
            "ratio": b / a if a else 0.0,
            "same_cost": same,
            "seq_scan": scans.get(name, []),
        }
    ok = all(r["same_cost"] and not r["seq_scan"] for r in rows.values())
    return {"ticks": rows, "verdict": "met" if ok else "missed"}


def table(result: dict, rows: int) -> str:
    """The comparison as aligned text."""
    head = ("tick query", "empty p50/p90 (ms)", f"{rows:,} history p50/p90 (ms)", "ratio", "")
    lines = [head]
    for name, r in result["ticks"].items():
        verdict = "same" if r["same_cost"] else "grows"
        if r["seq_scan"]:
            verdict += ", Seq Scan: " + "; ".join(r["seq_scan"])
        lines.append(
            (
                name,
                f"{r['empty_median_ms']:.2f} / {r['empty_p90_ms']:.2f}",
                f"{r['history_median_ms']:.2f} / {r['history_p90_ms']:.2f}",
                f"{r['ratio']:.2f}",
                verdict,
            )
        )
    text = [report.aligned(lines, right={1, 2, 3})]
    target = f"same within {SAME_SHARE:.0%} or {SAME_MS} ms, no Seq Scan on jobs/attempts"
    text.append(f"verdict ({target}): {result['verdict']}")
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    """Measure at both sizes, print JSON, the plans and the table."""
    p = argparse.ArgumentParser(prog="python -m bench.ticks", description=__doc__)
    p.add_argument("--database", default="courier_bench_ticks")
    p.add_argument("--history", type=int, default=1_000_000, help="finished jobs (1000000)")
    p.add_argument("--calls", type=int, default=200, help="timed calls per query (200)")
    p.add_argument("--keep", action="store_true", help="keep the database")
    args = p.parse_args(argv)
    url = f"postgresql://postgres@127.0.0.1:5432/{args.database}"
    scratch_database.recreate(args.database)
    engine = make_engine(url.replace("postgresql:", "postgresql+psycopg:"))
    try:
        migrate.upgrade(engine)
        empty = timed(engine, calls=args.calls)
        with psycopg.connect(url, autocommit=True) as conn:
            seeded_s = history.load(conn, args.history)
        full = timed(engine, calls=args.calls)
        explained = tick_plans(engine)
    finally:
        engine.dispose()
        if not args.keep:
            scratch_database.drop(args.database)
    result = compare(empty, full, seq_scans(explained))
    out: dict[str, Any] = {"history": args.history, "calls": args.calls, "seed_s": seeded_s}
    out |= {"load_average": os.getloadavg(), **result, "plans": explained}
    print(json.dumps(out, indent=2))
    for name, statements in explained.items():
        for plan in statements:
            print(f"-- {name} ({args.history:,} history)\n{plan}\n")
    print(table(result, args.history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
