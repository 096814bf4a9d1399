"""Upstreams that hang, crawl, time out the attempt or rate-limit: retried, never stuck."""

from __future__ import annotations

import pytest

from tests.faults.harness import OK, slow

pytestmark = pytest.mark.faults

CUSTOMER = {"id": "c", "name": "Customer", "email": "c@example.com"}


def test_hung_and_slow_upstreams_are_timed_out_retried_or_buried_and_never_block_the_workers(
    deployment, upstream
):
    deployment.env["COURIER_UPSTREAM_TIMEOUT_S"] = "2"
    # Slow but within the timeout: succeeds first time.
    upstream.script("PUT", "/billing/customers/c_slow_*", slow(0.5), repeat_last=True)
    # Hangs (past the 2 s timeout) twice, then answers.
    upstream.script("GET", "/crm/customers/c_hung", slow(4, body=CUSTOMER), slow(4, body=CUSTOMER))
    # Hangs every time.
    upstream.script(
        "GET", "/crm/customers/c_hung_forever", slow(4, body=CUSTOMER), repeat_last=True
    )
    # Answers within the timeout, but the attempt's own time limit (1 s) runs out first.
    upstream.script("GET", "/crm/customers/c_over_time", slow(1.5, body=CUSTOMER), repeat_last=True)
    upstream.script("PUT", "/billing/customers/c_over_time", slow(1.5), repeat_last=True)
    # Rate-limited once, asked to come back in a second.
    upstream.script(
        "PUT", "/billing/customers/c_limited", {"status": 429, "headers": {"Retry-After": "1"}}, OK
    )
    deployment.start_api()
    deployment.start_worker(processes=1, threads=4)

    [hung, forever, over_time, limited] = deployment.submit_all(
        [
            {"type": "customer_sync", "entity_id": "c_hung", "max_attempts": 4},
            {"type": "customer_sync", "entity_id": "c_hung_forever", "max_attempts": 2},
            {
                "type": "customer_sync",
                "entity_id": "c_over_time",
                "max_attempts": 2,
                "timeout_s": 1,
            },
            {"type": "customer_sync", "entity_id": "c_limited"},
        ]
    )
    slow_ones = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_slow_{i}"} for i in range(12)
    )
    report = deployment.settle_and_check(
        [hung, forever, over_time, limited, *slow_ones], timeout=90
    )

    def trail(job_id):
        return [(a["status"], a["error_type"]) for a in report.attempts[job_id]]

    assert report.jobs[hung]["status"] == "succeeded"
    assert trail(hung) == [("failed", "UpstreamUnavailable")] * 2 + [("succeeded", None)]
    assert "timeout" in report.attempts[hung][0]["error"]

    assert report.jobs[forever]["status"] == "dead"
    assert report.jobs[forever]["error_type"] == "UpstreamUnavailable"
    assert trail(forever) == [("failed", "UpstreamUnavailable")] * 2

    assert report.jobs[over_time]["status"] == "dead"
    assert trail(over_time) == [("failed", "TimeLimitExceeded")] * 2

    assert report.jobs[limited]["status"] == "succeeded"
    assert trail(limited) == [("failed", "UpstreamRateLimited"), ("succeeded", None)]
    assert 0 < report.attempts[limited][0]["retry_in_ms"] <= 500  # Retry-After, capped

    for job_id in slow_ones:
        assert trail(job_id) == [("succeeded", None)]
    # Hung calls cost their timeout, not a worker: nothing was abandoned or left running.
    assert not [a for rows in report.attempts.values() for a in rows if a["status"] == "abandoned"]


def test_an_upstream_error_body_holding_nul_is_recorded_with_a_replacement_character(
    deployment, upstream
):
    # PostgreSQL text cannot hold NUL: the error must still be recorded as the attempt's own,
    # not lost with the whole finish (the attempt then looked abandoned by its worker).
    upstream.script("GET", "/crm/customers/c_nul_retried", {"status": 500, "body": "bad\x00byte"})
    upstream.script("GET", "/crm/customers/c_nul_refused", {"status": 400, "body": "no\x00pe"})
    deployment.start_api()
    deployment.start_worker(processes=1, threads=2)
    retried, refused = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_nul_{kind}"} for kind in ("retried", "refused")
    )
    report = deployment.settle_and_check([retried, refused], timeout=60)

    first, second = report.attempts[retried]
    assert (first["status"], first["error_type"]) == ("failed", "UpstreamUnavailable")
    assert first["error"] == "500 from CRM GET /customers/c_nul_retried: bad\ufffdbyte"
    assert (second["status"], report.jobs[retried]["status"]) == ("succeeded", "succeeded")

    [attempt] = report.attempts[refused]
    job = report.jobs[refused]
    assert (job["status"], job["error_type"]) == ("failed", "UpstreamRejected")
    assert (
        job["error"] == attempt["error"] == "400 from CRM GET /customers/c_nul_refused: no\ufffdpe"
    )
