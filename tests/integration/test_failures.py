"""Failure semantics against a real upstream over HTTP: every row of the error table.

The table is in docs/queues-and-job-types.md ("Errors and decisions").
"""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import func, select

from store.models import Job
from tests.support import services
from tests.support.processes import free_port
from tests.support.records import add_queued
from tests.support.times import LATER

pytestmark = pytest.mark.integration


def decisions(stack, job_id):
    return [(a.status, a.decision, a.error_type) for a in stack.attempts(job_id)]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (500, "UpstreamUnavailable"),
        (502, "UpstreamUnavailable"),
        (503, "UpstreamUnavailable"),
        (504, "UpstreamUnavailable"),
    ],
)
def test_a_5xx_is_retried_until_max_attempts_then_dead(stack, upstream, status, error_type):
    upstream.script(
        "GET", "/crm/customers/c_1", {"status": status, "body": {"error": "down"}}, repeat_last=True
    )
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_1", max_attempts=3)
    job = stack.wait_status(job_id, "dead")
    assert job.attempts == 3 and job.error_type == error_type
    assert f"{status} from CRM GET /customers/c_1" in job.error
    assert decisions(stack, job_id) == [("failed", "retry", error_type)] * 2 + [
        ("failed", "dead", error_type)
    ]
    attempts = stack.attempts(job_id)
    for before, after in itertools.pairwise(attempts):
        assert 50 <= before.retry_in_ms <= 200
        gap_ms = (after.started_at - before.finished_at).total_seconds() * 1000
        assert gap_ms >= before.retry_in_ms - 5  # never before the backoff
    assert attempts[-1].retry_in_ms is None
    assert len(upstream.calls(path="/crm/customers/c_1")) == 3


def test_a_transient_5xx_recovers_on_the_next_attempt(stack, upstream):
    upstream.script("GET", "/crm/customers/c_2", {"status": 503})
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_2")
    job = stack.wait_status(job_id, "succeeded")
    assert job.attempts == 2
    assert decisions(stack, job_id) == [
        ("failed", "retry", "UpstreamUnavailable"),
        ("succeeded", None, None),
    ]
    assert job.error_type is None and job.error is None


def test_a_retrying_job_shows_when_it_will_run_next(stack, upstream):
    upstream.script("GET", "/crm/customers/c_3", {"status": 503}, repeat_last=True)
    stack.start_worker(min_backoff_ms=5000, max_backoff_ms=5000)
    headers = stack.token()
    job_id = stack.submit(headers=headers, type="customer_sync", entity_id="c_3")
    stack.wait_status(job_id, "retrying")
    job = stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=headers).json
    assert (
        job["status"] == "retrying"
        and job["next_attempt_at"]
        and job["error_type"] == "UpstreamUnavailable"
    )
    [attempt] = stack.client.simulate_get(f"/v1/jobs/{job_id}/attempts", headers=headers).json[
        "items"
    ]
    assert attempt["decision"] == "retry" and attempt["retry_in_ms"] == 5000


def test_a_rate_limit_honours_retry_after(stack, upstream):
    upstream.script("GET", "/crm/customers/c_4", {"status": 429, "headers": {"Retry-After": "1"}})
    stack.start_worker(max_backoff_ms=5000)
    job_id = stack.submit(type="customer_sync", entity_id="c_4")
    stack.wait_status(job_id, "succeeded")
    first, second = stack.attempts(job_id)
    assert (first.decision, first.error_type, first.retry_in_ms) == (
        "retry",
        "UpstreamRateLimited",
        1000,
    )
    assert (second.started_at - first.finished_at).total_seconds() >= 0.99


def test_retry_after_is_capped_at_the_maximum_backoff(stack, upstream):
    upstream.script(
        "GET", "/crm/customers/c_5", {"status": 429, "headers": {"Retry-After": "3600"}}
    )
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_5")
    stack.wait_status(job_id, "succeeded")
    assert stack.attempts(job_id)[0].retry_in_ms == 200


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (404, "UpstreamNotFound"),
        (410, "UpstreamNotFound"),
        (401, "UpstreamForbidden"),
        (403, "UpstreamForbidden"),
        (400, "UpstreamRejected"),
        (409, "UpstreamRejected"),
        (422, "UpstreamRejected"),
        (418, "UpstreamRejected"),
    ],
)
def test_a_4xx_skips_the_job_after_one_attempt_without_a_dead_letter(
    stack, upstream, status, error_type
):
    upstream.script("PUT", "/billing/customers/c_6", {"status": status, "body": {"why": "no"}})
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_6", max_attempts=4)
    job = stack.wait_status(job_id, "failed")
    assert job.attempts == 1 and job.error_type == error_type
    assert decisions(stack, job_id) == [("failed", "skip", error_type)]
    assert services.queue_messages(stack.vhost, "sync.XQ") == []


def test_an_unreachable_upstream_is_retried(stack):
    stack.start_worker(crm_url=f"http://127.0.0.1:{free_port()}/crm")
    job_id = stack.submit(type="customer_sync", entity_id="c_7", max_attempts=2)
    job = stack.wait_status(job_id, "dead")
    assert job.error_type == "UpstreamUnavailable" and "cannot reach CRM" in job.error


def test_a_hung_upstream_times_out_and_is_retried(stack, upstream):
    upstream.script(
        "GET", "/crm/customers/c_8", {"status": 200, "body": {"id": "c_8"}, "delay_s": 1.5}
    )
    stack.start_worker(upstream_timeout_s=0.3)
    job_id = stack.submit(type="customer_sync", entity_id="c_8")
    stack.wait_status(job_id, "succeeded")
    assert decisions(stack, job_id)[0] == ("failed", "retry", "UpstreamUnavailable")
    assert "timeout" in stack.attempts(job_id)[0].error


def test_an_attempt_over_its_time_limit_is_retried(stack, upstream):
    # Dramatiq interrupts the thread when it next runs Python code, i.e. once the call returns.
    upstream.script(
        "GET", "/crm/customers/c_9", {"status": 200, "body": {"id": "c_9"}, "delay_s": 2}
    )
    stack.start_worker(upstream_timeout_s=10)
    job_id = stack.submit(type="customer_sync", entity_id="c_9", timeout_s=1)
    stack.wait_status(job_id, "succeeded", timeout=30)
    first = stack.attempts(job_id)[0]
    assert (first.decision, first.error_type) == ("retry", "TimeLimitExceeded")
    assert (
        len(upstream.calls(path="/billing/customers/c_9")) == 1
    )  # the first attempt wrote nothing


INVALID_INPUT = [
    ({"type": "customer_sync", "entity_id": "c_10", "payload": {"unexpected": 1}}, "unexpected"),
    ({"type": "customer_sync"}, "entity_id is required"),
    ({"type": "directory_sync", "payload": {"start_page": "first"}}, "start_page"),
]


@pytest.mark.parametrize(("body", "message"), INVALID_INPUT)
def test_input_the_job_type_refuses_gets_422_at_submission(stack, body, message):
    single = stack.client.simulate_post("/v1/jobs", json=body, headers=stack.headers)
    assert single.status_code == 422, single.text
    assert message in single.json["description"] and body["type"] in single.json["description"]
    fine = {"type": "invoice_sync", "entity_id": "i_1"}
    batch = stack.client.simulate_post(
        "/v1/jobs/batch", json={"jobs": [body, fine]}, headers=stack.headers
    )
    [refused, accepted] = batch.json["items"]
    assert (refused["status"], accepted["status"]) == (422, 202)
    assert message in refused["description"]
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


@pytest.mark.parametrize(("body", "message"), INVALID_INPUT)
def test_invalid_input_that_reaches_a_worker_fails_without_calling_upstream(
    stack, upstream, body, message
):
    # A row the API did not check (written before the check, or by another path): the worker
    # checks again before the code runs. The relay publishes it.
    created = add_queued(
        stack.sessions,
        type=body["type"],
        entity_id=body.get("entity_id"),
        payload=body.get("payload", {}),
    )
    stack.start_worker()
    job = stack.wait_status(str(created), "failed")
    assert job.error_type == "InvalidPayload" and message in job.error
    assert decisions(stack, str(created)) == [("failed", "skip", "InvalidPayload")]
    assert upstream.calls() == []


def test_a_bug_in_job_code_is_retried_under_its_class_name(stack):
    stack.start_worker()
    job_id = stack.submit(type="bug_for_test", max_attempts=2)
    job = stack.wait_status(job_id, "dead")
    assert job.error_type == "ZeroDivisionError"
    assert [d[1] for d in decisions(stack, job_id)] == ["retry", "dead"]


def test_a_crm_page_with_an_item_without_id_is_retried_as_unavailable(stack, upstream):
    upstream.script(
        "GET",
        "/crm/customers",
        {"status": 200, "body": {"items": [42], "next_page": None}},
        repeat_last=True,
    )
    stack.start_worker()
    job_id = stack.submit(type="directory_sync", max_attempts=1)
    job = stack.wait_status(job_id, "dead")
    assert job.error_type == "UpstreamUnavailable" and "without an id" in job.error


def test_a_crm_record_that_is_not_an_object_is_unavailable_and_never_reaches_billing(
    stack, upstream
):
    upstream.script("GET", "/crm/customers/c_list", {"status": 200, "body": [1, 2]})
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_list", max_attempts=1)
    job = stack.wait_status(job_id, "dead")
    assert job.error_type == "UpstreamUnavailable" and "not a JSON object" in job.error
    assert upstream.calls(method="PUT") == []


def test_max_attempts_defaults_to_the_configuration(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_11", run_at=LATER)
    assert stack.job(job_id).max_attempts == 4
