"""Error reports: a bug is sent to Sentry once, when its job is dead; upstream failures never.

Sentry is a local receiver of its envelope protocol (tests.support.sentry_receiver), the
client pointed at it through SENTRY_DSN as a worker's entry point does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk

from middleware import error_reports
from store import errors, transitions
from store.states import Status
from tests.support.polling import wait_for
from tests.support.records import add_queued
from tests.support.sentry_receiver import SentryReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def sentry() -> Iterator[SentryReceiver]:
    """A local Sentry, reported to for the length of one test (Sentry's client is global)."""
    receiver = SentryReceiver()
    environ = {
        "SENTRY_DSN": receiver.dsn,
        "SENTRY_ENVIRONMENT": "staging",
        "SENTRY_RELEASE": "courier@test",
    }
    assert error_reports.start(environ)
    yield receiver
    error_reports.stop()
    receiver.stop()


def settled(stack: Any) -> None:
    """Stop the workers (their attempts' hooks have all run then) and send what is queued."""
    stack.stop_workers()
    sentry_sdk.flush(timeout=10)


def test_a_bug_is_reported_once_when_its_job_is_dead_with_the_job_in_its_tags(sentry, stack):
    stack.start_worker(min_backoff_ms=1500, max_backoff_ms=1500)
    job_id = stack.submit(type="bug_for_test", max_attempts=3)

    wait_for(lambda: stack.job(job_id).attempts == 2 and stack.job(job_id).status == "retrying")
    sentry_sdk.flush(timeout=10)
    assert sentry.events() == [], "reported before the job was dead"

    job = stack.wait_status(job_id, "dead")
    wait_for(sentry.events, timeout=20, what="the report of the dead job")
    settled(stack)
    [event] = sentry.events()
    assert event["tags"] == {
        "job_id": job_id,
        "job_type": "bug_for_test",
        "tenant": "acme",
        "attempts": "3",
        "correlation_id": job.correlation_id,
    }
    assert (event["environment"], event["release"]) == ("staging", "courier@test")
    assert event["contexts"]["job"]["max_attempts"] == 3
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ZeroDivisionError"
    frames = exception["stacktrace"]["frames"]
    assert frames[-1]["function"] == "bug_for_test"
    assert frames[-1]["filename"].endswith("job_types.py")
    # Frames carry no local variables: they would hold the job's payload.
    assert not any("vars" in frame for frame in frames)


def test_upstream_failures_until_the_job_is_dead_are_not_reported(sentry, stack, upstream):
    upstream.script("GET", "/crm/customers/c_1", {"status": 503}, repeat_last=True)
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_1", max_attempts=3)
    job = stack.wait_status(job_id, "dead")
    assert (job.attempts, job.error_type) == (3, "UpstreamUnavailable")
    settled(stack)
    assert sentry.events() == []


def test_a_bug_a_retry_got_past_is_not_reported(sentry, stack):
    stack.start_worker()
    job_id = stack.submit(type="bug_once_for_test", max_attempts=3)
    job = stack.wait_status(job_id, "succeeded")
    assert job.attempts == 2
    settled(stack)
    assert sentry.events() == []


def test_a_finish_tried_again_after_its_commit_answer_was_lost_reports_once(
    sentry, stack, monkeypatch
):
    worker = stack.start_worker()
    group_commit = worker.attempts.group_commit
    write, lost = group_commit.finish, []

    def commit_then_lose_the_answer(claim, outcome, *calls):
        status = write(claim, outcome, *calls)
        if outcome.job_status == Status.DEAD and not lost:
            lost.append(status)
            raise errors.DatabaseUnavailable("database unavailable: connection lost at commit")
        return status

    monkeypatch.setattr(group_commit, "finish", commit_then_lose_the_answer)
    job_id = stack.submit(type="bug_for_test", max_attempts=1)
    stack.wait_status(job_id, "dead")
    wait_for(sentry.events, timeout=20, what="the report of the dead job")
    settled(stack)
    assert lost == ["dead"], "the first finish must have committed"
    assert [e["tags"]["job_id"] for e in sentry.events()] == [job_id]


def test_a_job_the_reaper_buries_after_a_crash_is_not_reported(sentry, stack):
    # No process holds an exception for an attempt whose worker vanished: what is known is
    # in the job's error (WorkerLost) and the dead-letter queue.
    job_id = add_queued(stack.sessions, type="bug_for_test", max_attempts=1)
    with stack.engine.begin() as db:
        assert transitions.claim(db, [job_id], worker="gone:1", lease_s=1)
    stack.start_worker()
    job = stack.wait_status(job_id, "dead")
    assert job.error_type == "WorkerLost"
    settled(stack)
    assert sentry.events() == []


def test_without_a_dsn_sentry_is_never_started(stack):
    assert not error_reports.start({})
    assert not error_reports.start({"SENTRY_DSN": " "})
    stack.start_worker()
    job_id = stack.submit(type="bug_for_test", max_attempts=1)
    stack.wait_status(job_id, "dead")
    stack.stop_workers()
    assert not sentry_sdk.get_client().is_active()


def test_without_a_dsn_a_worker_process_does_not_load_sentry():
    # What `dramatiq courier.worker` imports, in a fresh interpreter: this one has Sentry.
    loads = "import courier.broker, courier.cli, middleware.error_reports, sys;"
    loads += " print('sentry_sdk' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"}
    done = subprocess.run([sys.executable, "-c", loads], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_a_dsn_sentry_cannot_use_is_refused_with_the_variable_named():
    with pytest.raises(error_reports.BadReportingSettings, match=r"^SENTRY_DSN: "):
        error_reports.check({"SENTRY_DSN": "not a dsn"})
    assert not sentry_sdk.get_client().is_active()
