"""Tenant quotas: a submission that would give a tenant more than COURIER_TENANT_MAX_ACTIVE
active jobs answers 429 with Retry-After; a batch accepts what fits, in order."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from courier.settings import Settings
from store import occurrences, quotas
from store.db import make_sessionmaker
from tests.integration.test_scheduler import add_schedule, aligned, db_now, move, runs_of
from tests.support.polling import wait_for
from tests.support.records import insert_jobs
from tests.support.stack import Stack
from tests.support.times import LATER

pytestmark = pytest.mark.integration

QUOTA = 5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(tenant_max_active=QUOTA)


def waiting(entity: str, **fields: object) -> dict[str, object]:
    """A job that stays queued (it runs in 300 days)."""
    return {"type": "customer_sync", "entity_id": entity, "run_at": LATER, **fields}


def test_a_submission_over_the_quota_answers_429_with_retry_after(stack: Stack):
    headers = stack.token("acme")
    for i in range(QUOTA):
        assert stack.post("/v1/jobs", waiting(f"c{i}"), headers)[0] == 202

    response = stack.client.simulate_post("/v1/jobs", json=waiting("over"), headers=headers)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "5"
    assert set(response.json) == {"title", "description"}
    assert "quota" in response.json["description"]


def test_another_tenant_is_not_held_to_a_full_tenants_quota(stack: Stack):
    full, other = stack.token("full"), stack.token("other")
    for i in range(QUOTA):
        assert stack.post("/v1/jobs", waiting(f"c{i}"), full)[0] == 202

    assert stack.post("/v1/jobs", waiting("c0"), other)[0] == 202


def test_a_batch_accepts_jobs_in_order_up_to_the_quota_and_answers_429_for_the_rest(
    stack: Stack,
):
    headers = stack.token("acme")
    for i in range(3):
        assert stack.post("/v1/jobs", waiting(f"pre{i}"), headers)[0] == 202
    jobs = [waiting("b0"), {"type": "no_such_type"}, waiting("b1"), waiting("b2"), waiting("b3")]

    response = stack.client.simulate_post("/v1/jobs/batch", json={"jobs": jobs}, headers=headers)

    assert response.status_code == 207
    statuses = [item["status"] for item in response.json["items"]]
    assert statuses == [202, 422, 202, 429, 429]
    assert response.headers["Retry-After"] == "5"
    assert set(response.json["items"][3]) == {"status", "title", "description"}


def test_a_repeated_request_with_its_idempotency_key_gets_its_job_at_the_quota(stack: Stack):
    headers = stack.token("acme")
    keyed = {**headers, "Idempotency-Key": "k-1"}
    status, first = stack.post("/v1/jobs", waiting("c0"), keyed)
    assert status == 202
    for i in range(1, QUOTA):
        assert stack.post("/v1/jobs", waiting(f"c{i}"), headers)[0] == 202

    status, again = stack.post("/v1/jobs", waiting("c0"), keyed)

    assert status == 200
    assert json.loads(again)["id"] == json.loads(first)["id"]


def test_finished_jobs_make_room_under_the_quota(stack: Stack):
    headers = stack.token("acme")
    ids = []
    for i in range(QUOTA):
        status, text = stack.post("/v1/jobs", waiting(f"c{i}"), headers)
        assert status == 202
        ids.append(json.loads(text)["id"])
    assert stack.post("/v1/jobs", waiting("next"), headers)[0] == 429

    assert stack.post(f"/v1/jobs/{ids[0]}/cancel", {}, headers)[0] == 200

    wait_for(
        lambda: stack.post("/v1/jobs", waiting("next"), headers)[0] == 202,
        timeout=10,
        interval=0.1,
        what="room after a cancel",
    )


def test_over_quota_counts_queued_running_and_retrying_jobs_only(db_engine):
    for status in ("queued", "running", "retrying", "succeeded", "dead", "cancelled"):
        insert_jobs(db_engine, 2, tenant="acme", status=status)
    with db_engine.connect() as db:
        assert quotas.active_jobs(db, "acme", up_to=100) == 6
        assert quotas.active_jobs(db, "acme", up_to=4) == 4
        assert not quotas.over_quota(db, "acme", max_active=7)
        assert quotas.over_quota(db, "acme", max_active=6)
        assert quotas.over_quota(db, "acme", extra=2, max_active=7)
        assert not quotas.over_quota(db, "other", max_active=1)


def test_a_schedules_occurrence_over_the_quota_is_recorded_skipped(
    engine: Engine, sessions: sessionmaker[Session]
):
    insert_jobs(engine, QUOTA, tenant="acme")
    sid = add_schedule(sessions, interval_s=10, overlap="allow")
    move(sessions, sid, aligned(db_now(sessions), 10) - timedelta(seconds=20))

    with make_sessionmaker(engine).begin() as session:
        fired, _ = occurrences.fire_due(
            session, queues={"directory_sync": "sync"}, timeout_s=60, max_active=QUOTA
        )

    assert fired == []
    runs = runs_of(sessions, sid)
    assert runs and all(r.outcome == "skipped" for r in runs)


def test_the_openapi_document_shows_the_quota_answers(stack):
    document = stack.client.simulate_get("/openapi.json").json
    paths = document["paths"]
    for path in ("/v1/jobs", "/v1/jobs/{job_id}/replay", "/v1/schedules/{schedule_id}/trigger"):
        assert "429" in paths[path]["post"]["responses"], path
    item = document["components"]["schemas"]["BatchItem"]["properties"]["status"]
    assert 429 in item["enum"]
