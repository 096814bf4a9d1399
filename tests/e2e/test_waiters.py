"""Long polls and event streams against the real `courier api` (gunicorn) and worker."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.polling import holds_for, wait_for
from tests.support.processes import wait_http
from tests.support.times import LATER

pytestmark = pytest.mark.e2e

WAITERS = 60


def connections_in_use(deployment) -> int:
    """Connections of the API doing something (in a statement or a transaction): the pools
    keep idle connections open, which a waiter does not hold."""
    with deployment.sql() as db:
        return db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state <> 'idle' AND pid <> pg_backend_pid()"
        ).fetchone()[0]


def test_sixty_long_polls_hold_no_connection_and_are_all_released_when_their_jobs_end(
    deployment,
):
    deployment.start_api()
    headers = deployment.token()
    ids = deployment.submit_all(
        ({"type": "customer_sync", "entity_id": f"c_{i}"} for i in range(WAITERS)),
        headers=headers,
    )

    def wait(job_id):
        started = time.monotonic()
        with httpx.Client(base_url=deployment.api_url, timeout=90) as http:
            response = http.get(f"/v1/jobs/{job_id}", params={"wait_s": 60}, headers=headers)
        return response, time.monotonic() - started

    with ThreadPoolExecutor(WAITERS) as pool:
        waiting = [pool.submit(wait, job_id) for job_id in ids]
        # They all wait on the API's watcher, not on database connections of their own.
        holds_for(
            lambda: not any(w.done() for w in waiting),
            3.0,
            what=f"{WAITERS} waiters pending",
        )
        assert connections_in_use(deployment) < 5
        began = time.monotonic()
        deployment.start_worker(threads=8)
        answers = [w.result(timeout=90) for w in waiting]
    assert [r.status_code for r, _ in answers] == [200] * WAITERS
    assert {r.json()["status"] for r, _ in answers} == {"succeeded"}
    assert [r.json()["id"] for r, _ in answers] == ids
    # Released when their jobs ended, not at their 60 s deadline.
    assert max(took for _, took in answers) < 45
    assert time.monotonic() - began < 45


def test_an_event_stream_through_gunicorn_ends_after_the_job_succeeds(deployment):
    deployment.start_api()
    deployment.start_worker(threads=4)
    headers = deployment.token()
    [job_id] = deployment.submit_all(
        [{"type": "customer_sync", "entity_id": "c_s"}], headers=headers
    )
    with (
        httpx.Client(base_url=deployment.api_url, timeout=60) as http,
        http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert events[-1] == "status"
    assert '"status": "succeeded"' in [line for line in lines if line.startswith("data: ")][-1]


def test_an_api_of_four_threads_lets_two_wait_refuses_a_third_and_still_answers_health_checks(
    deployment,
):
    bind = deployment.api_url.removeprefix("http://")
    api = deployment.start("api", "api", "--bind", bind, "--workers", "1", "--threads", "4")
    wait_http(f"{deployment.api_url}/readyz", process=api, timeout=60)
    headers = deployment.token()
    ids = deployment.submit_all(
        ({"type": "customer_sync", "entity_id": f"c_{i}", "run_at": LATER} for i in range(4)),
        headers=headers,
    )

    def wait(job_id):
        with httpx.Client(base_url=deployment.api_url, timeout=90) as http:
            return http.get(f"/v1/jobs/{job_id}", params={"wait_s": 60}, headers=headers)

    with ThreadPoolExecutor(3) as pool, deployment.http() as http:
        waiting = [pool.submit(wait, job_id) for job_id in ids[:3]]
        # 4 threads less a reserve of 2: the third waiter is refused, so the first two wait.
        refused = wait_for(
            lambda: next((w.result() for w in waiting if w.done()), None), timeout=30
        )
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert http.get("/healthz").status_code == 200
        assert http.get(f"/v1/jobs/{ids[3]}", headers=headers).status_code == 200
        for job_id in ids[:3]:
            http.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
        answers = [w.result(timeout=30) for w in waiting]
    assert sorted(r.status_code for r in answers) == [200, 200, 503]
