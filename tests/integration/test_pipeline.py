"""The job pipeline on real PostgreSQL and RabbitMQ: accept, publish, claim, run, record."""

from __future__ import annotations

import logging

import pytest
from dramatiq import Message
from sqlalchemy import func, select

from delivery.outbox import message_for
from store.models import Attempt, Job
from store.outbox import JobMessage
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration


def test_a_customer_sync_copies_the_customer_with_the_contract_headers(stack, upstream):
    stack.start_worker()
    headers = {**stack.token(), "X-Request-ID": "corr-1"}
    response = stack.client.simulate_post(
        "/v1/jobs", json={"type": "customer_sync", "entity_id": "c_1001"}, headers=headers
    )
    assert response.status_code == 202, response.text
    job_id = response.json["id"]
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    assert response.json["status_url"] == f"/v1/jobs/{job_id}"
    assert response.json["status"] == "queued"

    stack.wait_status(job_id, "succeeded")
    job = stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=headers).json
    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert job["result"] == {"billing_status": 200}
    assert job["started_at"] and job["finished_at"]

    [read] = upstream.calls(path="/crm/customers/c_1001", method="GET")
    [write] = upstream.calls(path="/billing/customers/c_1001", method="PUT")
    assert read["headers"]["X-Correlation-ID"] == "corr-1"
    assert write["headers"]["X-Correlation-ID"] == "corr-1"
    assert write["headers"]["Idempotency-Key"] == job_id
    assert "Idempotency-Key" not in read["headers"] or not read["headers"]["Idempotency-Key"]
    assert write["body"]["id"] == "c_1001"


def test_an_invoice_sync_copies_the_invoice(stack, upstream):
    stack.start_worker()
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="invoice_sync", entity_id="inv_7")
    stack.wait_status(job_id, "succeeded")
    [write] = upstream.calls(path="/billing/invoices/inv_7", method="PUT")
    assert write["headers"]["Idempotency-Key"] == job_id
    assert write["headers"]["X-Correlation-ID"] == stack.job(job_id).correlation_id


def test_a_directory_sync_pages_through_the_crm_and_reports_progress(stack, upstream):
    stack.start_worker()
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="directory_sync")
    job = stack.wait_status(job_id, "succeeded")
    pages = upstream.calls(path="/crm/customers", method="GET")
    writes = [
        c for c in upstream.calls(method="PUT") if c["path"].startswith("/billing/customers/")
    ]
    assert len(pages) >= 2
    assert job.result == {"synced": len(writes)}
    assert job.progress["current"] == len(writes)
    assert job.progress["total"] == len(writes)
    assert all(w["headers"]["X-Correlation-ID"] == job.correlation_id for w in writes)


def test_attempts_equal_the_attempt_rows(stack):
    stack.start_worker()
    headers = stack.token()
    ids = [
        stack.submit(headers=headers, type="customer_sync", entity_id=f"c_{i}") for i in range(20)
    ]
    for job_id in ids:
        stack.wait_status(job_id, "succeeded")
    with stack.sessions() as session:
        rows = dict(
            session.execute(select(Attempt.job_id, func.count()).group_by(Attempt.job_id)).all()
        )
        for job in session.scalars(select(Job)):
            assert job.attempts == rows[job.id] == 1
    attempts = stack.client.simulate_get(f"/v1/jobs/{ids[0]}/attempts", headers=headers).json[
        "items"
    ]
    assert [(a["number"], a["status"], a["decision"]) for a in attempts] == [(1, "succeeded", None)]
    assert attempts[0]["duration_ms"] >= 0 and ":" in attempts[0]["worker"]


def test_the_same_job_message_delivered_five_times_runs_the_actor_once(stack, upstream):
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="customer_sync", entity_id="c_dup")
    with stack.sessions() as session:
        pending = JobMessage.of(session.get_one(Job, stack.job(job_id).id))
    for _ in range(4):
        stack.api_broker.enqueue(message_for(pending))
    stack.start_worker(threads=8)
    stack.wait_status(job_id, "succeeded")
    stack.wait_acknowledged(5)  # the message and its four copies, none dead-lettered
    assert stack.message_counts() == {"sync": 0, "sync.DQ": 0, "sync.XQ": 0}
    assert len(upstream.calls(path="/billing/customers/c_dup", method="PUT")) == 1
    assert len(stack.attempts(job_id)) == 1


def test_a_message_for_an_unknown_job_is_dropped(stack, upstream, caplog):
    caplog.set_level(logging.INFO, logger="middleware.attempts")
    stack.start_worker()
    unknown = "00000000-0000-7000-8000-000000000000"
    message = Message(
        queue_name="sync", actor_name="customer_sync", args=(unknown,), kwargs={}, options={}
    )
    stack.api_broker.enqueue(message)

    # The worker took it and found no job to claim...
    wait_for(
        lambda: [
            r
            for r in caplog.records
            if "not claimable" in r.getMessage()
            and unknown in r.getMessage()
            and message.message_id in r.getMessage()
        ],
        what="the worker to refuse the message",
    )
    # ...and is still healthy: the next job runs.
    job_id = stack.submit(type="customer_sync", entity_id="c_after")
    stack.wait_status(job_id, "succeeded")

    # Both deliveries were acknowledged; nothing is left in the queue, delayed or dead-lettered,
    # nor held unacknowledged (closing the worker's connection would give it back).
    stack.wait_acknowledged(2)
    stack.stop_workers()
    assert stack.message_counts() == {"sync": 0, "sync.DQ": 0, "sync.XQ": 0}
    # Nothing was made of it: no job row, no attempt, no upstream call.
    with stack.sessions() as session:
        assert [str(i) for i in session.scalars(select(Job.id))] == [job_id]
        assert [str(a.job_id) for a in session.scalars(select(Attempt))] == [job_id]
    assert {c["path"] for c in upstream.calls()} == {
        "/crm/customers/c_after",
        "/billing/customers/c_after",
    }


def test_a_job_accepted_while_publishing_fails_is_published_by_the_relay(stack, monkeypatch):
    # The broker refusing a publish cannot be produced on demand without stopping it for
    # everyone, so this one publish is made to fail; the relay must pick the job up.
    from dramatiq.errors import ConnectionClosed

    def refuse(message, *, delay=None):
        raise ConnectionClosed(RuntimeError("broker down"))

    monkeypatch.setattr(stack.api_broker, "enqueue", refuse)
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="customer_sync", entity_id="c_outbox")
    assert stack.job(job_id).published_at is None
    stack.start_worker()
    stack.wait_status(job_id, "succeeded")


def test_a_job_with_run_at_waits_until_then(stack):
    from datetime import UTC, datetime, timedelta

    stack.start_worker()
    headers = stack.token()
    run_at = datetime.now(UTC) + timedelta(seconds=2)
    job_id = stack.submit(
        headers=headers, type="customer_sync", entity_id="c_later", run_at=run_at.isoformat()
    )
    job = stack.wait_status(job_id, "succeeded", timeout=15)
    assert job.started_at >= run_at - timedelta(milliseconds=50)
