"""Error reports from the real `courier worker`: SENTRY_DSN read at its entry point."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.polling import wait_for
from tests.support.sentry_receiver import SentryReceiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def sentry() -> Iterator[SentryReceiver]:
    """A local Sentry the worker processes report to."""
    receiver = SentryReceiver()
    yield receiver
    receiver.stop()


def test_a_worker_process_reports_a_bug_once_when_its_job_is_dead(deployment, sentry, upstream):
    deployment.env["COURIER_JOB_MODULES"] = "tests.support.job_types"
    deployment.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    deployment.env["SENTRY_DSN"] = sentry.dsn
    deployment.env["SENTRY_ENVIRONMENT"] = "e2e"
    upstream.script("GET", "/crm/customers/c_1", {"status": 503}, repeat_last=True)
    deployment.start_api()
    group = deployment.start_worker(threads=2)
    headers = deployment.token()
    with deployment.http() as http:
        ids = [
            http.post("/v1/jobs", json=body, headers=headers).json()["id"]
            for body in (
                {"type": "bug_for_test", "max_attempts": 3},
                {"type": "customer_sync", "entity_id": "c_1", "max_attempts": 3},
            )
        ]
    for job_id in ids:
        wait_for(
            lambda job_id=job_id: deployment.job(job_id)["status"] == "dead",
            timeout=60,
            what=f"job {job_id} to be dead",
        )
    wait_for(sentry.events, timeout=30, what="the report of the dead job")
    assert group.terminate() == 0
    [event] = sentry.events()
    assert event["tags"]["job_id"] == ids[0] and event["tags"]["attempts"] == "3"
    assert event["environment"] == "e2e"
    assert event["exception"]["values"][-1]["type"] == "ZeroDivisionError"


def test_a_dsn_sentry_cannot_use_stops_the_worker_at_start_in_one_line(deployment):
    deployment.env["SENTRY_DSN"] = "https://no-project-here"
    done = deployment.run("worker", "--no-restart")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: SENTRY_DSN: ")
    assert len(done.stderr.strip().splitlines()) == 1
