"""Bulk-loading job rows straight into PostgreSQL (`INSERT ... SELECT generate_series`).

The rows have every column of store/models.py's `jobs` (and `attempts`) filled as Courier
would fill them, with time-ordered UUIDv7 ids built in SQL from each row's created_at.
"""

from __future__ import annotations

import time

import psycopg

# A UUIDv7 from the row's created_at (48 bits of milliseconds), version 7, variant 10.
_UUID7 = """(
    lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
    || substr(h, 1, 3) || substr('89ab', 1 + (g %% 4)::int, 1) || substr(h, 4, 15)
)::uuid"""

_ROWS = f"""
    SELECT g, at, {_UUID7} AS id
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g,
         LATERAL (SELECT now() - interval '30 days'
                         + (g * interval '1 millisecond' * %(spacing_ms)s::int) AS at,
                         md5(g::text || random()::text) AS h) AS r
"""

_FINISHED_JOBS = f"""
INSERT INTO jobs (id, tenant, type, queue, entity_id, payload, status, priority, attempts,
                  max_attempts, timeout_s, result, error_type, error, correlation_id,
                  created_at, started_at, finished_at, published_at)
SELECT id, %(prefix)s || (g %% %(tenants)s::int), 'customer_sync', 'sync', 'c_' || g, '{{}}'::jsonb,
       CASE WHEN g %% 20 = 0 THEN 'failed' ELSE 'succeeded' END, 0, 1, 4, 600,
       CASE WHEN g %% 20 = 0 THEN NULL ELSE '{{"billing_status": 200}}'::jsonb END,
       CASE WHEN g %% 20 = 0 THEN 'UpstreamNotFound' END,
       CASE WHEN g %% 20 = 0 THEN '404 from CRM GET /customers/c_' || g END,
       id::text, at, at + interval '3 ms', at + interval '45 ms', at + interval '1 ms'
FROM ({_ROWS}) AS rows
"""

_DEAD_JOBS = f"""
INSERT INTO jobs (id, tenant, type, queue, entity_id, payload, status, priority, attempts,
                  max_attempts, timeout_s, error_type, error, correlation_id, created_at,
                  started_at, finished_at, published_at, dead_lettered_at)
SELECT id, %(prefix)s, 'customer_sync', 'sync', 'dead_' || g, '{{}}'::jsonb, 'dead', 0, 4, 4,
       600, 'UpstreamUnavailable', '503 from Billing PUT /customers/dead_' || g, id::text, at,
       at + interval '3 ms', at + interval '10 minutes', at + interval '1 ms',
       at + interval '10 minutes'
FROM ({_ROWS}) AS rows
"""

_DEAD_ATTEMPTS = """
INSERT INTO attempts (job_id, number, status, decision, error_type, error, retry_in_ms,
                      started_at, finished_at, duration_ms, worker)
SELECT j.id, n, 'failed', CASE WHEN n = 4 THEN 'dead' ELSE 'retry' END, j.error_type, j.error,
       CASE WHEN n = 4 THEN NULL ELSE 30000 * n END,
       j.started_at + (n - 1) * interval '3 minutes',
       j.started_at + (n - 1) * interval '3 minutes' + interval '40 ms', 40, 'bench:1'
FROM jobs AS j CROSS JOIN generate_series(1, 4) AS n
WHERE j.tenant = %(prefix)s AND j.status = 'dead'
"""

CHUNK = 100_000


def finished_jobs(
    conn: psycopg.Connection,
    *,
    first: int,
    count: int,
    tenants: int,
    prefix: str = "bench-read-",
    spacing_ms: int = 2,
) -> float:
    """Insert `count` finished customer syncs numbered from `first`, of tenants `prefix0` to
    `prefix<tenants - 1>`, row g created `g * spacing_ms` after 30 days ago; returns seconds
    taken."""
    began = time.perf_counter()
    for start in range(first, first + count, CHUNK):
        last = min(start + CHUNK, first + count) - 1
        params = {"first": start, "last": last, "prefix": prefix, "tenants": tenants}
        conn.execute(_FINISHED_JOBS, {**params, "spacing_ms": spacing_ms})
    conn.execute("VACUUM ANALYZE jobs")
    # Write the load's dirty pages out now, not while the reads are being timed.
    conn.execute("CHECKPOINT")
    return time.perf_counter() - began


def dead_jobs(conn: psycopg.Connection, *, count: int, tenant: str) -> float:
    """Insert `count` dead jobs of `tenant`, four failed attempts each; returns seconds taken."""
    began = time.perf_counter()
    params = {"first": 1, "last": count, "prefix": tenant, "spacing_ms": 50}
    conn.execute(_DEAD_JOBS, params)
    conn.execute(_DEAD_ATTEMPTS, params)
    conn.execute("VACUUM ANALYZE jobs")
    conn.execute("VACUUM ANALYZE attempts")
    return time.perf_counter() - began


_ONE_ATTEMPT_EACH = """
INSERT INTO attempts (job_id, number, status, decision, started_at, finished_at, duration_ms,
                      worker)
SELECT id, 1, CASE WHEN status = 'failed' THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN status = 'failed' THEN 'skip' END, started_at, finished_at,
       (abs(hashtext(id::text)) % 200) + 5, 'bench:1'
FROM jobs
WHERE status IN ('succeeded', 'failed')
  AND NOT EXISTS (SELECT 1 FROM attempts AS a WHERE a.job_id = jobs.id)
"""


def one_attempt_each(conn: psycopg.Connection) -> None:
    """Give every finished (succeeded or failed) job without attempts its one attempt."""
    conn.execute(_ONE_ATTEMPT_EACH)
    conn.execute("VACUUM ANALYZE attempts")
