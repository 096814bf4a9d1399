"""RabbitMQ loses messages of accepted jobs: SQL is the record, and the reconciler heals it.

The queue purged or deleted in the console, the whole vhost deleted and created again,
messages taken away: every accepted job still runs, once; and a healthy backlog is not
published a second time. The reconciler runs every second here, and counts jobs published
more than 8 s ago (beyond the management API's 5 s statistics interval).
"""

from __future__ import annotations

import contextlib
import json
import time
from urllib.parse import quote

import pika
import pytest

from tests.faults.harness import FaultDeployment, frozen, slow
from tests.support.polling import holds_for, wait_for

pytestmark = pytest.mark.faults

RECONCILE = {"COURIER_RECONCILE_INTERVAL_S": "1", "COURIER_RECONCILE_SETTLE_S": "8"}
#: Settle time, the settle time for the surplus to be seen again, a statistics interval,
#: a few rounds.
HEAL_S = 40
#: Messages a worker thread holds delivered and unacknowledged (Dramatiq prefetches two).
PREFETCHED = 2


def republished(deployment: FaultDeployment) -> int:
    """Jobs the reconcilers of the deployment's workers published again, from their logs."""
    total = 0
    for process in deployment.processes:
        for line in process.lines('"logger": "delivery.reconcile"'):
            total += json.loads(line).get("republished", 0)
    return total


def console(deployment: FaultDeployment, method: str, path: str, **kwargs) -> None:
    """What an operator does in the management console, on the deployment's vhost."""
    with deployment.broker.api() as api:
        api.request(method, path.format(vhost=quote(deployment.vhost, safe="")), **kwargs)


def published(deployment: FaultDeployment, ids: list[str]) -> bool:
    placeholders = ", ".join(["%s"] * len(ids))
    where = f"id IN ({placeholders}) AND published_at IS NOT NULL"
    return deployment.count(where, tuple(ids)) == len(ids)


def waiting_in_queue(deployment: FaultDeployment, ids: list[str]) -> None:
    """Wait until the API has published every job and the queue holds them all, ready."""
    wait_for(
        lambda: (
            published(deployment, ids)
            and deployment.broker.ready_now(deployment.vhost, "sync") == len(ids)
        ),
        timeout=20,
        what="the jobs to wait in queue sync",
    )


def runs_once_each(deployment: FaultDeployment, ids: list[str]) -> None:
    report = deployment.settle_and_check(ids, timeout=HEAL_S + 30, effects_exactly_once=True)
    assert report.statuses == {"succeeded": len(ids)}
    assert all(job["attempts"] == 1 for job in report.jobs.values())


def accepted_while_no_worker_runs(deployment: FaultDeployment, count: int) -> list[str]:
    """Start the API alone and submit `count` jobs; returns their ids once they wait in sync."""
    deployment.start_api()
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_waiting_{i}"} for i in range(count)
    )
    waiting_in_queue(deployment, ids)
    return ids


def test_jobs_whose_queue_was_purged_in_the_console_run_once_each(deployment, upstream):
    ids = accepted_while_no_worker_runs(deployment, 5)

    console(deployment, "DELETE", "/api/queues/{vhost}/sync/contents")
    assert deployment.broker.ready_now(deployment.vhost, "sync") == 0

    deployment.start_worker(processes=1, threads=4, env=RECONCILE)
    runs_once_each(deployment, ids)
    assert republished(deployment) == len(ids)


def test_jobs_whose_queue_was_deleted_in_the_console_run_once_each(deployment, upstream):
    ids = accepted_while_no_worker_runs(deployment, 5)

    console(deployment, "DELETE", "/api/queues/{vhost}/sync")
    # The API finds the queue gone and declares it again.
    ids.append(deployment.submit(type="customer_sync", entity_id="c_after_delete"))

    deployment.start_worker(processes=1, threads=4, env=RECONCILE)
    runs_once_each(deployment, ids)
    assert republished(deployment) == 5


def consumers(deployment: FaultDeployment, queue: str) -> int:
    """Consumers of a queue right now (0 if it does not exist), asked of the queue over AMQP."""
    connection = pika.BlockingConnection(
        pika.URLParameters(deployment.broker.amqp_url(deployment.vhost))
    )
    try:
        return connection.channel().queue_declare(queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def test_after_the_vhost_is_deleted_and_created_again_api_and_workers_carry_on(
    deployment, upstream
):
    deployment.start_api()
    # A longer settle time: the workers must find their queue again by themselves, before a
    # republish declares it for them.
    group = deployment.start_worker(
        processes=1, threads=4, env={**RECONCILE, "COURIER_RECONCILE_SETTLE_S": "10"}
    )
    pids = [group.supervisor, *group.worker_pids()]
    with frozen(*pids):  # the jobs wait in the queue, and the worker sees the loss later
        before = deployment.submit_all(
            {"type": "customer_sync", "entity_id": f"c_lost_{i}"} for i in range(5)
        )
        # (in the queue, or delivered to the frozen worker and not acknowledged)
        wait_for(lambda: published(deployment, before), what="the API to publish the jobs")
        deployment.broker.delete_vhost(deployment.vhost)
        console(deployment, "PUT", "/api/vhosts/{vhost}")
        console(
            deployment,
            "PUT",
            "/api/permissions/{vhost}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
    wait_for(
        lambda: consumers(deployment, "sync") >= 1,
        timeout=10,
        what="the worker to declare and consume queue sync again",
    )
    after = [deployment.submit(type="customer_sync", entity_id=f"c_new_{i}") for i in range(3)]

    runs_once_each(deployment, before + after)
    assert republished(deployment) == len(before)
    assert group.restarts() == 0


def test_a_healthy_backlog_is_not_published_again_and_lost_messages_are(deployment, upstream):
    # One slow worker thread: one attempt running all along, a few messages delivered to the
    # worker and not acknowledged, the rest ready in the queue.
    upstream.script("PUT", "/billing/customers/*", slow(120), repeat_last=True)
    deployment.start_api()
    deployment.start_worker(
        processes=1, threads=1, env={**RECONCILE, "COURIER_UPSTREAM_TIMEOUT_S": "150"}
    )
    backlog = 200
    deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_backlog_{i}"} for i in range(backlog)
    )
    wait_for(lambda: deployment.count("status = 'running'") == 1, what="the first attempt")

    # Rounds compare the queue with SQL once the jobs are older than the settle time.
    holds_for(lambda: republished(deployment) == 0, 12, what="nothing republished")

    taken = 3
    console(
        deployment,
        "POST",
        "/api/queues/{vhost}/sync/get",
        json={"count": taken, "ackmode": "ack_requeue_false", "encoding": "auto"},
    )
    lost_at = time.monotonic()
    wait_for(lambda: republished(deployment) >= taken, timeout=HEAL_S, what="the lost messages")
    print(f"lost messages republished {time.monotonic() - lost_at:.1f}s after they were taken")
    # The oldest waiting jobs are republished first, and those delivered to the worker but not
    # claimed yet are among them: at most that many extra copies, never the backlog.
    holds_for(lambda: republished(deployment) <= taken + PREFETCHED, 5, what="no more republished")
    total = deployment.broker.ready_now(deployment.vhost, "sync")
    assert total <= backlog, f"the queue holds {total} messages for {backlog} jobs"
