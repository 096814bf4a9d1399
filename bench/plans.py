"""PostgreSQL's plans for the queries that run all the time, whatever the history.

The statements are the ones Courier sends: each query function is called in a transaction
that is rolled back, its SQL and parameters are captured, and each is explained in turn.
`python -m bench.plans DATABASE_URL` prints them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session

from store import (
    fairness,
    occurrences,
    outbox,
    overview,
    quotas,
    reconciliation,
    stats,
    transitions,
    webhooks,
)

#: What runs on a timer in every worker (relay, reaper), on every scrape (stats, metrics) or
#: on every load of the dashboard's overview and workers pages, and a purge, which must not
#: read the history to find a queue's backlog.
QUERIES: dict[str, Callable[[Connection], Any]] = {
    "relay: due jobs": lambda db: outbox.read_due(db, limit=100),
    "relay: dead letters to copy": lambda db: outbox.read_missing_dead_letters(db, limit=100),
    # What the API counts now and then per tenant: its messages in a queue, its active jobs.
    "fairness: a tenant's messages in the broker": lambda db: fairness.in_broker(
        db, "sync", "t", cap=1000
    ),
    "quotas: a tenant's active jobs": lambda db: quotas.active_jobs(db, "t", up_to=100_000),
    "reaper: expired leases": lambda db: transitions.reap_expired(db, limit=100, stuck_grace_s=60),
    # The reconciler's counts per queue (delivery/reconcile.py) and the scheduler's due
    # schedules (middleware/scheduler.py), each worker's other ticks.
    "reconciler: settled waiting jobs of a queue": lambda db: reconciliation.count_settled(
        db, "sync", settle_s=5
    ),
    "reconciler: running attempts of a queue": lambda db: reconciliation.count_running(
        db, "sync", settle_s=5
    ),
    "scheduler: due schedules": lambda db: (
        Session(bind=db).scalars(occurrences.due_schedules(100)).all()
    ),
    "webhooks: ended jobs owed one": lambda db: webhooks.queue_ended(db, body=dict, limit=200),
    "webhooks: due deliveries": lambda db: webhooks.claim_due(db, limit=8, lease_s=60),
    "stats: dead letters": lambda db: stats.summary_dead_letters(Session(bind=db)),
    "purge: waiting jobs of a queue": lambda db: transitions.cancel_waiting_in_queue(db, "sync"),
    "stats: counts by type and status": lambda db: stats.counts(Session(bind=db)),
    "metrics: oldest ready job": lambda db: stats.queue_oldest_seconds(Session(bind=db), "sync"),
    "metrics: oldest dead letter": lambda db: stats.dead_letter_oldest_seconds(Session(bind=db)),
    "metrics: longest-running attempts": lambda db: stats.running_oldest_seconds(Session(bind=db)),
    "metrics: attempts by decision": lambda db: stats.attempt_totals(Session(bind=db), types=()),
    # Each load of the dashboard's overview and workers pages.
    "dashboard: finished per minute": lambda db: overview.throughput(
        Session(bind=db), at=datetime.now(UTC)
    ),
    "dashboard: dead letters by error type": lambda db: overview.dead_letters_by_error(
        Session(bind=db)
    ),
    "dashboard: running attempts": lambda db: overview.running_attempts(Session(bind=db)),
}


def plans(engine: Engine, names: list[str] | None = None) -> dict[str, list[str]]:
    """`{query: [EXPLAIN output of each statement it sends]}`, of `names` (default: all)."""
    return {name: _explained(engine, QUERIES[name]) for name in names or QUERIES}


def _explained(engine: Engine, run: Callable[[Connection], Any]) -> list[str]:
    sent: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if not statement.startswith("EXPLAIN"):
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as db, db.begin() as transaction:
            run(db)
            explained = [
                "\n".join(row[0] for row in db.exec_driver_sql(f"EXPLAIN {sql}", parameters))
                for sql, parameters in sent
            ]
            transaction.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return explained


def main(argv: list[str]) -> int:
    """Print the plans of the database at argv[0] (an SQLAlchemy URL)."""
    if len(argv) != 1:
        print(
            "usage: python -m bench.plans postgresql+psycopg://USER@HOST/DATABASE", file=sys.stderr
        )
        return 2
    engine = create_engine(argv[0])
    try:
        for name, explained in plans(engine).items():
            for plan in explained:
                print(f"-- {name}\n{plan}\n")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
