"""PostgreSQL goes away under load: the API refuses honestly, the workers wait it out.

Both run on the session's private PostgreSQL server, so nothing else on the machine notices.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults.harness import Load, slow
from tests.support.polling import holds_for, wait_for

pytestmark = pytest.mark.faults


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
    accepted = load.accepted()
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
