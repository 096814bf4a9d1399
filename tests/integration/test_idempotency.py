"""Idempotency keys and active-job dedup hold under concurrency (enforced by the database)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from store.models import Job
from tests.support.times import LATER

pytestmark = pytest.mark.integration


def jobs_in_db(stack) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_the_same_key_and_body_returns_the_same_job(stack):
    headers = {**stack.token(), "Idempotency-Key": "k-1"}
    body = {"type": "customer_sync", "entity_id": "c_1", "run_at": LATER}
    first = stack.client.simulate_post("/v1/jobs", json=body, headers=headers)
    again = stack.client.simulate_post("/v1/jobs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json["id"] == again.json["id"]
    assert jobs_in_db(stack) == 1


def test_the_same_key_with_another_body_is_422(stack):
    headers = {**stack.token(), "Idempotency-Key": "k-2"}
    stack.client.simulate_post(
        "/v1/jobs",
        json={"type": "customer_sync", "entity_id": "c_1", "run_at": LATER},
        headers=headers,
    )
    other = stack.client.simulate_post(
        "/v1/jobs", json={"type": "customer_sync", "entity_id": "c_2"}, headers=headers
    )
    assert other.status_code == 422
    assert jobs_in_db(stack) == 1


def test_keys_are_scoped_by_tenant(stack):
    body = {"type": "customer_sync", "entity_id": "c_1", "run_at": LATER}
    a = stack.client.simulate_post(
        "/v1/jobs", json=body, headers={**stack.token("a"), "Idempotency-Key": "same"}
    )
    b = stack.client.simulate_post(
        "/v1/jobs", json=body, headers={**stack.token("b"), "Idempotency-Key": "same"}
    )
    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json["id"] != b.json["id"]


def test_an_active_duplicate_is_409_with_the_existing_id(stack):
    headers = stack.token()
    body = {"type": "customer_sync", "entity_id": "c_1", "run_at": LATER}
    first = stack.client.simulate_post("/v1/jobs", json=body, headers=headers)
    dup = stack.client.simulate_post("/v1/jobs", json=body, headers=headers)
    assert dup.status_code == 409
    assert dup.json["existing_job_id"] == first.json["id"]
    assert dup.json["title"]


def test_a_finished_job_does_not_block_a_new_one_for_the_entity(stack):
    headers = stack.token()
    body = {"type": "customer_sync", "entity_id": "c_1", "run_at": LATER}
    first = stack.client.simulate_post("/v1/jobs", json=body, headers=headers).json
    stack.client.simulate_post(f"/v1/jobs/{first['id']}/cancel", headers=headers)
    assert stack.client.simulate_post("/v1/jobs", json=body, headers=headers).status_code == 202


def test_the_same_key_sent_concurrently_creates_one_job(stack):
    headers = {**stack.token(), "Idempotency-Key": "race"}
    body = {"type": "customer_sync", "entity_id": "c_race", "run_at": LATER}
    responses = post_concurrently(stack, body, headers)
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == 1 and codes.count(200) == 31, codes
    assert len({r.json["id"] for r in responses}) == 1
    assert jobs_in_db(stack) == 1


def test_the_same_entity_sent_concurrently_creates_one_active_job(stack):
    headers = stack.token()
    body = {"type": "customer_sync", "entity_id": "c_race2", "run_at": LATER}
    responses = post_concurrently(stack, body, headers)
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == 1 and codes.count(409) == 31, codes
    winner = next(r for r in responses if r.status_code == 202).json["id"]
    assert {r.json["existing_job_id"] for r in responses if r.status_code == 409} == {winner}
    assert jobs_in_db(stack) == 1


def post_concurrently(stack, body, headers, times=32):
    """The same submission from 16 threads at once."""
    with ThreadPoolExecutor(16) as pool:
        return list(
            pool.map(
                lambda _: stack.client.simulate_post("/v1/jobs", json=body, headers=headers),
                range(times),
            )
        )
