"""What concurrency limits add to the worker's claim, measured alone.

`python -m bench.claim_limits [--batches 400] [--batch-size 16] [--running 50]` makes its own
database (`courier_bench_limits`, dropped at the end) with `--running` jobs left running (the
slots the counts must read past), then claims batches of queued `customer_sync` jobs in one
transaction each, as the group commit does, rotating batch by batch between: no rules; a
limit on another type only (`directory_sync:entity=1`, the default); a tenant limit and an
entity limit on `customer_sync` (each high enough to admit the whole batch, so every job is
counted and claimed). Each batch is finished untimed afterwards. Prints the median, mean and
p90 milliseconds per claiming transaction of each, commit included, as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import count
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bench import scratch_database, timings
from store import migrate, submissions, transitions
from store.admission import Rule
from store.db import make_engine
from store.limits import Limit, limits_rule
from store.states import Status
from store.submissions import NewJob
from store.transitions import Outcome

DATABASE = "courier_bench_limits"
SUCCEEDED = Outcome(job_status=Status.SUCCEEDED, result={})
UPSTREAMS_OF = {t: ("crm", "billing") for t in ("customer_sync", "invoice_sync", "directory_sync")}
VARIANTS: dict[str, list[Rule]] = {
    "no rules": [],
    "limit on another type": [
        limits_rule([Limit("entity", 1, type="directory_sync")], UPSTREAMS_OF)
    ],
    "tenant limit": [limits_rule([Limit("tenant", 10_000, type="customer_sync")], UPSTREAMS_OF)],
    "entity limit": [limits_rule([Limit("entity", 1, type="customer_sync")], UPSTREAMS_OF)],
}
_ENTITIES = count()


def _submitted(engine: Engine, size: int) -> list[Any]:
    """Queued customer_sync jobs of one tenant, each for a new entity."""
    new = [
        NewJob(
            tenant="bench",
            type="customer_sync",
            queue="sync",
            entity_id=f"c_{next(_ENTITIES)}",
            max_attempts=4,
            timeout_s=60,
        )
        for _ in range(size)
    ]
    with Session(engine) as session, session.begin():
        return [job.id for job in submissions.create_jobs(session, new)]  # type: ignore[union-attr]


def _timed_batches(engine: Engine, batches: int, size: int) -> dict[str, list[float]]:
    names = list(VARIANTS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n in range(batches):
        name = names[n % len(names)]
        ids = _submitted(engine, size)
        began = time.perf_counter()
        with engine.begin() as db:
            claims = transitions.claim(
                db,
                ids,
                worker="bench:1",
                lease_s=60,
                rules=VARIANTS[name],
                types={"customer_sync"},
            )
        times[name].append((time.perf_counter() - began) * 1000)
        assert len(claims) == size, f"{name}: claimed {len(claims)} of {size}"
        with engine.begin() as db:
            transitions.finish(db, [(c, SUCCEEDED) for c in claims.values()])
    return times


def main(argv: list[str] | None = None) -> int:
    """Measure and print the figures."""
    p = argparse.ArgumentParser(prog="python -m bench.claim_limits", description=__doc__)
    p.add_argument("--batches", type=int, default=400, help="claiming transactions (400)")
    p.add_argument("--batch-size", type=int, default=16, help="claims per transaction (16)")
    p.add_argument("--running", type=int, default=50, help="jobs left running (50)")
    args = p.parse_args(argv)
    scratch_database.recreate(DATABASE)
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}")
    try:
        migrate.upgrade(engine)
        with engine.begin() as db:
            ids = _submitted(engine, args.running)
            transitions.claim(db, ids, worker="bench:0", lease_s=3600)
        _timed_batches(engine, 40, args.batch_size)  # warm-up: plans, caches, connections
        times = _timed_batches(engine, args.batches, args.batch_size)
    finally:
        engine.dispose()
        scratch_database.drop(DATABASE)
    return timings.report({"batch_size": args.batch_size, "running": args.running}, times)


if __name__ == "__main__":
    sys.exit(main())
