"""Cancel in every state, progress while running, priorities."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from store.models import AuditEntry
from tests.support.polling import holds_for, wait_for
from tests.support.times import LATER

pytestmark = pytest.mark.integration


def cancel(stack, job_id, headers, **body):
    return stack.client.simulate_post(
        f"/v1/jobs/{job_id}/cancel", json=body or None, headers=headers
    )


def audit_actions(stack, job_id):
    with stack.sessions() as session:
        return [
            (e.action, e.reason)
            for e in session.scalars(
                select(AuditEntry).where(AuditEntry.job_id == stack.job(job_id).id)
            )
        ]


def test_a_queued_job_is_cancelled_at_once_and_never_runs(stack, upstream):
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="customer_sync", entity_id="c_1")  # published
    response = cancel(stack, job_id, headers, reason="wrong customer")
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    assert response.json["finished_at"]
    stack.start_worker()
    stack.wait_acknowledged(1)  # the worker took the job's message and let it go
    assert stack.job(job_id).status == "cancelled" and stack.job(job_id).attempts == 0
    assert upstream.calls() == []
    assert audit_actions(stack, job_id) == [("cancel", "wrong customer")]


def test_a_scheduled_job_is_cancelled_before_its_time(stack, upstream):
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="customer_sync", entity_id="c_2", run_at=LATER)
    assert cancel(stack, job_id, headers).json["status"] == "cancelled"


def test_a_retrying_job_is_cancelled_and_never_calls_upstream_again(stack, upstream):
    upstream.script("GET", "/crm/customers/c_3", {"status": 503}, repeat_last=True)
    stack.start_worker(min_backoff_ms=1500, max_backoff_ms=1500)
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="customer_sync", entity_id="c_3")
    stack.wait_status(job_id, "retrying")
    assert cancel(stack, job_id, headers).json["status"] == "cancelled"
    calls = len(upstream.calls())
    # Past the retry's due time (1.5 s) nothing may run.
    holds_for(lambda: len(upstream.calls()) == calls, 2.0, what="no upstream call after cancel")
    assert stack.job(job_id).status == "cancelled" and stack.job(job_id).attempts == 1


def test_a_running_directory_sync_stops_at_its_next_checkpoint(stack, upstream):
    upstream.script(
        "PUT", "/billing/customers/*", {"status": 200, "body": {}, "delay_s": 0.1}, repeat_last=True
    )
    stack.start_worker()
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="directory_sync")
    stack.wait_status(job_id, "running")
    wait_for(lambda: len(upstream.calls(method="PUT")) >= 3, what="a few items")
    response = cancel(stack, job_id, headers)
    assert response.status_code == 200 and response.json["status"] == "running"
    job = stack.wait_status(job_id, "cancelled")
    puts = len(upstream.calls(method="PUT"))
    assert 3 <= puts < 25
    assert job.error_type == "Cancelled"
    [attempt] = stack.attempts(job_id)
    assert (attempt.status, attempt.decision) == ("failed", "skip")
    holds_for(lambda: len(upstream.calls(method="PUT")) == puts, 0.5, what="no write after cancel")


@pytest.mark.parametrize("final", ["succeeded", "failed"])
def test_cancelling_a_finished_job_is_409(stack, upstream, final):
    if final == "failed":
        upstream.script("GET", "/crm/customers/c_4", {"status": 404})
    stack.start_worker()
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="customer_sync", entity_id="c_4")
    stack.wait_status(job_id, final)
    response = cancel(stack, job_id, headers)
    assert response.status_code == 409 and final in response.json["description"]
    assert audit_actions(stack, job_id) == []


def test_a_client_replays_its_own_failed_job_with_a_corrected_payload(stack, upstream):
    stack.start_worker()
    headers = stack.token()
    upstream.script("GET", "/crm/customers", {"status": 404})  # a page that is not there
    job_id = stack.submit(headers=headers, type="directory_sync", payload={"start_page": 99})
    stack.wait_status(job_id, "failed")
    response = stack.client.simulate_post(
        f"/v1/jobs/{job_id}/replay",
        json={"payload": {"start_page": 2}, "reason": "fixed input"},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    new = stack.wait_status(response.json["id"], "succeeded")
    assert new.payload == {"start_page": 2} and str(new.replay_of) == job_id
    assert new.result == {"synced": 15}  # pages 2 and 3 of 25 customers, 10 per page
    assert stack.job(job_id).payload == {"start_page": 99}  # history kept


def test_a_cancelled_job_can_be_replayed_but_an_active_one_cannot(stack):
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="customer_sync", entity_id="c_5", run_at=LATER)
    active = stack.client.simulate_post(f"/v1/jobs/{job_id}/replay", headers=headers)
    assert active.status_code == 409
    cancel(stack, job_id, headers)
    assert (
        stack.client.simulate_post(f"/v1/jobs/{job_id}/replay", headers=headers).status_code == 202
    )


def test_progress_moves_while_a_directory_sync_runs(stack, upstream):
    upstream.script(
        "PUT",
        "/billing/customers/*",
        {"status": 200, "body": {}, "delay_s": 0.05},
        repeat_last=True,
    )
    stack.start_worker()
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="directory_sync")
    seen = set()

    def finished() -> bool:
        job = stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=headers).json
        if job["progress"]:
            seen.add(job["progress"]["current"])
        return job["status"] == "succeeded"

    wait_for(finished, timeout=30, interval=0.02, what="the sync to finish")
    assert len(seen - {25}) >= 2, seen  # several intermediate values were visible
    job = stack.job(job_id)
    assert job.progress == {"current": 25, "total": 25, "message": "page 3"}


def test_progress_writes_are_throttled(stack, upstream, sessions):
    from sqlalchemy import event

    writes = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE jobs SET progress"):
            writes.append(statement)

    event.listen(stack.engine, "before_cursor_execute", count)
    stack.start_worker(progress_interval_s=10)
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="directory_sync")
    stack.wait_status(job_id, "succeeded")
    assert stack.job(job_id).progress["current"] == 25
    assert len(writes) <= 3  # the first report and the last, not one per item


def test_higher_priority_jobs_run_first(stack, upstream):
    headers = stack.token()
    low = [
        stack.submit(headers=headers, type="customer_sync", entity_id=f"low_{i}", priority=0)
        for i in range(30)
    ]
    high = stack.submit(headers=headers, type="customer_sync", entity_id="high", priority=9)
    stack.start_worker(threads=1)
    stack.wait_status(high, "succeeded")
    for job_id in low:
        stack.wait_status(job_id, "succeeded")
    order = [c["path"] for c in upstream.calls(method="GET")]
    assert order.index("/crm/customers/high") < 5, order[:6]
