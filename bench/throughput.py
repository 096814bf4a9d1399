"""Sections 1 and 2: end-to-end throughput of `POST /v1/jobs` and `POST /v1/jobs/batch`.

Clients submit jobs of the stack's job type (the no-op type unless told otherwise) with
distinct entity ids while `courier worker` runs; acceptance is timed by the clients,
completion from the job rows (created_at, finished_at).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bench import load
from bench.stack import Stack, dumps

TERMINAL = ("succeeded", "failed", "dead", "cancelled")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def single(
    stack: Stack, *, jobs: int, clients: int, tenant: str = "bench-single"
) -> dict[str, Any]:
    """Section 1: one job per request."""
    bodies = [dumps({"type": stack.job_type, "entity_id": f"s-{i}"}) for i in range(jobs)]

    def send(client: load.Client, body: bytes) -> str | None:
        status, answer = client.call("POST", "/v1/jobs", body)
        return load.expect(status, 202, answer)

    return _measure(stack, tenant, jobs, bodies, send, clients=clients)


def batch(
    stack: Stack, *, jobs: int, clients: int, size: int, tenant: str = "bench-batch"
) -> dict[str, Any]:
    """Section 2: `size` jobs per request."""
    bodies = batches(stack.job_type, jobs, size, prefix="b")

    def send(client: load.Client, body: bytes) -> str | None:
        status, answer = client.call("POST", "/v1/jobs/batch", body)
        if status != 207:
            return load.expect(status, 207, answer)
        refused = [item for item in answer["items"] if item["status"] != 202]
        return f"{len(refused)} items refused, e.g. {refused[0]}" if refused else None

    result = _measure(stack, tenant, jobs, bodies, send, clients=clients)
    return {"batch_size": size, **result}


def batches(job_type: str, jobs: int, size: int, *, prefix: str) -> list[bytes]:
    """Request bodies for `jobs` jobs of `job_type`, `size` per batch."""
    items = [{"type": job_type, "entity_id": f"{prefix}-{i}"} for i in range(jobs)]
    return [dumps({"jobs": items[i : i + size]}) for i in range(0, jobs, size)]


def _measure(stack: Stack, tenant: str, jobs: int, bodies, send, *, clients: int) -> dict:
    assert stack.api is not None
    token = stack.token(tenant)
    if stack.worker is None:
        stack.start_worker()
    since = sql_now(stack)  # the tenant's jobs from before (history) are not counted
    meter = stack.cpu_meter()
    meter.start()
    accepted = load.run(stack.api_port, token, bodies, send, clients=clients)
    summary = accepted.summary(jobs)
    with stack.connect() as conn:
        finished = wait_finished(conn, tenant, jobs, timeout=120 + jobs / 20, since=since)
        usage = meter.stop(jobs)
        completion = completion_stats(conn, tenant, since=since)
    return {
        "jobs": jobs,
        "clients": min(clients, len(bodies)),
        "accepted_per_s": summary["per_s"],
        "accept_seconds": summary["seconds"],
        "accept_p50_ms": summary["p50_ms"],
        "accept_p99_ms": summary["p99_ms"],
        "request_errors": summary["errors"],
        "first_errors": accepted.errors[:3],
        "all_finished": finished,
        **completion,
        "cpu": usage,
    }


def sql_now(stack: Stack) -> datetime:
    """The database's clock now."""
    with stack.connect() as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def wait_finished(conn, tenant: str, jobs: int, *, timeout: float, since: datetime = EPOCH) -> bool:
    """Wait until `jobs` jobs of `tenant` created from `since` on are finished; False if time
    ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = conn.execute(
            "SELECT count(*) FROM jobs WHERE tenant = %s AND status = ANY(%s) AND created_at >= %s",
            (tenant, list(TERMINAL), since),
        ).fetchone()[0]
        if done >= jobs:
            return True
        time.sleep(0.1)
    return False


def completion_stats(conn, tenant: str, *, since: datetime = EPOCH) -> dict[str, Any]:
    """Completed jobs per second and time to finish, from the rows of `tenant` created from
    `since` on (SQL clock)."""
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE status = 'succeeded'),
               extract(epoch FROM max(finished_at) - min(created_at)),
               extract(epoch FROM max(finished_at) - min(started_at)),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - created_at),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY finished_at - created_at)
        FROM jobs WHERE tenant = %s AND finished_at IS NOT NULL AND created_at >= %s
        """,
        (tenant, since),
    ).fetchone()
    statuses = dict(
        conn.execute(
            "SELECT status, count(*) FROM jobs WHERE tenant = %s AND created_at >= %s"
            " GROUP BY status",
            (tenant, since),
        ).fetchall()
    )
    succeeded, span, run_span, p50, p99 = row
    return {
        "succeeded": succeeded,
        "statuses": statuses,
        "completed_per_s": succeeded / float(span) if span else 0.0,
        "completion_seconds": float(span or 0),
        "run_seconds": float(run_span or 0),
        "done_p50_ms": p50.total_seconds() * 1000 if p50 else 0.0,
        "done_p99_ms": p99.total_seconds() * 1000 if p99 else 0.0,
    }
