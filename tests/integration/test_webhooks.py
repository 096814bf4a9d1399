"""Webhooks on real PostgreSQL and RabbitMQ, to a real HTTP endpoint run by the test."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from click.testing import CliRunner
from falcon import testing
from sqlalchemy import select, update

from courier.cli import main
from courier.wsgi import app_for
from store import tenants, webhooks
from store.models import AuditEntry, Job, WebhookDelivery
from store.types import utcnow
from tests.support.polling import holds_for, wait_for
from tests.support.records import insert_jobs
from tests.support.webhook_receiver import Answer, WebhookReceiver

pytestmark = pytest.mark.integration

HOOK = "/hooks/courier"


@pytest.fixture
def settings(settings):
    """Webhooks to 127.0.0.1, scanned and retried quickly."""
    return settings.replace(
        callback_hosts=frozenset({"127.0.0.1", "hooks.example.com"}),
        webhook_interval_s=0.1,
        webhook_min_backoff_s=0.2,
        webhook_max_backoff_s=0.5,
        webhook_timeout_s=2.0,
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def verified(secret: str, header: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """What a receiver does: recompute the signature over the raw body and compare."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(expected.hexdigest(), parts["v1"])


def deliveries(stack, job_id: str) -> list[WebhookDelivery]:
    with stack.sessions() as session:
        return list(
            session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.job_id == uuid.UUID(job_id))
                .order_by(WebhookDelivery.created_at)
            )
        )


def wait_delivery(stack, job_id: str, status: str, timeout: float = 20.0) -> WebhookDelivery:
    seen: list[list[WebhookDelivery]] = [[]]

    def reached() -> WebhookDelivery | None:
        seen[0] = rows = deliveries(stack, job_id)
        return rows[0] if rows and rows[0].status == status else None

    return wait_for(
        reached,
        timeout=timeout,
        what=lambda: (
            f"a {status} delivery for job {job_id} (seen {[(d.status, d.attempts, d.last_error) for d in seen[0]]})"
        ),
    )


@pytest.fixture(params=["postgresql", "sqlite"])
def db_engine(request: pytest.FixtureRequest):
    return request.getfixturevalue("engine" if request.param == "postgresql" else "sqlite_engine")


def test_each_ended_job_is_queued_once_claimed_for_a_lease_and_given_up_on_both_engines(
    db_engine,
):
    url = "http://127.0.0.1/hook"
    [ended] = insert_jobs(
        db_engine, 1, status="dead", finished_at=utcnow(), callback_url=url, tenant="acme"
    )
    insert_jobs(db_engine, 1, status="queued", callback_url=url)  # not ended: nothing owed
    insert_jobs(db_engine, 1, status="succeeded", finished_at=utcnow())  # no callback_url

    def body(job) -> dict:
        return {"id": str(job.id), "status": job.status}

    with db_engine.begin() as db:
        assert webhooks.queue_ended(db, body=body) == 1
    with db_engine.begin() as db:
        assert webhooks.queue_ended(db, body=body) == 0
        [due] = webhooks.claim_due(db, limit=10, lease_s=60)
    assert (due.job_id, due.event, due.url, due.attempt) == (ended, "job.dead", url, 1)
    assert due.body == {"id": str(ended), "status": "dead"}
    assert due.secret.startswith("whsec_")
    with db_engine.begin() as db:
        assert webhooks.claim_due(db, limit=10, lease_s=60) == []  # leased
        assert due.secret == tenants.webhook_secret(db, "acme")
        left = webhooks.record_refused(
            db, due, status_code=500, error="500", delay_ms=100_000, window_s=3600
        )
    assert left == "pending"
    with db_engine.begin() as db:
        # A stale attempt's outcome changes nothing; past the window the delivery has failed.
        stale = replace(due, attempt=0)
        assert (
            webhooks.record_refused(db, stale, status_code=500, error="", delay_ms=1, window_s=1)
            is None
        )
        db.execute(update(WebhookDelivery).values(created_at=utcnow() - timedelta(hours=2)))
        gone = webhooks.record_refused(
            db, due, status_code=503, error="503", delay_ms=1, window_s=3600
        )
    assert gone == "failed"


def test_a_succeeded_jobs_webhook_arrives_once_signed_with_the_tenants_secret(stack, receiver):
    stack.start_worker()
    url = f"{receiver.url}{HOOK}?source=courier"
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=url)

    wait_delivery(stack, job_id, "delivered")
    holds_for(lambda: len(receiver.received()) == 1, 1.0, what="exactly one request")
    [request] = receiver.received()
    listed = stack.client.simulate_get(f"/v1/jobs/{job_id}/deliveries", headers=stack.headers)
    assert listed.status_code == 200, listed.text
    [item] = listed.json["items"]

    assert request.path == f"{HOOK}?source=courier"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Courier-Event"] == "job.succeeded"
    assert request.headers["Courier-Delivery"] == item["id"]
    assert request.headers["User-Agent"].startswith("Courier")
    with stack.sessions.begin() as session:
        secret = tenants.webhook_secret(session, "acme")
    assert verified(secret, request.headers["Courier-Signature"], request.body)
    assert not verified("another secret", request.headers["Courier-Signature"], request.body)
    job = stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=stack.headers).json
    assert json.loads(request.body) == job
    assert job["callback_url"] == url
    assert item["event"] == "job.succeeded"
    assert item["url"] == url
    assert item["status"] == "delivered"
    assert item["attempts"] == 1
    assert item["last_status_code"] == 200
    assert item["last_error"] is None
    assert item["delivered_at"] and item["created_at"]
    assert item["next_attempt_at"] is None


def test_a_webhook_carries_a_child_of_the_jobs_trace(stack, receiver):
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=receiver.url + HOOK)
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with stack.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == uuid.UUID(job_id)).values(traceparent=trace))
    stack.start_worker()

    wait_delivery(stack, job_id, "delivered")
    [request] = receiver.received()
    sent = request.headers["traceparent"]
    assert sent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert sent.endswith("-01")
    assert sent != trace


def test_a_receiver_answering_500_twice_then_200_gets_three_tries_of_one_delivery(stack, receiver):
    receiver.script(HOOK, 500, 500, 200)
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=receiver.url + HOOK)

    delivery = wait_delivery(stack, job_id, "delivered")
    requests = receiver.received()
    assert len(requests) == 3
    assert {r.headers["Courier-Delivery"] for r in requests} == {str(delivery.id)}
    assert len({r.body for r in requests}) == 1
    assert delivery.attempts == 3
    assert delivery.last_status_code == 200


def test_a_redirect_is_not_followed_and_counts_as_a_refusal(stack, receiver):
    receiver.script(HOOK, Answer(302, {"Location": "/elsewhere"}))
    stack.start_worker(webhook_retry_s=1)
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=receiver.url + HOOK)

    delivery = wait_delivery(stack, job_id, "failed")
    assert receiver.received("/elsewhere") == []
    assert delivery.last_status_code == 302
    assert "redirect" in delivery.last_error and "not followed" in delivery.last_error


def test_a_delivery_refused_past_the_retry_window_has_failed(stack, receiver):
    receiver.script(HOOK, 500)
    stack.start_worker(webhook_retry_s=2)
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=receiver.url + HOOK)

    delivery = wait_delivery(stack, job_id, "failed")
    assert delivery.attempts >= 2
    assert delivery.attempts == len(receiver.received())
    assert delivery.last_status_code == 500
    assert delivery.next_attempt_at is None
    assert delivery.delivered_at is None
    # Given up means given up: nothing more is sent.
    holds_for(lambda: len(receiver.received()) == delivery.attempts, 1.0)


def test_an_unreachable_endpoint_is_retried_with_the_error_recorded(stack, receiver):
    closed = WebhookReceiver()
    url = closed.url + HOOK
    closed.close()
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=url)

    def retried() -> WebhookDelivery | None:
        rows = deliveries(stack, job_id)
        return rows[0] if rows and rows[0].attempts >= 2 else None

    delivery = wait_for(retried, what="two attempts of the delivery")
    assert delivery.status == "pending"
    assert delivery.last_status_code is None
    assert "ConnectError" in delivery.last_error


def test_a_slow_endpoint_does_not_hold_up_other_deliveries(stack, receiver):
    receiver.script("/slow", Answer(200, delay_s=30))
    stack.start_worker(webhook_timeout_s=10.0)
    slow = stack.submit(type="customer_sync", entity_id="c_1", callback_url=receiver.url + "/slow")
    wait_for(lambda: receiver.received("/slow"), what="the slow endpoint to be called")

    fast = stack.submit(type="customer_sync", entity_id="c_2", callback_url=receiver.url + HOOK)
    wait_delivery(stack, fast, "delivered")
    # Delivered while the slow endpoint's first request still waits for its answer.
    [waiting] = deliveries(stack, slow)
    assert (waiting.status, waiting.attempts, waiting.last_error) == ("pending", 1, None)
    assert len(receiver.received("/slow")) == 1


def test_failed_dead_and_cancelled_jobs_announce_their_end(stack, upstream, receiver):
    upstream.script("GET", "/crm/customers/gone", {"status": 404})
    upstream.script("GET", "/crm/customers/down", {"status": 503}, repeat_last=True)
    url = receiver.url + HOOK
    queued = stack.submit(type="customer_sync", entity_id="waiting", callback_url=url)
    response = stack.client.simulate_post(f"/v1/jobs/{queued}/cancel", headers=stack.headers)
    assert response.status_code == 200, response.text
    stack.start_worker()
    failed = stack.submit(type="customer_sync", entity_id="gone", callback_url=url)
    dead = stack.submit(type="customer_sync", entity_id="down", callback_url=url, max_attempts=2)

    for job_id, event in ((queued, "job.cancelled"), (failed, "job.failed"), (dead, "job.dead")):
        delivery = wait_delivery(stack, job_id, "delivered")
        assert delivery.event == event
        [request] = [
            r for r in receiver.received() if r.headers["Courier-Delivery"] == str(delivery.id)
        ]
        assert request.headers["Courier-Event"] == event
        assert json.loads(request.body)["status"] == event.removeprefix("job.")


def test_a_job_that_ended_before_any_scan_is_announced_by_the_next_worker(stack, receiver):
    # The first worker runs the job but never scans for webhooks, then is gone: the job's
    # end is in SQL and nothing else.
    stack.start_worker(webhook_interval_s=3600)
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=receiver.url + HOOK)
    stack.wait_status(job_id, "succeeded")
    stack.stop_workers()
    assert deliveries(stack, job_id) == []
    assert stack.job(job_id).callback_queued_at is None

    stack.start_worker()
    wait_delivery(stack, job_id, "delivered")
    assert len(receiver.received()) == 1
    assert stack.job(job_id).callback_queued_at is not None


def test_many_workers_queue_exactly_one_delivery_per_job(stack, receiver):
    url = receiver.url + HOOK
    ids = stack.submit_all(
        {"type": "customer_sync", "entity_id": f"c_{i}", "callback_url": url} for i in range(30)
    )
    for _ in range(3):
        stack.start_worker(threads=2)
    for job_id in ids:
        wait_delivery(stack, job_id, "delivered")
    holds_for(lambda: len(receiver.received()) == len(ids), 1.0, what="one request per job")
    assert all(len(deliveries(stack, job_id)) == 1 for job_id in ids)
    sent = {r.headers["Courier-Delivery"] for r in receiver.received()}
    assert len(sent) == len(ids)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/hook", "http or https"),
        ("http://internal.example.com/hook", "not an allowed callback host"),
        ("http://127.0.0.2/hook", "not an allowed callback host"),
        ("http://hooks.example.com.evil.test/hook", "not an allowed callback host"),
        ("http://user:pw@hooks.example.com/hook", "user name or password"),
        ("http://hooks.example.com@10.0.0.1/hook", "user name or password"),
        ("https://hooks.example.com/" + "a" * 2048, "2048"),
        ("http:///hook", "must name a host"),
        ("not a url", "spaces"),
        ("http://hooks.example.com:99999/hook", "not a valid URL"),
    ],
)
def test_a_callback_url_off_the_allowlist_is_refused_naming_the_field(stack, url, reason):
    response = stack.client.simulate_post(
        "/v1/jobs",
        json={"type": "customer_sync", "entity_id": "c_1", "callback_url": url},
        headers=stack.headers,
    )
    assert response.status_code == 422, response.text
    assert "callback_url" in response.json["description"]
    assert reason in response.text
    assert response.json["errors"][0]["field"] == "callback_url"


@pytest.mark.parametrize(
    "url",
    ["https://HOOKS.example.com/hook", "http://hooks.example.com:8443/x?y=1", "http://127.0.0.1/"],
)
def test_a_callback_url_on_an_allowed_host_is_accepted_on_any_port(stack, url):
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=url)
    assert stack.job(job_id).callback_url == url


def test_with_no_allowed_hosts_every_callback_url_is_refused(stack):
    settings = stack.settings.replace(callback_hosts=frozenset())
    client = testing.TestClient(app_for(settings, broker=stack.api_broker, sessions=stack.sessions))
    body = {"type": "customer_sync", "entity_id": "c_1", "callback_url": "http://127.0.0.1/hook"}
    response = client.simulate_post("/v1/jobs", json=body, headers=stack.headers)
    assert response.status_code == 422, response.text
    assert "no callback hosts" in response.json["description"]
    batch = client.simulate_post("/v1/jobs/batch", json={"jobs": [body]}, headers=stack.headers)
    assert batch.status_code == 207
    assert batch.json["items"][0]["status"] == 422


def test_another_tenants_deliveries_are_not_found(stack, receiver):
    job_id = stack.submit(type="customer_sync", entity_id="c_1", callback_url=receiver.url + HOOK)
    other = stack.client.simulate_get(
        f"/v1/jobs/{job_id}/deliveries", headers=stack.token(tenant="globex")
    )
    assert other.status_code == 404
    operator = stack.client.simulate_get(
        f"/v1/jobs/{job_id}/deliveries", headers=stack.token(role="operator")
    )
    assert operator.status_code == 200
    assert operator.json == {"items": []}
    missing = stack.client.simulate_get(
        f"/v1/jobs/{uuid.uuid4()}/deliveries", headers=stack.headers
    )
    assert missing.status_code == 404


def test_the_webhook_secret_command_makes_the_secret_once_and_rotates_it_audited(stack):
    env = {"COURIER_DATABASE_URL": stack.settings.database_url}
    runner = CliRunner()

    first = runner.invoke(main, ["tenant", "webhook-secret", "--tenant", "acme"], env=env)
    again = runner.invoke(main, ["tenant", "webhook-secret", "--tenant", "acme"], env=env)
    rotated = runner.invoke(
        main, ["tenant", "webhook-secret", "--tenant", "acme", "--rotate"], env=env
    )
    assert first.exit_code == again.exit_code == rotated.exit_code == 0, first.output
    secret = first.output.splitlines()[-1]
    assert secret.startswith("whsec_")
    assert again.output.splitlines()[-1] == secret
    new = rotated.output.splitlines()[-1]
    assert new.startswith("whsec_") and new != secret
    with stack.sessions.begin() as session:
        assert tenants.webhook_secret(session, "acme") == new
        [entry] = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "rotate_webhook_secret")
        ).all()
    assert entry.tenant == "acme"
    assert entry.actor.startswith("cli:")


def test_a_replay_keeps_the_callback_and_announces_its_own_end(stack, upstream, receiver):
    upstream.script("GET", "/crm/customers/c_1", {"status": 404})
    stack.start_worker()
    url = receiver.url + HOOK
    old = stack.submit(type="customer_sync", entity_id="c_1", callback_url=url)
    wait_delivery(stack, old, "delivered")

    response = stack.client.simulate_post(f"/v1/jobs/{old}/replay", headers=stack.headers)
    assert response.status_code == 202, response.text
    new = response.json["id"]
    assert response.json["callback_url"] == url
    delivery = wait_delivery(stack, new, "delivered")
    assert delivery.event == "job.succeeded"
    assert len(deliveries(stack, old)) == 1
    assert [json.loads(r.body)["id"] for r in receiver.received()] == [old, new]
