"""Waiting for a job: `GET /v1/jobs/{id}?wait_s=N`, ETags and If-None-Match."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from falcon import testing
from sqlalchemy import text

from api import job_watch
from courier.wsgi import app_for
from tests.support.polling import wait_for
from tests.support.stack import embedded_client, embedded_token, submit_waiting
from tests.support.times import LATER

pytestmark = pytest.mark.integration


def read(client, job_id, headers, **params):
    started = time.monotonic()
    response = client.simulate_get(f"/v1/jobs/{job_id}", params=params, headers=headers)
    return response, time.monotonic() - started


def slow_upstream(upstream, delay_s):
    upstream.script(
        "GET",
        "/crm/customers/*",
        {"status": 200, "body": {"id": "c", "name": "C"}, "delay_s": delay_s},
        repeat_last=True,
    )


def test_a_long_poll_answers_as_soon_as_the_job_succeeds(stack, upstream):
    slow_upstream(upstream, 1.0)
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_1")
    stack.wait_status(job_id, "running")
    response, took = read(stack.client, job_id, stack.headers, wait_s=30)
    assert response.status_code == 200
    assert response.json["status"] == "succeeded"
    assert took < 10, f"answered after {took:.1f}s of 30"
    assert response.headers["ETag"]


def test_a_long_poll_answers_after_wait_s_with_the_unchanged_job(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_2", run_at=LATER)
    before, _ = read(stack.client, job_id, stack.headers)
    response, took = read(stack.client, job_id, stack.headers, wait_s=2)
    assert response.status_code == 200 and response.json == before.json
    assert response.headers["ETag"] == before.headers["ETag"]
    assert 1.9 <= took < 10


def test_a_long_poll_with_if_none_match_answers_as_soon_as_the_job_changes(stack, upstream):
    upstream.script("GET", "/crm/customers/c_3", {"status": 503}, repeat_last=True)
    job_id = stack.submit(type="customer_sync", entity_id="c_3")
    queued, _ = read(stack.client, job_id, stack.headers)
    etag = queued.headers["ETag"]
    headers = {**stack.headers, "If-None-Match": etag}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(read, stack.client, job_id, headers, wait_s=30)
        stack.start_worker(min_backoff_ms=60_000, max_backoff_ms=60_000)
        response, took = waiting.result(timeout=30)
    # Not terminal (it retries in a minute): answered because it changed.
    assert response.status_code == 200
    assert response.json["status"] in ("running", "retrying")
    assert response.headers["ETag"] != etag
    assert took < 10


def test_if_none_match_without_wait_s_answers_304_while_the_job_is_that_version(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_4", run_at=LATER)
    first, _ = read(stack.client, job_id, stack.headers)
    etag = first.headers["ETag"]
    same, _ = read(stack.client, job_id, {**stack.headers, "If-None-Match": etag})
    assert same.status_code == 304 and same.text == ""
    assert same.headers["ETag"] == etag
    weak, _ = read(stack.client, job_id, {**stack.headers, "If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    other, _ = read(stack.client, job_id, {**stack.headers, "If-None-Match": '"other"'})
    assert other.status_code == 200 and other.json["id"] == job_id


def test_every_job_answer_carries_the_etag_of_the_job_it_shows(stack):
    headers = stack.headers
    created = stack.client.simulate_post(
        "/v1/jobs",
        json={"type": "customer_sync", "entity_id": "c_5", "run_at": LATER},
        headers=headers,
    )
    job_id = created.json["id"]
    read_back, _ = read(stack.client, job_id, headers)
    assert created.headers["ETag"] == read_back.headers["ETag"]
    cancelled = stack.client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert cancelled.status_code == 200
    assert cancelled.headers["ETag"] not in (None, created.headers["ETag"])
    assert read(stack.client, job_id, headers)[0].headers["ETag"] == cancelled.headers["ETag"]


@pytest.mark.parametrize("wait_s", ["0", "61", "-1", "soon", "1.5"])
def test_a_wait_s_outside_1_to_60_seconds_is_refused_naming_it(stack, wait_s):
    job_id = stack.submit(type="customer_sync", entity_id="c_6", run_at=LATER)
    response, took = read(stack.client, job_id, stack.headers, wait_s=wait_s)
    assert response.status_code == 422
    assert set(response.json) >= {"title", "description"}
    assert "wait_s" in response.json["description"]
    assert took < 5


def test_another_tenants_job_is_not_found_without_waiting(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_7", run_at=LATER)
    response, took = read(stack.client, job_id, stack.token(tenant="globex"), wait_s=30)
    assert response.status_code == 404
    assert took < 5


def test_a_cancel_through_the_api_releases_its_waiters(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_8", run_at=LATER)
    with ThreadPoolExecutor(5) as pool:
        waiting = [
            pool.submit(read, stack.client, job_id, stack.headers, wait_s=30) for _ in range(5)
        ]
        cancelled = stack.client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=stack.headers)
        assert cancelled.status_code == 200
        answers = [w.result(timeout=30) for w in waiting]
    assert all(r.json["status"] == "cancelled" and took < 10 for r, took in answers)


def test_a_long_poll_on_the_embedded_store_answers_when_the_job_ends(sqlite_engine):
    client = embedded_client(sqlite_engine)
    headers = embedded_token(sqlite_engine)
    job_id = submit_waiting(client, headers, "c_9")
    answer: list = []
    waiter = threading.Thread(
        target=lambda: answer.append(read(client, job_id, headers, wait_s=30))
    )
    waiter.start()
    assert client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=headers).status_code == 200
    waiter.join(timeout=30)
    [(response, took)] = answer
    assert response.json["status"] == "cancelled" and took < 10


def watcher_backends(engine):
    with engine.connect() as db:
        return db.scalars(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": job_watch.APPLICATION_NAME},
        ).all()


def test_the_watcher_reconnects_after_losing_the_database_and_rereads_what_it_missed(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_10", run_at=LATER)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(read, stack.client, job_id, stack.headers, wait_s=30)
        [pid] = wait_for(lambda: watcher_backends(stack.engine), what="the watcher's connection")
        with stack.engine.begin() as db:
            db.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            # Changed without an announcement, as if its notification went out while the
            # watcher was away: only the re-read after reconnecting can see it.
            db.execute(
                text("UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = :id"),
                {"id": job_id},
            )
        response, took = waiting.result(timeout=40)
    assert response.json["status"] == "cancelled"
    assert took < 10, f"answered after {took:.1f}s: not at the reconnection"
    assert watcher_backends(stack.engine) != [pid]


def test_past_its_waiter_limit_a_process_answers_503_at_once_and_serves_the_rest(stack):
    watch = job_watch.JobWatch(stack.engine, max_followers=2)
    client = testing.TestClient(
        app_for(stack.settings, broker=stack.api_broker, sessions=stack.sessions, watch=watch)
    )
    first, second, third = (
        stack.submit(type="customer_sync", entity_id=f"c_1{i}", run_at=LATER) for i in range(3)
    )
    try:
        with ThreadPoolExecutor(2) as pool:
            waiting = [
                pool.submit(read, client, j, stack.headers, wait_s=30) for j in (first, second)
            ]
            wait_for(lambda: watch.following() == 2, what="two waiters")
            refused, took = read(client, third, stack.headers, wait_s=30)
            assert refused.status_code == 503 and took < 5
            assert refused.headers["Retry-After"] == "1"
            assert set(refused.json) >= {"title", "description"}
            streamed = client.simulate_get(f"/v1/jobs/{third}/events", headers=stack.headers)
            assert streamed.status_code == 503
            assert read(client, third, stack.headers)[0].status_code == 200  # no wait: served
            for job_id in (first, second):
                client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=stack.headers)
            assert [w.result(timeout=30)[0].json["status"] for w in waiting] == ["cancelled"] * 2
        client.simulate_post(f"/v1/jobs/{third}/cancel", headers=stack.headers)
        assert read(client, third, stack.headers, wait_s=30)[0].json["status"] == "cancelled"
    finally:
        watch.stop()
