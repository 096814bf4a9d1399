"""A month of history: finished jobs and their attempts, bulk-loaded before timing again.

`load(conn, count)` inserts `count` finished customer syncs (one in 20 failed, the rest
succeeded) spread evenly over the last 30 days across `TENANTS` tenants `bench-hist-0` to
`bench-hist-10`, with one attempt each (bench/seed.py's `finished_jobs` and
`one_attempt_each`, through generate_series in chunks), then VACUUM ANALYZE and CHECKPOINT,
so that what is timed next neither waits for the load's writes nor plans on stale statistics.
The sections' second round submits as `SECTION_TENANTS`, which hold history of their own.
"""

from __future__ import annotations

import time

import psycopg

from bench import seed

PREFIX = "bench-hist-"
TENANTS = 11
#: The tenants sections 1, 2 and 3 submit as on top of the history: three of its tenants.
SECTION_TENANTS = {"single": f"{PREFIX}0", "batch": f"{PREFIX}1", "drain": f"{PREFIX}2"}
MONTH_MS = 30 * 24 * 3600 * 1000


def load(conn: psycopg.Connection, count: int) -> float:
    """Insert `count` finished jobs and their attempts (autocommit `conn`); seconds taken."""
    began = time.perf_counter()
    if count <= 0:
        return 0.0
    # Row g is created g * spacing after 30 days ago: the last one just before now.
    spacing = max(MONTH_MS // count, 1)
    seed.finished_jobs(
        conn, first=1, count=count, tenants=TENANTS, prefix=PREFIX, spacing_ms=spacing
    )
    seed.one_attempt_each(conn)
    conn.execute("CHECKPOINT")
    return time.perf_counter() - began
