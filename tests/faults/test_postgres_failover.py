"""The primary PostgreSQL dies under load and its standby is promoted: Courier carries on.

The deployment's `COURIER_DATABASE_URL` lists both servers, primary first, with
`target_session_attrs=read-write`; commits wait for the standby, so every job answered
202 is on the standby when the primary is killed. Nothing of Courier is restarted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from api.job_watch import APPLICATION_NAME
from tests.faults.harness import FaultDeployment, Load, elapsed, slow
from tests.support.polling import holds_for, wait_for
from tests.support.times import LATER

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

#: What Courier promises: API and workers work again this soon after the promotion.
RECOVERY_S = 30.0
#: How long no server takes writes: the primary is dead, the standby not yet promoted.
OUTAGE_S = 3.0


def first_job_after(deployment: FaultDeployment, since: float) -> tuple[str, float, float]:
    """Submit one job until the API accepts it, then wait until a worker has run it.

    Returns its id and the seconds from `since` to its 202 and to its success. It goes
    first (priority 9), so it measures the workers' recovery, not the backlog's length.
    """
    body = {"type": "customer_sync", "entity_id": "c_after_failover", "priority": 9}
    with deployment.http(timeout=RECOVERY_S) as http:

        def accepted() -> str | None:
            response = http.post("/v1/jobs", json=body, headers=deployment.headers)
            return response.json()["id"] if response.status_code == 202 else None

        job_id = wait_for(
            accepted, timeout=RECOVERY_S, interval=0.1, what="the API to accept a new job"
        )
    api_s = elapsed(since)
    deployment.wait_status(job_id, "succeeded", timeout=max(RECOVERY_S - api_s, 0.1))
    return job_id, api_s, elapsed(since)


def listening(deployment: FaultDeployment) -> bool:
    """Whether an API process holds its LISTEN connection (someone waits on a job)."""
    with deployment.sql() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (APPLICATION_NAME,),
        ).fetchone()
    return row is not None and row[0] > 0


class LongPoll:
    """A client waiting on a job (`?wait_s=60`) in a thread, across whatever happens; it
    asks again after a 503 (its first read may meet the outage), as a client would."""

    def __init__(self, deployment: FaultDeployment, job_id: str) -> None:
        self.deployment, self.job_id = deployment, job_id
        self.answer: dict[str, Any] | None = None
        self.answered_at: float | None = None
        self.refused = 0
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        with self.deployment.http(timeout=90) as http:
            while True:
                response = http.get(
                    f"/v1/jobs/{self.job_id}",
                    params={"wait_s": 60},
                    headers=self.deployment.headers,
                )
                if response.status_code != 503:
                    break
                self.refused += 1
                time.sleep(0.2)  # the pause a client leaves between two tries
        self.answer, self.answered_at = response.json(), time.monotonic()

    def result(self) -> dict[str, Any]:
        """The answer, once it came (the poll lasts 60 s at the most)."""
        self._thread.join(120)
        assert self.answer is not None, "the long poll never answered"
        return self.answer


def cancel_when_the_api_takes_it(deployment: FaultDeployment, job_id: str) -> float:
    """Cancel a job, asking again while the API answers 503; when the cancel went through."""
    with deployment.http() as http:

        def cancelled() -> bool:
            url = f"/v1/jobs/{job_id}/cancel"
            return http.post(url, headers=deployment.headers).status_code == 200

        wait_for(cancelled, timeout=RECOVERY_S, interval=0.2, what=f"job {job_id} cancelled")
    return time.monotonic()


def test_after_the_primary_is_killed_and_the_standby_promoted_no_accepted_job_is_lost_and_work_resumes_within_30s(
    deployment_on_replicated_postgres, replicated_postgres, upstream
):
    deployment, pair = deployment_on_replicated_postgres, replicated_postgres
    upstream.script("PUT", "/billing/customers/*", slow(0.2), repeat_last=True)
    deployment.start_api()
    group = deployment.start_worker(processes=2, threads=4)
    pids = sorted(group.worker_pids())
    assert deployment.headers  # the token is made while the primary is up

    # A job that waits for a year, and a client waiting on it through the failover: the API's
    # LISTEN connection must come back by itself to tell it of the cancel.
    waiting = deployment.submit(type="customer_sync", entity_id="c_waiting", run_at=LATER)
    with Load(deployment, clients=2) as load:
        wait_for(
            lambda: load.count(202) >= 30 and len(deployment.running_attempts()) >= 2,
            timeout=60,
            what="jobs accepted and attempts running",
        )
        poll = LongPoll(deployment, waiting)
        wait_for(lambda: listening(deployment), timeout=10, what="the API to LISTEN")
        pair.primary.kill()
        # No server takes writes for a while; the worker processes ride it out.
        holds_for(lambda: sorted(group.worker_pids()) == pids, OUTAGE_S, what="the workers")
        pair.standby.promote()
        promoted = time.monotonic()
        probe, api_s, worker_s = first_job_after(deployment, promoted)
        cancelled_at = cancel_when_the_api_takes_it(deployment, waiting)
        wait_for(
            lambda: load.count(202, since=promoted) >= 20,
            timeout=RECOVERY_S,
            what="the clients' jobs to be accepted again",
        )
        clients_s = elapsed(promoted)

    assert poll.result()["status"] == "cancelled"
    assert poll.answered_at is not None
    told_s = max(poll.answered_at - cancelled_at, 0.0)  # the poll may answer first
    print(
        f"after the promotion: first 202 in {api_s:.1f}s, first job succeeded in {worker_s:.1f}s,"
        f" 20 client jobs accepted in {clients_s:.1f}s; a long poll told of a cancel"
        f" {told_s:.1f}s after it ({poll.refused} refused tries)"
    )
    statuses = Counter(s for _, s, _ in load.answers)
    assert set(statuses) == {202, 503}, statuses
    assert worker_s < RECOVERY_S
    assert told_s < RECOVERY_S
    # Every job answered 202 is on the new primary, runs and ends once; no worker restarted.
    accepted = [*load.accepted(), probe, waiting]
    report = deployment.settle_and_check(accepted, timeout=120)
    assert report.statuses == {"succeeded": len(report.jobs) - 1, "cancelled": 1}, report.summary()
    assert group.restarts() == 0
    with deployment.sql() as conn:
        server = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    assert server == (pair.standby.port, False)
