"""RabbitMQ goes away: stopped while the API accepts jobs, crashed while workers consume.

Both run on the session's private RabbitMQ node, so nothing else on the machine notices.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import elapsed, slow
from tests.support.polling import wait_for

pytestmark = pytest.mark.faults


def test_jobs_accepted_while_rabbitmq_is_stopped_are_published_within_10s_of_its_return(
    deployment_on_private_rabbitmq, private_rabbitmq, upstream
):
    deployment = deployment_on_private_rabbitmq
    deployment.start_api()
    group = deployment.start_worker(processes=1, threads=4)
    before = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_before_{i}"} for i in range(5)
    )

    private_rabbitmq.stop()
    during, slowest = [], 0.0
    for i in range(20):
        started = time.monotonic()
        during.append(deployment.submit(type="customer_sync", entity_id=f"c_during_{i}"))
        slowest = max(slowest, elapsed(started))
    with deployment.http() as http:
        ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"] == "unavailable"
    assert slowest < 10, f"an accept took {slowest:.1f}s with the broker down"
    placeholders = ", ".join(["%s"] * len(during))
    unpublished = f"id IN ({placeholders}) AND published_at IS NULL"
    assert deployment.count(unpublished, tuple(during)) == len(during)

    broker_back = private_rabbitmq.start()  # when its AMQP port opened
    wait_for(
        lambda: deployment.count(unpublished, tuple(during)) == 0,
        timeout=max(10 - elapsed(broker_back), 0.1),
        interval=0.1,
        what="the relay to publish the jobs accepted during the outage (10 s budget)",
    )
    print(
        f"published {elapsed(broker_back):.1f}s after RabbitMQ came back; accept <= {slowest:.2f}s"
    )

    report = deployment.settle_and_check(before + during, timeout=60)
    assert report.statuses == {"succeeded": len(before) + len(during)}
    assert group.restarts() == 0


def test_rabbitmq_crashing_and_restarting_while_workers_consume_loses_nothing(
    deployment_on_private_rabbitmq, private_rabbitmq, upstream
):
    deployment = deployment_on_private_rabbitmq
    upstream.script("PUT", "/billing/customers/*", slow(0.2), repeat_last=True)
    deployment.start_api()
    group = deployment.start_worker(processes=2, threads=4)
    pids = sorted(group.worker_pids())
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_rmq_{i}"} for i in range(80)
    )
    wait_for(
        lambda: deployment.count("status = 'succeeded'") >= 15,
        timeout=30,
        what="consumption to be under way",
    )

    private_rabbitmq.kill()  # kill -9: what the broker had confirmed is on disk
    ids += [
        deployment.submit({"type": "customer_sync", "entity_id": f"c_down_{i}"}) for i in range(5)
    ]
    private_rabbitmq.start()

    report = deployment.settle_and_check(ids, timeout=120)
    assert report.statuses == {"succeeded": len(ids)}
    # The workers reconnected by themselves: no restart, the same processes.
    assert group.restarts() == 0
    assert sorted(group.worker_pids()) == pids
