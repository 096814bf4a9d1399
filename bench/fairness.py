"""`python -m bench.fairness`: does one tenant's backlog hold up another tenant's new jobs?

Tenant A has a backlog of `--backlog` (100,000) queued jobs in the outbox, as submissions
beyond its share of the queue leave them; `courier worker` drains it. While it does, tenant
B submits `--probe` (10) jobs of the same priority through the API, `--probes` (3) times a
few seconds apart; each of B's jobs waits from its acceptance to its start (both by the
database's clock). The target: B's jobs start within 2 s, long before A's backlog drains.

Then, with the backlog still there, the cost of the statements fairness and quotas add:
counting a tenant's messages in the broker up to the share (what an API process does per
tenant at most ten times a second), counting its active jobs up to the quota (near the quota,
per submission), and one relay round's read (one tenant's backlog, then 100 tenants').
Prints one JSON object; the database and vhost are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import load, noop_job
from bench.stack import Shape, Stack
from store import fairness, outbox, quotas
from store.db import make_engine

_SEED = """
INSERT INTO jobs (id, tenant, type, queue, entity_id, payload, status, priority, attempts,
                  max_attempts, timeout_s, correlation_id, created_at)
SELECT gen_random_uuid(), %(tenant)s::text, %(type)s::text, 'sync', %(tenant)s::text || '-' || g,
       '{}'::jsonb,
       'queued', 0, 0, 4, 600, 'fair-' || g, now() - interval '10 seconds'
FROM generate_series(1, %(jobs)s) AS g
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    p.add_argument("--backlog", type=int, default=100_000)
    p.add_argument("--probe", type=int, default=10, help="tenant B's jobs per probe")
    p.add_argument("--probes", type=int, default=3)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--database", default="courier_bench_fairness")
    p.add_argument("--vhost", default="courier-bench-fairness")
    p.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "courier-fairness")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    shape = Shape(processes=args.processes, threads=args.threads)
    stack = Stack(args.database, args.vhost, shape, logs=args.logs)
    result: dict[str, Any] = {"backlog": args.backlog, "probe": args.probe}
    try:
        stack.start()
        with stack.connect() as c:
            c.execute(_SEED, {"tenant": "a", "type": noop_job.NAME, "jobs": args.backlog})
            c.execute("ANALYZE jobs")
        client = load.Client(stack.api_port, stack.token("b"))
        stack.start_worker()
        _wait(lambda: _count(stack, "a", "succeeded") >= 2000, "the backlog under way")
        result["probes"] = [_probe(stack, client, args.probe, i) for i in range(args.probes)]
        waits = [w for p in result["probes"] for w in p["waits_s"]]
        result["b_wait_s"] = {"p50": statistics.median(waits), "max": max(waits)}
        stack.stop_worker()
        result["costs_ms"] = _costs(stack)
    finally:
        stack.close()
    print(json.dumps(result, indent=2))
    return 0


def _probe(stack: Stack, client: load.Client, count: int, number: int) -> dict[str, Any]:
    """Tenant B submits `count` jobs; how long each waited to start, and A's progress."""
    a_done_before = _count(stack, "a", "succeeded")
    for i in range(count):
        body = json.dumps({"type": noop_job.NAME, "entity_id": f"b-{number}-{i}"}).encode()
        status, answer = client.call("POST", "/v1/jobs", body)
        if status != 202:
            raise RuntimeError(f"tenant b's job refused: {status} {answer}")
    _wait(lambda: _count(stack, "b", "succeeded") >= (number + 1) * count, "tenant b's jobs")
    with stack.connect() as c:
        rows = c.execute(
            "SELECT extract(epoch FROM started_at - created_at) FROM jobs"
            " WHERE tenant = 'b' AND entity_id LIKE %s",
            (f"b-{number}-%",),
        ).fetchall()
    time.sleep(3)  # the next probe a few seconds later, further into the backlog
    return {
        "waits_s": sorted(round(float(r[0]), 3) for r in rows),
        "a_succeeded_before": a_done_before,
        "a_succeeded_after": _count(stack, "a", "succeeded"),
    }


def _costs(stack: Stack) -> dict[str, Any]:
    engine = make_engine(stack.env["COURIER_DATABASE_URL"])
    costs: dict[str, Any] = {}
    try:
        with engine.connect() as db:
            costs["in_broker_count_up_to_1000"] = _time(
                lambda: fairness.in_broker(db, "sync", "a", cap=1000), 500
            )
            active = quotas.active_jobs(db, "a", up_to=quotas.DEFAULT_MAX_ACTIVE)
            costs["active_jobs_of_a"] = active
            costs["active_count_up_to_100000"] = _time(
                lambda: quotas.active_jobs(db, "a", up_to=quotas.DEFAULT_MAX_ACTIVE), 20
            )
        costs["relay_round_read_one_backlog"] = _round(engine)
        with stack.connect() as c:
            for t in range(100):
                c.execute(_SEED, {"tenant": f"t{t}", "type": noop_job.NAME, "jobs": 100})
            c.execute("ANALYZE jobs")
        costs["relay_round_read_101_tenants"] = _round(engine)
    finally:
        engine.dispose()
    return costs


def _round(engine: Any) -> dict[str, float]:
    """One relay round's read of 500 due jobs, rolled back (nothing is published)."""

    def read() -> int:
        with engine.connect() as db, db.begin() as tx:
            n = len(outbox.read_due(db, limit=500))
            tx.rollback()
        return n

    return _time(read, 20)


def _time(call: Any, times: int) -> dict[str, float]:
    call()  # warm: plans, caches
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        spent.append((time.perf_counter() - began) * 1000)
    spent.sort()
    return {"p50": round(statistics.median(spent), 3), "max": round(spent[-1], 3)}


def _count(stack: Stack, tenant: str, status: str) -> int:
    with stack.connect() as c:
        row = c.execute(
            "SELECT count(*) FROM jobs WHERE tenant = %s AND status = %s", (tenant, status)
        ).fetchone()
    return int(row[0]) if row else 0


def _wait(condition: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


if __name__ == "__main__":
    raise SystemExit(main())
