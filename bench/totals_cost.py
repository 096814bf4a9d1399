"""What counting attempts in attempt_totals adds to the worker's finish, measured alone.

`python -m bench.totals_cost [--batches 400] [--batch-size 16]` makes its own database
(`courier_bench_totals`, dropped at the end), claims batches of jobs and finishes each batch
in one transaction, as the group commit does, alternating batch by batch between the finish
statement with the count (as shipped) and the same statement without it (as before it), so
that both see the same machine. Prints the median and mean milliseconds per finishing
transaction of each, commit included, as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from bench import timings
from store import job_changes, migrate, submissions, transitions
from store.db import make_engine
from store.sql import Chain
from store.states import Status
from store.submissions import NewJob
from store.transitions import Claim, Outcome

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "courier_bench_totals"
SUCCEEDED = Outcome(job_status=Status.SUCCEEDED, result={})
RETRY = Outcome(job_status=Status.RETRYING, error_type="UpstreamUnavailable", retry_in_ms=60_000)

# The finish without the count: the statements before attempt_totals existed (announcing
# its jobs as the finish does, so that the two differ by the count alone).
_UNCOUNTED = Chain(
    transitions._FINISH,
    transitions._close_finished,
    carry=("id", "attempts", "status", "type"),
    notify=job_changes.announcing,
)


def _finish_uncounted(db: Connection, finishes: list[tuple[Claim, Outcome]]) -> None:
    rows = [
        (c.job_id, c.number, o.job_status, o.error_type, o.error, o.retry_in_ms, o.result)
        for c, o in finishes
    ]
    _UNCOUNTED.run(db, {"finishing": rows})


def _submitted(engine: Engine, count: int, job_type: str) -> list[Any]:
    """Queued jobs as the API submits them."""
    new = NewJob(tenant="bench", type=job_type, queue="sync", max_attempts=4, timeout_s=60)
    with Session(engine) as session, session.begin():
        return [job.id for job in submissions.create_jobs(session, [new] * count)]  # type: ignore[union-attr]


def _timed_batches(engine: Engine, batches: int, size: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"with count": [], "without count": []}
    for n in range(batches):
        ids = _submitted(engine, size, ("customer_sync", "invoice_sync")[n % 2])
        with engine.begin() as db:
            claims = list(transitions.claim(db, ids, worker="bench:1", lease_s=60).values())
        # A mix of outcomes, as a real batch has: most succeed, some retry.
        finishes = [(c, RETRY if i % 5 == 0 else SUCCEEDED) for i, c in enumerate(claims)]
        counted = n % 2 == 0
        began = time.perf_counter()
        with engine.begin() as db:
            if counted:
                transitions.finish(db, finishes)
            else:
                _finish_uncounted(db, finishes)
        elapsed_ms = (time.perf_counter() - began) * 1000
        times["with count" if counted else "without count"].append(elapsed_ms)
    return times


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures."""
    p = argparse.ArgumentParser(prog="python -m bench.totals_cost", description=__doc__)
    p.add_argument("--batches", type=int, default=400, help="finishing transactions (400)")
    p.add_argument("--batch-size", type=int, default=16, help="finishes per transaction (16)")
    args = p.parse_args(argv)
    name = sql.Identifier(DATABASE)
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}")
    try:
        migrate.upgrade(engine)
        _timed_batches(engine, 20, args.batch_size)  # warm-up: plans, caches, connections
        times = _timed_batches(engine, args.batches, args.batch_size)
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
    return timings.report({"batch_size": args.batch_size}, times)


if __name__ == "__main__":
    sys.exit(main())
