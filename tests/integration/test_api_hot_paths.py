"""The API's hot paths: tokens checked on every request, Core reads and inserts, batched marks."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from delivery.outbox import PublishedMarks
from store import errors, submissions, tokens, transitions
from store.models import Job
from store.outbox import JobMessage
from store.submissions import NewJob
from tests.support.polling import wait_for
from tests.support.times import LATER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def new_job(entity_id: str | None = None) -> NewJob:
    return NewJob(
        tenant="acme",
        type="customer_sync",
        queue="sync",
        entity_id=entity_id,
        max_attempts=4,
        timeout_s=60,
    )


def test_a_revoked_token_is_refused_by_the_next_request(stack):
    with stack.sessions.begin() as session:
        secret = tokens.create(session, tenant="acme")
    headers = {"Authorization": f"Bearer {secret}"}
    job_id = stack.submit(type="customer_sync", entity_id="c_rev", run_at=LATER, headers=headers)
    assert stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=headers).status_code == 200
    with stack.sessions.begin() as session:
        assert tokens.revoke(session, secret)
    assert stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=headers).status_code == 401
    refused = stack.client.simulate_post(
        "/v1/jobs", json={"type": "customer_sync", "entity_id": "c_rev2"}, headers=headers
    )
    assert refused.status_code == 401


def test_reading_a_job_is_fenced_by_tenant_and_open_to_operators(stack):
    acme, globex = stack.token("acme"), stack.token("globex")
    operator = stack.token("ops", role="operator")
    body = {
        "type": "directory_sync",
        "entity_id": "c_read",
        "payload": {"start_page": 2},
        "run_at": LATER,
    }
    response = stack.client.simulate_post("/v1/jobs", json=body, headers=acme)
    assert response.status_code == 202, response.text
    created = response.json
    path = f"/v1/jobs/{created['id']}"
    assert stack.client.simulate_get(path, headers=acme).json == created
    assert stack.client.simulate_get(path, headers=operator).json == created
    assert stack.client.simulate_get(path, headers=globex).status_code == 404
    assert stack.client.simulate_get(f"/v1/jobs/{uuid.uuid4()}", headers=acme).status_code == 404
    assert created["run_at"] == LATER and created["created_at"].endswith("Z")


def test_an_accepted_job_is_marked_published_shortly_after(stack):
    headers = stack.token()
    job_id = stack.submit(type="customer_sync", entity_id="c_mark", headers=headers)
    wait_for(lambda: stack.job(job_id).published_at is not None, timeout=5, what="the mark")


def test_close_writes_the_marks_still_queued(stack):
    with stack.engine.begin() as db:
        job, _ = submissions.create_job(db, new_job("c_close"))
    marker = PublishedMarks(stack.engine, interval_s=3600)
    marker.add([JobMessage.of(job).state])
    assert stack.job(job.id).published_at is None
    marker.close()
    assert stack.job(job.id).published_at is not None


def test_a_late_mark_does_not_apply_to_a_later_attempt(stack):
    with stack.engine.begin() as db:
        job, _ = submissions.create_job(db, new_job("c_late"))
    marker = PublishedMarks(stack.engine, interval_s=3600)
    marker.add([JobMessage.of(job).state])  # built for attempts = 0
    # Meanwhile a worker claimed it, the attempt failed and a retry waits to be published.
    with stack.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status="retrying", attempts=1))
    marker.close()
    assert stack.job(job.id).published_at is None


def test_a_mark_skips_a_job_whose_row_is_locked_instead_of_waiting_for_it(stack):
    with stack.engine.begin() as db:
        held, _ = submissions.create_job(db, new_job("c_held"))
        free, _ = submissions.create_job(db, new_job("c_free"))
    with stack.engine.connect() as worker:  # as a worker's claim holds the row
        worker.execute(select(Job.id).where(Job.id == held.id).with_for_update())
        with stack.engine.begin() as db:
            # Waiting for the row would fail here, not hang the test.
            db.execute(text("SET LOCAL lock_timeout = '3s'"))
            transitions.mark_published(db, [JobMessage.of(held).state, JobMessage.of(free).state])
        worker.rollback()
    assert stack.job(free.id).published_at is not None
    assert stack.job(held.id).published_at is None  # the relay's, after the grace


def test_marks_queued_at_exit_are_written(stack):
    with stack.engine.begin() as db:
        job, _ = submissions.create_job(db, new_job("c_exit"))
    # A process that queues a mark and exits before the marker's interval is up.
    script = (
        "import sys, uuid\n"
        "from delivery.outbox import PublishedMarks\n"
        "from store.db import make_engine\n"
        "marker = PublishedMarks(make_engine(sys.argv[1]), interval_s=3600)\n"
        "marker.add([(uuid.UUID(sys.argv[2]), 0)])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, stack.settings.database_url, str(job.id)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert stack.job(job.id).published_at is not None


def test_create_job_explains_conflicts_and_leaves_the_transaction_usable(stack):
    with stack.sessions.begin() as session:
        first, created = submissions.create_job(session, new_job("c_dup"))
        assert created
        with pytest.raises(errors.DuplicateActiveJob) as refused:
            submissions.create_job(session, new_job("c_dup"))
        assert refused.value.existing_job_id == first.id
        other, created = submissions.create_job(session, new_job("c_other"))  # still usable
        assert created
    assert stack.job(other.id).status == "queued"
