"""Webhooks when workers die with kill -9: a job that ended before any delivery was queued,
and a delivery whose sender died mid-request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.polling import holds_for, wait_for
from tests.support.webhook_receiver import Answer, WebhookReceiver

pytestmark = pytest.mark.faults

HOOK = "/hooks/courier"
#: Webhooks to the test's receiver, scanned often; a send gives up after 3 s, so a claimed
#: delivery's lease is 4 * 3 + 10 = 22 s.
WEBHOOKS = {
    "COURIER_CALLBACK_HOSTS": "127.0.0.1",
    "COURIER_WEBHOOK_INTERVAL_S": "0.2",
    "COURIER_WEBHOOK_MIN_BACKOFF_S": "0.2",
    "COURIER_WEBHOOK_MAX_BACKOFF_S": "1",
    "COURIER_WEBHOOK_TIMEOUT_S": "3",
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def delivery_rows(deployment, job_id: str) -> list[dict]:
    with deployment.sql() as conn:
        cur = conn.execute(
            "SELECT id, status, attempts FROM webhook_deliveries WHERE job_id = %s", (job_id,)
        )
        return [dict(zip(("id", "status", "attempts"), row, strict=True)) for row in cur]


def test_a_job_whose_worker_died_before_queueing_its_webhook_is_announced_after_restart(
    deployment, receiver
):
    deployment.env.update(WEBHOOKS)
    deployment.start_api()
    # This worker runs the job but would scan for webhooks only after an hour.
    group = deployment.start_worker(env={"COURIER_WEBHOOK_INTERVAL_S": "3600"})
    job_id = deployment.submit(
        type="customer_sync", entity_id="c_1", callback_url=receiver.url + HOOK
    )
    deployment.wait_status(job_id, "succeeded")
    group.kill_group()
    group.terminate()
    assert delivery_rows(deployment, job_id) == []
    assert deployment.job(job_id)["callback_queued_at"] is None

    deployment.start_worker("worker-after")
    wait_for(
        lambda: [d for d in delivery_rows(deployment, job_id) if d["status"] == "delivered"],
        timeout=60,
        what="the webhook to be delivered by the new worker",
    )
    holds_for(lambda: len(receiver.received()) == 1, 1.0, what="exactly one request")
    [request] = receiver.received()
    assert request.headers["Courier-Event"] == "job.succeeded"


def test_a_delivery_whose_sender_was_killed_mid_request_is_sent_again_with_the_same_id(
    deployment, receiver
):
    # The first request hangs past the kill; the second is answered at once.
    receiver.script(HOOK, Answer(200, delay_s=60), 200)
    deployment.env.update(WEBHOOKS)
    deployment.start_api()
    group = deployment.start_worker()
    job_id = deployment.submit(
        type="customer_sync", entity_id="c_1", callback_url=receiver.url + HOOK
    )
    wait_for(lambda: receiver.received(HOOK), timeout=60, what="the first delivery request")
    ready_before = group.ready_count()
    group.kill_group()
    group.wait_ready(after=ready_before)  # the supervisor brought the group back

    # Sent again once the dead sender's lease (22 s) has run out, and recorded once.
    wait_for(
        lambda: [d for d in delivery_rows(deployment, job_id) if d["status"] == "delivered"],
        timeout=90,
        interval=0.2,
        what="the delivery to be sent again and recorded",
    )
    first, second = receiver.received(HOOK)
    assert first.headers["Courier-Delivery"] == second.headers["Courier-Delivery"]
    assert first.body == second.body
    [row] = delivery_rows(deployment, job_id)
    assert str(row["id"]) == first.headers["Courier-Delivery"]
    assert row["attempts"] == 2
