"""`python -m bench.schedules`: does the scheduler's tick cost follow the due schedules only?

Fills a database of its own (`--database`, recreated and migrated) with `--totals` (1,000,
10,000 and 100,000) hourly schedules, bulk-loaded in SQL and analyzed, all due tomorrow. For
each total and each of `--due` (0, 10, 100) it points that many of them at the last full
hour (due now, a job each) and times one tick as a worker runs it (one transaction: lock
the due schedules, plan, insert run rows and jobs, advance, commit), `--runs` (9) times;
the figure is the median in milliseconds, with the client's CPU and the statements sent. It
also prints PostgreSQL's plan of the tick's query of due schedules at the largest total, and
how long one `SELECT 1` round trip takes meanwhile (the machine's floor). Prints one JSON
object and a Markdown table; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql

from bench import scratch_database
from store import migrate, occurrences
from store.db import make_engine, make_sessionmaker

QUEUES = {"bench_noop": "sync"}

_SEED = """
INSERT INTO schedules (id, tenant, name, type, entity_id, payload, priority, max_attempts,
                       cron, interval_s, timezone, jitter_s, overlap, missed, paused,
                       next_occurrence, next_fire_at, skipped_runs, created_at, updated_at)
SELECT gen_random_uuid(), 'bench', 's' || g, 'bench_noop', NULL, '{}'::jsonb, 0, 3,
       NULL, 3600, 'UTC', 0, 'allow', 'once', false,
       date_trunc('hour', now()) + interval '1 day', date_trunc('hour', now()) + interval '1 day',
       0, now(), now()
FROM generate_series(1, %(count)s) AS g
"""

# The first `due` schedules become due now: their occurrence is the last full hour.
_MAKE_DUE = """
UPDATE schedules SET next_occurrence = date_trunc('hour', now()),
                     next_fire_at = date_trunc('hour', now())
WHERE id IN (SELECT id FROM schedules ORDER BY id LIMIT %(due)s)
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__)
    p.add_argument("--database", default="courier_bench_schedules")
    p.add_argument("--totals", default="1000,10000,100000")
    p.add_argument("--due", default="0,10,100")
    p.add_argument("--runs", type=int, default=9)
    return p.parse_args(argv)


def due_query_plan(engine: Engine) -> str:
    """PostgreSQL's plan of the tick's query of due schedules (a batch of 100)."""
    statement = occurrences.due_schedules(100).compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    with engine.connect() as db:
        return "\n".join(row[0] for row in db.exec_driver_sql(f"EXPLAIN {statement}"))


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print it."""
    args = parse(argv)
    totals = [int(t) for t in args.totals.split(",")]
    dues = [int(d) for d in args.due.split(",")]
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.database}"
    scratch_database.recreate(args.database)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        results: dict[str, Any] = {"runs": args.runs, "ticks_ms": {}}
        for total in totals:
            seed(url, total)
            results["ticks_ms"][str(total)] = {
                str(due): _time_ticks(engine, url, due, args.runs) for due in dues
            }
        results["plan"] = due_query_plan(engine)
        results["select_1_ms"] = _round_trip_ms(engine)
    finally:
        engine.dispose()
        scratch_database.drop(args.database)
    print(json.dumps(results, indent=2))
    print(_table(results, dues))
    return 0


def seed(url: str, total: int) -> None:
    """Replace every schedule (and job) with `total` hourly ones due tomorrow, analyzed."""
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as c:
        c.execute("TRUNCATE schedule_runs, attempts, jobs, schedules CASCADE")
        c.execute(_SEED, {"count": total})
        c.execute("ANALYZE schedules")


def _time_ticks(engine: Engine, url: str, due: int, runs: int) -> dict[str, Any]:
    sessions = make_sessionmaker(engine)
    took: list[float] = []
    cpu: list[float] = []
    statements: list[int] = []

    def count(*_: Any) -> None:
        statements[-1] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(runs):
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as c:
                c.execute("TRUNCATE schedule_runs, attempts, jobs CASCADE")
                c.execute(_MAKE_DUE, {"due": due})
            statements.append(0)
            began, began_cpu = time.perf_counter(), time.process_time()
            with sessions.begin() as session:
                fired, _ = occurrences.fire_due(session, queues=QUEUES, timeout_s=60, limit=100)
            took.append((time.perf_counter() - began) * 1000)
            cpu.append((time.process_time() - began_cpu) * 1000)
            assert len(fired) == due, (len(fired), due)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return {
        "median": round(statistics.median(took), 2),
        "each": [round(t, 2) for t in took],
        "client_cpu_ms": round(statistics.median(cpu), 2),
        "statements": statements[-1],
    }


def _round_trip_ms(engine: Engine, count: int = 200) -> float:
    """The machine's floor: one `SELECT 1` round trip through the same engine, in ms."""
    with engine.connect() as db:
        began = time.perf_counter()
        for _ in range(count):
            db.exec_driver_sql("SELECT 1").scalar()
        return round((time.perf_counter() - began) * 1000 / count, 3)


def _table(results: dict[str, Any], dues: list[int]) -> str:
    lines = [
        "| schedules | " + " | ".join(f"{d} due" for d in dues) + " |",
        "|---|" + "---|" * len(dues),
    ]
    for total, by_due in results["ticks_ms"].items():
        cells = " | ".join(
            f"{by_due[str(d)]['median']} ms ({by_due[str(d)]['client_cpu_ms']} ms CPU, "
            f"{by_due[str(d)]['statements']} statements)"
            for d in dues
        )
        lines.append(f"| {int(total):,} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
