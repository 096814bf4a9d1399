"""Duplicate messages for one job: published concurrently, or by a relay that died before
recording its publish. The claim lets exactly one attempt run."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from tests.faults.harness import slow
from tests.support.polling import wait_for

pytestmark = pytest.mark.faults


def test_the_same_job_message_published_five_times_concurrently_runs_the_job_once(
    deployment, upstream
):
    upstream.script("PUT", "/billing/customers/*", slow(0.2), repeat_last=True)
    deployment.start_api()
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_dup_{i}"} for i in range(12)
    )
    messages = [deployment.message_for(job_id).encode() for job_id in ids]

    # Five publishers send the same messages at the same moment, each on its own connection.
    start = threading.Barrier(5)
    failures: list[BaseException] = []

    def publisher() -> None:
        try:
            with deployment.broker.channel(deployment.vhost) as channel:
                start.wait(10)
                for body in messages:
                    deployment.broker.send(channel, "sync", body)
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=publisher) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert deployment.broker.ready_now(deployment.vhost, "sync") == 6 * len(ids)  # the API's + 5

    group = deployment.start_worker(processes=2, threads=8)
    report = deployment.settle_and_check(ids, timeout=60, effects_exactly_once=True)
    assert report.statuses == {"succeeded": len(ids)}
    assert all(job["attempts"] == 1 for job in report.jobs.values())
    # Every duplicate was refused at the claim and acknowledged, none dead-lettered.
    assert len(group.log_lines("not claimable")) == 5 * len(ids)
    assert deployment.broker.peek(deployment.vhost, "sync.XQ") == []


def test_a_relay_killed_between_publish_and_mark_leaves_duplicates_that_run_once(
    deployment, upstream
):
    upstream.script("GET", "/crm/customers/*", slow(0.5, body={"id": "c"}), repeat_last=True)
    deployment.start_api()
    # One job due now: the API publishes it, which declares the queues.
    first = deployment.submit({"type": "customer_sync", "entity_id": "c_relay_first"})
    run_at = datetime.now(UTC) + timedelta(seconds=2)
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_relay_{i}", "run_at": run_at.isoformat()}
        for i in range(12)
    )
    placeholders = ", ".join(["%s"] * len(ids))
    unmarked = f"id IN ({placeholders}) AND published_at IS NULL"
    assert deployment.count(unmarked, tuple(ids)) == len(ids)  # scheduled: left to the relay
    wait_for(lambda: datetime.now(UTC) > run_at, timeout=10, what="the jobs to be due")

    # What a relay killed after its publish and before its mark leaves behind: due jobs whose
    # messages are in the queue while SQL still says they are unpublished.
    with deployment.broker.channel(deployment.vhost) as channel:
        for job_id in ids:
            deployment.broker.send(channel, "sync", deployment.message_for(job_id).encode())
    assert deployment.count(unmarked, tuple(ids)) == len(ids)

    # A real relay now publishes them again; the duplicates are harmless.
    group = deployment.start_worker(processes=1, threads=4)
    report = deployment.settle_and_check([first, *ids], timeout=60, effects_exactly_once=True)
    assert report.statuses == {"succeeded": 1 + len(ids)}
    assert all(job["attempts"] == 1 for job in report.jobs.values())
    assert group.log_lines("relay published")  # it did publish duplicates...
    assert group.log_lines("not claimable")  # ...and they were refused at the claim
