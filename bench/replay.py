"""Section 5: bulk replay of dead jobs through `POST /v1/dead-letters/replay`.

Dead jobs (with their four failed attempts) are loaded straight into PostgreSQL, then an
operator replays them `limit` at a time until none are left. No worker runs meanwhile, so
the replays wait in the queue and the figure is the replay alone.
"""

from __future__ import annotations

import time
from typing import Any

from bench import load, seed
from bench.stack import Stack, dumps

TENANT = "bench-replay"


def replay(stack: Stack, *, dead: int, limit: int) -> dict[str, Any]:
    """Seconds to replay `dead` dead jobs, `limit` per request."""
    stack.stop_worker()
    with stack.connect() as conn:
        load_s = seed.dead_jobs(conn, count=dead, tenant=TENANT)
        table_rows = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    client = load.Client(stack.api_port, stack.token("bench-ops", role="operator"))
    body = dumps({"tenant": TENANT, "limit": limit, "reason": "benchmark"})
    calls, replayed, skipped = [], 0, 0
    began = time.perf_counter()
    while True:
        started = time.perf_counter()
        status, answer = client.call("POST", "/v1/dead-letters/replay", body)
        calls.append(time.perf_counter() - started)
        if status != 202:
            raise RuntimeError(f"replay answered {load.expect(status, 202, answer)}")
        replayed += answer["count"]
        skipped += len(answer["skipped"])
        if answer["count"] == 0:
            break
    seconds = time.perf_counter() - began
    client.close()
    with stack.connect() as conn:
        linked = conn.execute(
            "SELECT count(*) FROM jobs WHERE tenant = %s AND replay_of IS NOT NULL", (TENANT,)
        ).fetchone()[0]
    return {
        "dead": dead,
        "limit": limit,
        "seconds": seconds,
        "replayed": replayed,
        "skipped": skipped,
        "new_jobs": linked,
        "calls": len(calls),
        "call_p50_ms": load.percentile(calls, 50) * 1000,
        "call_max_ms": max(calls) * 1000,
        "table_rows": table_rows,
        "load_seconds": load_s,
    }
