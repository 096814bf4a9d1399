"""Section 4: `GET /v1/jobs/{id}` latency with a small and a large jobs table.

The table is emptied, then filled in steps (e.g. 10k, then up to 1M rows) spread over
several tenants; at each size, random existing ids are read with their tenant's token.
"""

from __future__ import annotations

import time
from typing import Any

from bench import load, seed
from bench.stack import Stack

TENANTS = 8


def reads(stack: Stack, *, sizes: list[int], gets: int, clients: int) -> dict[str, Any]:
    """Latency of single-job reads at each table size."""
    stack.stop_worker()
    tokens = {f"bench-read-{t}": stack.token(f"bench-read-{t}") for t in range(TENANTS)}
    results = []
    with stack.connect() as conn:
        conn.execute("TRUNCATE jobs, attempts, audit_log CASCADE")
        loaded = 0
        for size in sorted(sizes):
            seconds = seed.finished_jobs(
                conn, first=loaded + 1, count=size - loaded, tenants=TENANTS
            )
            loaded = size
            picks = conn.execute(
                "SELECT id, tenant FROM jobs ORDER BY random() LIMIT %s", (gets,)
            ).fetchall()
            result = _read(stack, tokens, picks, clients=clients, rows=size, load_s=seconds)
            results.append(result | _in_sql(conn, picks))
    return {"tenants": TENANTS, "clients": clients, "sizes": results}


def _in_sql(conn, picks) -> dict[str, float]:
    """The same lookups straight in SQL: what the table size costs PostgreSQL itself."""
    timings = []
    for job_id, tenant in picks:
        began = time.perf_counter()
        conn.execute("SELECT * FROM jobs WHERE id = %s AND tenant = %s", (job_id, tenant))
        timings.append(time.perf_counter() - began)
    return {
        "sql_p50_ms": load.percentile(timings, 50) * 1000,
        "sql_p99_ms": load.percentile(timings, 99) * 1000,
    }


def _read(stack: Stack, tokens: dict[str, str], picks, *, clients: int, rows: int, load_s: float):
    by_tenant: dict[str, list[str]] = {}
    for job_id, tenant in picks:
        by_tenant.setdefault(tenant, []).append(f"/v1/jobs/{job_id}")

    def send(client: load.Client, path: str) -> str | None:
        status, answer = client.call("GET", path)
        return load.expect(status, 200, answer)

    warm_tenant, warm_paths = min(by_tenant.items())
    load.run(stack.api_port, tokens[warm_tenant], warm_paths[:50], send, clients=clients)
    # Every tenant reads its own jobs; the tenants take turns so that all run alike.
    runs = [
        load.run(stack.api_port, tokens[tenant], paths, send, clients=clients)
        for tenant, paths in sorted(by_tenant.items())
    ]
    merged = load.Run(
        latencies=[x for r in runs for x in r.latencies],
        seconds=sum(r.seconds for r in runs),
        errors=[e for r in runs for e in r.errors],
    )
    summary = merged.summary(len(merged.latencies))
    return {
        "rows": rows,
        "load_seconds": load_s,
        "gets": summary["requests"],
        "per_s": summary["per_s"],
        "p50_ms": summary["p50_ms"],
        "p90_ms": load.percentile(merged.latencies, 90) * 1000,
        "p99_ms": summary["p99_ms"],
        "errors": summary["errors"],
        "first_errors": merged.errors[:3],
    }
