"""The queries that run all the time use partial indexes: their cost does not grow with history."""

from __future__ import annotations

import psycopg
import pytest

from bench import plans, seed

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
    "reaper: expired leases",
    "stats: dead letters",
    # The reads of the dashboard's overview and workers pages.
    "dashboard: finished per minute",
    "dashboard: dead letters by error type",
    "dashboard: oldest ready job",
    "dashboard: running attempts",
)


def test_relay_reaper_and_dead_letter_queries_scan_no_history(database_url, engine):
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        seed.finished_jobs(conn, first=1, count=FINISHED_JOBS, tenants=8)
        seed.dead_jobs(conn, count=1000, tenant="dead")
    explained = plans.plans(engine)
    for name in BOUNDED:
        assert explained[name], f"{name} sent no statement"
        for plan in explained[name]:
            assert "Seq Scan on jobs" not in plan, f"{name}:\n{plan}"
            assert "Index" in plan, f"{name}:\n{plan}"
