"""PostgreSQL goes away under load: the API refuses honestly, the workers wait it out.

Both run on the session's private PostgreSQL server, so nothing else on the machine notices.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.faults.harness import slow
from tests.support.polling import holds_for, wait_for

pytestmark = pytest.mark.faults


class Load:
    """Clients submitting jobs one by one, recording every answer."""

    def __init__(self, deployment, clients: int = 3) -> None:
        self.deployment = deployment
        self.answers: list[tuple[float, int, dict]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self, n: int) -> None:
        with self.deployment.http(timeout=60) as http:
            i = 0
            while not self._stop.is_set():
                response = http.post(
                    "/v1/jobs",
                    json={"type": "customer_sync", "entity_id": f"c_load_{n}_{i}"},
                    headers=self.deployment.headers,
                )
                with self._lock:
                    self.answers.append((time.monotonic(), response.status_code, response.json()))
                i += 1

    def count(self, status: int, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for t, s, _ in self.answers if s == status and t >= since)


def test_the_api_answers_503_while_postgresql_is_down_and_never_202_without_a_committed_row(
    deployment_on_private_postgres, private_postgres, upstream
):
    deployment = deployment_on_private_postgres
    deployment.start_api()
    deployment.start_worker(processes=1, threads=4)
    assert deployment.headers  # the token is made while the database is up

    with Load(deployment) as load:
        wait_for(lambda: load.count(202) >= 20, timeout=30, what="accepted jobs")
        private_postgres.stop("fast")
        wait_for(lambda: load.count(503) >= 20, timeout=30, what="503s during the outage")
        private_postgres.start()
        back = time.monotonic()
        wait_for(
            lambda: load.count(202, since=back) >= 20,
            timeout=30,
            what="the API to accept jobs again by itself",
        )

    statuses = Counter(s for _, s, _ in load.answers)
    assert set(statuses) == {202, 503}, statuses
    refusals = [body for _, s, body in load.answers if s == 503]
    assert {body["title"] for body in refusals} == {"Database unavailable"}
    assert all(body["description"] for body in refusals)
    accepted = [body["id"] for _, s, body in load.answers if s == 202]
    report = deployment.settle_and_check(accepted, timeout=90)
    assert report.statuses == {"succeeded": len(accepted)}, statuses


def test_workers_ride_out_a_postgresql_outage_and_recover_by_themselves(
    deployment_on_private_postgres, private_postgres, upstream
):
    deployment = deployment_on_private_postgres
    upstream.script("PUT", "/billing/customers/*", slow(1), repeat_last=True)
    deployment.start_api()
    group = deployment.start_worker(processes=2, threads=4)
    pids = sorted(group.worker_pids())
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_pg_{i}"} for i in range(40)
    )
    wait_for(
        lambda: (
            deployment.count("status = 'succeeded'") >= 8
            and len(deployment.running_attempts()) >= 4
        ),
        timeout=30,
        what="work under way",
    )

    private_postgres.stop("fast")
    # Down for longer than a lease (3 s); the worker processes stay up meanwhile.
    holds_for(lambda: sorted(group.worker_pids()) == pids, 5, what="the worker processes")
    private_postgres.start()

    report = deployment.settle_and_check(ids, timeout=90)
    assert report.statuses == {"succeeded": len(ids)}
    assert group.restarts() == 0
    assert sorted(group.worker_pids()) == pids
    # No worker disappeared, so no attempt may be recorded as `abandoned` (an attempt whose
    # worker stopped renewing its lease: crash, kill, freeze): a lease that ran out while
    # nobody could renew it is no evidence that its worker is gone.
    abandoned = [
        (job_id, a["number"], a["worker"])
        for job_id, rows in report.attempts.items()
        for a in rows
        if a["status"] == "abandoned"
    ]
    assert abandoned == [], f"{len(abandoned)} live attempt(s) recorded as abandoned"
