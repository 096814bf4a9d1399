"""Section 3: how fast workers drain pre-enqueued work, Courier against bare Dramatiq.

Bare: messages for a no-op actor are published to their own queue, then
`dramatiq bench.bare_worker` starts; the drain runs from the first message taken to the
queue being empty. Courier: jobs are accepted through the batch API while no worker runs
(so their messages wait in `sync`), then `courier worker` starts; the drain runs from the
first claim to the last finish (SQL). Both use the same processes and threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dramatiq import Message

from bench import bare_worker, load, noop_job, throughput
from bench.processes import Process
from bench.stack import Rabbit, Stack, wait_drained


def drain(
    stack: Stack,
    *,
    jobs: int,
    clients: int,
    batch_size: int,
    on_worker_start: Callable[[Process], None] | None = None,
    tenant: str = "bench-drain",
) -> dict[str, Any]:
    """Bare Dramatiq and Courier on `jobs` each.

    With a job type that calls the upstream (not the no-op type), bare Dramatiq also runs
    with the same two upstream calls, which separates the HTTP cost from Courier's.
    """
    stack.stop_worker()
    bare = _bare(stack, jobs, with_upstream=False)
    calls_upstream = stack.job_type != noop_job.NAME
    bare_upstream = _bare(stack, jobs, with_upstream=True) if calls_upstream else None
    courier = _courier(
        stack, jobs, clients=clients, batch_size=batch_size, hook=on_worker_start, tenant=tenant
    )
    return {
        "jobs": jobs,
        "job_type": stack.job_type,
        "processes": stack.shape.processes,
        "threads": stack.shape.threads,
        "bare": bare,
        "bare_upstream": bare_upstream,
        "courier": courier,
        "ratio": _ratio(courier, bare),
        "ratio_vs_bare_upstream": _ratio(courier, bare_upstream) if bare_upstream else None,
    }


def _ratio(courier: dict[str, Any], bare: dict[str, Any]) -> float:
    return courier["per_s"] / bare["per_s"] if bare["per_s"] else 0.0


def _bare(stack: Stack, jobs: int, *, with_upstream: bool) -> dict[str, Any]:
    publisher = bare_worker.make_broker(stack.broker_url)
    began = time.perf_counter()
    for i in range(jobs):
        publisher.enqueue(
            Message(
                queue_name=bare_worker.QUEUE,
                actor_name=bare_worker.ACTOR,
                args=(f"c-{i}",),
                kwargs={},
                options={},
            )
        )
    published_s = time.perf_counter() - began
    publisher.close()
    worker = stack.start_bare(with_upstream=with_upstream)
    try:
        with Rabbit(stack.broker_url) as rabbit:
            first, empty = wait_drained(rabbit, bare_worker.QUEUE, jobs, timeout=120 + jobs / 20)
        time.sleep(0.2)  # the last prefetched messages
        stack.sample_memory(worker.name, worker)
    finally:
        worker.stop()
    seconds = empty - first
    return {
        "per_s": jobs / seconds if seconds else 0.0,
        "seconds": seconds,
        "publish_s": published_s,
    }


def _courier(
    stack: Stack, jobs: int, *, clients: int, batch_size: int, hook, tenant: str
) -> dict[str, Any]:
    token = stack.token(tenant)
    bodies = throughput.batches(stack.job_type, jobs, batch_size, prefix="d")

    def send(client: load.Client, body: bytes) -> str | None:
        status, answer = client.call("POST", "/v1/jobs/batch", body)
        return load.expect(status, 207, answer)

    since = throughput.sql_now(stack)  # the tenant's jobs from before (history) are not counted
    accepted = load.run(stack.api_port, token, bodies, send, clients=clients)
    if accepted.errors:
        raise RuntimeError(f"pre-inserting jobs failed: {accepted.errors[:3]}")
    waiting = stack.queue("sync")
    began = time.perf_counter()
    worker = stack.start_worker()
    if hook is not None:
        hook(worker)
    meter = stack.cpu_meter()
    meter.start()
    with stack.connect() as conn:
        timeout = 120 + jobs / 20
        finished = throughput.wait_finished(conn, tenant, jobs, timeout=timeout, since=since)
        wall = time.perf_counter() - began
        usage = meter.stop(jobs)
        stats = throughput.completion_stats(conn, tenant, since=since)
    stack.stop_worker()
    seconds = stats["run_seconds"]
    return {
        "per_s": stats["succeeded"] / seconds if seconds else 0.0,
        "seconds": seconds,
        "wall_seconds_with_boot": wall,
        "queued_before_start": waiting[0] if waiting else 0,
        "insert_s": accepted.seconds,
        "all_finished": finished,
        "statuses": stats["statuses"],
        "cpu": usage,
    }
