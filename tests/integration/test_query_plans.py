"""The queries that run all the time (relay, reaper, every scrape's metrics) use partial indexes:
their cost does not grow with history."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from bench import plans, seed
from store import transitions
from store.types import utcnow
from tests.support.records import insert_jobs

pytestmark = pytest.mark.integration

#: Large enough that PostgreSQL prefers a sequential scan wherever no index fits (the plans
#: are the same at 1M rows: `python -m bench.scrapes` prints them), small enough to load in
#: a few seconds.
FINISHED_JOBS = 200_000

#: The statements bounded by the work in flight; stats' counts are shared instead (one
#: computation per API process per interval, test_cheap_endpoints.py).
BOUNDED = (
    "relay: due jobs",
    "relay: dead letters to copy",
    "fairness: a tenant's messages in the broker",
    "quotas: a tenant's active jobs",
    "reaper: expired leases",
    "webhooks: ended jobs owed one",
    "webhooks: due deliveries",
    "stats: dead letters",
    "purge: waiting jobs of a queue",
    "metrics: oldest ready job",
    "metrics: oldest dead letter",
    "metrics: longest-running attempts",
    # The reads of the dashboard's overview and workers pages.
    "dashboard: finished per minute",
    "dashboard: dead letters by error type",
    "dashboard: running attempts",
)


def test_background_purge_webhook_and_metrics_queries_scan_no_history(database_url, engine):
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        seed.finished_jobs(conn, first=1, count=FINISHED_JOBS, tenants=8)
        seed.one_attempt_each(conn)
        seed.dead_jobs(conn, count=1000, tenant="dead")
    # Work in flight beside the history: a backlog (some of it held back in the outbox),
    # and attempts running.
    insert_jobs(engine, 50)
    insert_jobs(engine, 30, at=utcnow() - timedelta(seconds=10), published_at=None)
    with engine.begin() as db:
        transitions.claim(db, insert_jobs(engine, 20), worker="test:1", lease_s=30)
    explained = plans.plans(engine)
    for name in BOUNDED:
        assert explained[name], f"{name} sent no statement"
        for plan in explained[name]:
            assert "Seq Scan on jobs" not in plan, f"{name}:\n{plan}"
            assert "Seq Scan on attempts" not in plan, f"{name}:\n{plan}"
            assert "Index" in plan, f"{name}:\n{plan}"


def test_the_attempt_counts_are_read_from_their_totals_not_from_the_attempts(database_url, engine):
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        seed.finished_jobs(conn, first=1, count=20_000, tenants=1)
        seed.one_attempt_each(conn)
    (plan,) = plans.plans(engine)["metrics: attempts by decision"]
    assert "attempt_totals" in plan
    assert "on attempts " not in plan and "on jobs" not in plan, plan
