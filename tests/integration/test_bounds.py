"""Bounds at the edge: run_at within a year, input fit for its job type, pages bounded in bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from api.resources.jobs import PAGE_BYTES
from store.models import Job
from tests.support.records import add_dead, add_job, add_queued

pytestmark = pytest.mark.integration


def job_count(stack) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job))


def from_now(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


@pytest.mark.parametrize(
    "run_at",
    [
        "9999-12-31T23:00:00-05:00",  # year 10000 in UTC
        "0001-01-01T00:30:00+01:00",  # year 0 in UTC
        "2999-01-01T00:00:00Z",
        pytest.param(from_now(days=366), id="a year and a day ahead"),
        pytest.param(from_now(days=-366), id="a year and a day ago"),
    ],
)
def test_a_run_at_more_than_a_year_from_now_gets_422(stack, run_at):
    body = {"type": "customer_sync", "entity_id": "c_1", "run_at": run_at}
    response = stack.client.simulate_post("/v1/jobs", json=body, headers=stack.headers)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json["errors"]] == ["run_at"]
    assert "within one year" in response.json["description"]
    assert job_count(stack) == 0
    listing = stack.client.simulate_get("/v1/jobs", headers=stack.token("ops", "operator"))
    assert listing.status_code == 200, listing.text


@pytest.mark.parametrize("days", [364, -1])
def test_a_run_at_within_a_year_is_accepted(stack, days):
    body = {"type": "customer_sync", "entity_id": "c_1", "run_at": from_now(days=days)}
    response = stack.client.simulate_post("/v1/jobs", json=body, headers=stack.headers)
    assert response.status_code == 202, response.text


def test_a_batch_refuses_the_items_whose_run_at_is_out_of_bounds(stack):
    jobs = [
        {"type": "customer_sync", "entity_id": "c_1", "run_at": "9999-12-31T23:00:00-05:00"},
        {"type": "customer_sync", "entity_id": "c_2", "run_at": from_now(days=30)},
        {"type": "customer_sync", "entity_id": "c_3", "run_at": from_now(days=400)},
    ]
    response = stack.client.simulate_post(
        "/v1/jobs/batch", json={"jobs": jobs}, headers=stack.headers
    )
    assert response.status_code == 207, response.text
    items = response.json["items"]
    assert [i["status"] for i in items] == [422, 202, 422]
    assert items[0]["errors"][0]["field"] == "run_at"
    assert job_count(stack) == 1


def test_a_replay_payload_override_is_checked_against_the_job_type(stack):
    old = add_job(stack.sessions, entity_id="c_dir", type="directory_sync")
    response = stack.client.simulate_post(
        f"/v1/jobs/{old}/replay",
        json={"payload": {"start_page": "first"}},
        headers=stack.token("ops", "operator"),
    )
    assert response.status_code == 422, response.text
    assert "directory_sync" in response.json["description"]
    assert "start_page" in response.json["description"]
    assert stack.job(old).replayed_by is None


def fatten(stack, size: int) -> None:
    """Give every job a payload of about `size` bytes."""
    with stack.sessions.begin() as session:
        session.execute(update(Job).values(payload={"blob": "x" * size}))


def walk(stack, path, headers, **params):
    """Every page of a listing: (items, bytes) per page."""
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = stack.client.simulate_get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        pages.append((response.json["items"], len(response.content)))
        cursor = response.json["next_cursor"]
        if cursor is None:
            return pages


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/dead-letters"])
def test_a_page_stops_before_a_mebibyte_and_the_cursor_goes_on_from_there(stack, path):
    if path == "/v1/jobs":
        ids = [
            add_queued(stack.sessions, type="customer_sync", entity_id=f"c_{i}") for i in range(45)
        ]
    else:
        ids = add_dead(stack.sessions, 45)
    fatten(stack, 60_000)
    pages = walk(stack, path, stack.token("ops", "operator"), limit=500)
    assert len(pages) == 3, [(len(items), size) for items, size in pages]
    assert all(size <= PAGE_BYTES + 1024 for _, size in pages)
    listed = [item["id"] for items, _ in pages for item in items]
    assert listed == [str(i) for i in reversed(ids)]  # each once, newest first


def test_a_page_holds_at_least_one_job_however_large(stack, monkeypatch):
    monkeypatch.setattr("api.resources.jobs.PAGE_BYTES", 1000)
    ids = [add_queued(stack.sessions, type="customer_sync", entity_id=f"c_{i}") for i in range(3)]
    fatten(stack, 5_000)
    pages = walk(stack, "/v1/jobs", stack.headers)
    assert [len(items) for items, _ in pages] == [1, 1, 1]
    assert [items[0]["id"] for items, _ in pages] == [str(i) for i in reversed(ids)]
