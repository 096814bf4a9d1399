"""An attempt hung past its time limit while its worker process stays alive and heartbeating:
abandoned and retried, and the hung thread's late finish changes nothing."""

from __future__ import annotations

import pytest

from tests.faults.harness import slow
from tests.support.polling import wait_for

pytestmark = pytest.mark.faults

CUSTOMER = {"id": "c_hung", "name": "Hung", "email": "h@example.com"}
#: The CRM's first answer takes this long; the time limit (1 s) cannot interrupt a thread
#: blocked reading the socket, and the request's own timeout is longer still.
HANG_S = 12
GRACE_S = 1


def test_an_attempt_hung_past_its_time_limit_is_abandoned_and_retried_though_it_heartbeats(
    deployment, upstream
):
    upstream.script("GET", "/crm/customers/c_hung", slow(HANG_S, body=CUSTOMER))  # then answers
    deployment.env.update(
        COURIER_UPSTREAM_TIMEOUT_S=str(HANG_S * 3), COURIER_STUCK_GRACE_S=str(GRACE_S)
    )
    deployment.start_api()
    group = deployment.start_worker(processes=1, threads=2)
    [job_id] = deployment.submit_all(
        [{"type": "customer_sync", "entity_id": "c_hung", "timeout_s": 1}]
    )

    # Time limit 1 s + grace 1 s + a reaper interval (0.5 s): long before the CRM answers.
    first = wait_for(
        lambda: [a for a in deployment.attempts(job_id)[:1] if a["status"] != "running"],
        timeout=HANG_S - 4,
        what="the hung attempt to be abandoned while the CRM still holds its call",
    )[0]
    assert (first["status"], first["decision"], first["error_type"]) == (
        "abandoned",
        "retry",
        "TimeLimitExceeded",
    )
    # Its worker was alive all along: the lease had been renewed, not lost. The reaper logs
    # that after its commit, and the line reaches the log through Dramatiq's parent process.
    wait_for(
        lambda: group.log_lines("hung past its time limit"),
        timeout=10,
        what="the reaper's line saying the attempt hung past its time limit",
    )

    job = deployment.wait_status(job_id, "succeeded", "failed", "dead", timeout=20)
    assert (job["status"], job["attempts"]) == ("succeeded", 2)

    # The CRM finally answers the hung thread; its finish is fenced off.
    wait_for(
        lambda: [
            line
            for line in group.log_lines(job_id)
            if '"outcome": "fenced"' in line and '"attempt": 1' in line
        ],
        timeout=HANG_S + 10,
        what="the hung attempt's late finish to be fenced",
    )
    report = deployment.settle_and_check([job_id], timeout=30)
    after = report.jobs[job_id]
    for column in ("status", "attempts", "finished_at", "result", "error_type", "error"):
        assert after[column] == job[column], column
    assert [(a["status"], a["error_type"]) for a in report.attempts[job_id]] == [
        ("abandoned", "TimeLimitExceeded"),
        ("succeeded", None),
    ]
    assert len(upstream.calls(path="/billing/customers/c_hung")) == 1
