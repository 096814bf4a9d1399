"""`courier purge`, `courier worker --queues` and COURIER_JOB_QUEUES, as an operator meets them."""

from __future__ import annotations

import pika
import pytest

from tests.support.polling import holds_for, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def moved(deployment):
    """The deployment with customer_sync moved to queue `low`."""
    deployment.env["COURIER_JOB_QUEUES"] = "customer_sync=low"
    return deployment


def ready(deployment, queue: str) -> int:
    try:
        return deployment.broker.ready_now(deployment.vhost, queue)
    except pika.exceptions.ChannelClosedByBroker:  # not declared yet
        return 0


def test_courier_purge_cancels_the_waiting_jobs_of_a_queue_and_empties_it(moved):
    moved.start_api()
    waiting = [moved.submit(type="customer_sync", entity_id=f"c_{i}") for i in range(3)]
    kept = moved.submit(type="invoice_sync", entity_id="i_1")
    wait_for(lambda: ready(moved, "low") == 3, what="three messages in low")

    done = moved.run("purge", "--queue", "low", "--reason", "a bad import")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "purged low: cancelled 3 job(s)"
    assert ready(moved, "low") == 0 and ready(moved, "sync") == 1
    assert {moved.job(j)["status"] for j in waiting} == {"cancelled"}
    with moved.sql() as conn:
        [(actor, reason, details)] = conn.execute(
            "SELECT actor, reason, details FROM audit_log WHERE action = 'queue.purge'"
        ).fetchall()
    assert actor.startswith("cli:") and reason == "a bad import"
    assert details == {"queue": "low", "cancelled": 3}
    moved.start_worker()
    moved.wait_status(kept, "succeeded")
    assert {moved.job(j)["status"] for j in waiting} == {"cancelled"}


def test_courier_purge_of_a_queue_no_job_type_runs_on_is_bad_usage(moved):
    done = moved.run("purge", "--queue", "nowhere")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "--queue" in line and "nowhere" in line and "low" in line


def test_a_worker_for_sync_only_leaves_low_jobs_queued(moved):
    moved.start_api()
    moved.start_worker(queues="sync")
    on_low = moved.submit(type="customer_sync", entity_id="c_waits")
    on_sync = moved.submit(type="invoice_sync", entity_id="i_runs")
    moved.wait_status(on_sync, "succeeded")
    holds_for(lambda: moved.job(on_low)["status"] == "queued", 3, what="the low job waits")
    moved.start_worker("worker-low", queues="low")
    moved.wait_status(on_low, "succeeded")


def test_courier_worker_with_an_unknown_queue_is_bad_usage(moved):
    done = moved.run("worker", "--queues", "sync,nowhere")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "--queues" in line and "nowhere" in line


def test_courier_job_queues_naming_an_unknown_type_fails_at_start_up(deployment):
    deployment.env["COURIER_JOB_QUEUES"] = "no_such_type=low"
    for command in (("worker",), ("api",), ("purge", "--queue", "low")):
        done = deployment.run(*command, timeout=60)
        assert done.returncode == 1, (command, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert "COURIER_JOB_QUEUES" in line and "no_such_type" in line
