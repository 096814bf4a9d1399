"""Purging a queue: its waiting jobs are cancelled in SQL, audited, and its RabbitMQ queue is
emptied; a job accepted during a purge is either cancelled or runs, never lost."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta

import pytest
from dramatiq.brokers.stub import StubBroker
from falcon import testing
from sqlalchemy import func, select

from courier.settings import Settings
from courier.wsgi import app_for
from store import tokens
from store.db import make_sessionmaker
from store.models import AuditEntry, Job
from store.types import utcnow
from tests.support.polling import wait_for
from tests.support.records import insert_jobs

pytestmark = pytest.mark.integration

MOVED = (("customer_sync", "low"),)


@pytest.fixture
def job_queues() -> tuple[tuple[str, str], ...]:
    return MOVED


def purge(client: testing.TestClient, queue: str, headers: dict, body: dict | None = None):
    return client.simulate_post(f"/v1/queues/{queue}/purge", json=body, headers=headers)


def test_a_purge_cancels_the_waiting_jobs_of_its_queue_audited_and_empties_it(stack, upstream):
    waiting = [stack.submit(type="customer_sync", entity_id=f"c_{i}") for i in range(3)]
    elsewhere = stack.submit(type="invoice_sync", entity_id="i_1")
    later = utcnow() + timedelta(hours=1)
    [retrying] = insert_jobs(
        stack.engine, 1, queue="low", status="retrying", attempts=1, next_attempt_at=later
    )
    [running] = insert_jobs(
        stack.engine, 1, queue="low", status="running", attempts=1, lease_expires_at=later
    )
    wait_for(lambda: stack.ready("low") == 3, what="three messages in low")
    operator = stack.token("ops", "operator")

    response = purge(stack.client, "low", operator, {"reason": "a bad import"})

    assert response.status_code == 200, response.text
    assert response.json == {"queue": "low", "cancelled": 4}
    assert stack.ready("low") == 0 and stack.ready("sync") == 1
    for job_id in [*waiting, retrying]:
        job = stack.job(job_id)
        assert (job.status, job.finished_at is not None) == ("cancelled", True)
    assert stack.job(running).status == "running"  # left to finish
    assert stack.job(elsewhere).status == "queued"
    with stack.sessions() as session:
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "queue.purge"))
    assert entry.details == {"queue": "low", "cancelled": 4}
    assert entry.reason == "a bad import" and entry.actor.startswith("operator:ops")
    stack.start_worker()
    stack.wait_status(elsewhere, "succeeded")
    assert stack.job(waiting[0]).attempts == 0


def test_a_purge_of_an_empty_queue_cancels_nothing(stack):
    response = purge(stack.client, "low", stack.token("ops", "operator"))
    assert (response.status_code, response.json) == (200, {"queue": "low", "cancelled": 0})


def test_a_purge_needs_an_operator_and_a_queue_some_job_type_runs_on(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_kept")
    assert purge(stack.client, "low", stack.headers).status_code == 403
    operator = stack.token("ops", "operator")
    unknown = purge(stack.client, "nowhere", operator)
    assert unknown.status_code == 422, unknown.text
    assert unknown.json["errors"][0]["field"] == "queue"
    assert "low" in unknown.json["description"] and "sync" in unknown.json["description"]
    extra = purge(stack.client, "low", operator, {"reason": "x", "force": True})
    assert extra.status_code == 422
    assert stack.job(job_id).status == "queued"


def test_jobs_accepted_while_a_queue_is_purged_are_either_cancelled_or_run(stack, upstream):
    # One worker thread, so a backlog builds behind the submitters; the reconciler is kept
    # out of the way, so nothing here is healed by it: the order of the purge must do.
    stack.start_worker(threads=1, reconcile_interval_s=3600)
    submitted: list[str] = []
    stop = threading.Event()
    numbers = itertools.count()

    def submit_continuously() -> None:
        headers = stack.token()
        while not stop.is_set():
            submitted.append(
                stack.submit(type="customer_sync", entity_id=f"c_{next(numbers)}", headers=headers)
            )

    submitters = [threading.Thread(target=submit_continuously) for _ in range(4)]
    for thread in submitters:
        thread.start()
    operator = stack.token("ops", "operator")
    cancelled = 0
    try:
        for _ in range(5):
            wanted = len(submitted) + 20
            wait_for(lambda w=wanted: len(submitted) >= w, what="more submissions")
            response = purge(stack.client, "low", operator)
            assert response.status_code == 200, response.text
            cancelled += response.json["cancelled"]
    finally:
        stop.set()
        for thread in submitters:
            thread.join(30)

    def statuses() -> dict[str, int]:
        with stack.sessions() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {status: n for status, n in rows}

    wait_for(
        lambda: set(statuses()) <= {"cancelled", "succeeded"},
        timeout=60,
        interval=0.5,
        what=lambda: f"every job cancelled or succeeded (seen {statuses()})",
    )
    final = statuses()
    assert sum(final.values()) == len(submitted)
    assert final["cancelled"] == cancelled > 0
    assert final.get("succeeded", 0) > 0


def test_the_in_memory_broker_is_purged_too(sqlite_engine):
    broker = StubBroker(middleware=[])
    broker.declare_queue("low")  # as `courier dev` declares every job type's queue
    settings = Settings(
        database_url=str(sqlite_engine.url), broker_url="memory://", job_queues=MOVED
    )
    sessions = make_sessionmaker(sqlite_engine)
    client = testing.TestClient(app_for(settings, broker=broker, sessions=sessions))
    with sessions.begin() as session:
        headers = {"Authorization": f"Bearer {tokens.create(session, tenant='a', role='client')}"}
        operator = {
            "Authorization": f"Bearer {tokens.create(session, tenant='ops', role='operator')}"
        }
    for i in range(3):
        created = client.simulate_post(
            "/v1/jobs", json={"type": "customer_sync", "entity_id": f"c_{i}"}, headers=headers
        )
        assert created.status_code == 202, created.text
    wait_for(lambda: broker.queues["low"].qsize() == 3, what="three messages in memory")
    response = purge(client, "low", operator)
    assert (response.status_code, response.json) == (200, {"queue": "low", "cancelled": 3})
    assert broker.queues["low"].qsize() == 0


def test_the_purge_is_described_in_the_openapi_document(stack):
    document = stack.client.simulate_get("/openapi.json").json
    purging = document["paths"]["/v1/queues/{queue}/purge"]["post"]
    [queue] = purging["parameters"]
    assert (queue["name"], queue["in"], queue["schema"]) == ("queue", "path", {"type": "string"})
    assert purging["requestBody"]["required"] is False
    result = document["components"]["schemas"]["PurgeResult"]["properties"]
    assert set(result) == {"queue", "cancelled"}
