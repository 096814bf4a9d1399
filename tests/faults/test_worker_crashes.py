"""Workers die with kill -9: mid-job, the whole group at once, and every time one job runs."""

from __future__ import annotations

import os
import signal

import pytest

from tests.faults.harness import slow, worker_pid
from tests.support.polling import wait_for

pytestmark = pytest.mark.faults


def test_a_worker_process_killed_mid_job_loses_nothing_and_its_attempts_count_as_abandoned(
    deployment, upstream
):
    # Billing is slow, so attempts are caught with their write in flight.
    upstream.script("PUT", "/billing/customers/*", slow(2), repeat_last=True)
    deployment.start_api()
    group = deployment.start_worker(processes=2, threads=4)
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_kill_{i}"} for i in range(16)
    )

    # Pick a worker process with writes in flight, and kill it.
    def victim_with_writes_in_flight():
        in_flight = {c["headers"]["Idempotency-Key"] for c in upstream.calls(method="PUT")}
        for attempt in deployment.running_attempts():
            if str(attempt["job_id"]) in in_flight:
                return worker_pid(attempt["worker"])
        return None

    victim = wait_for(victim_with_writes_in_flight, timeout=30, what="writes in flight")
    assert victim in group.worker_pids()
    ready_before = group.ready_count()
    os.kill(victim, signal.SIGKILL)
    # What it was running when it died (its leases have not run out yet: nobody reaped them).
    its_jobs = {
        str(a["job_id"]) for a in deployment.running_attempts() if worker_pid(a["worker"]) == victim
    }
    assert its_jobs
    group.wait_ready(after=ready_before)  # the supervisor brought the group back

    report = deployment.settle_and_check(ids, timeout=90)
    assert report.statuses == {"succeeded": len(ids)}
    for job_id in its_jobs:
        first = report.attempts[job_id][0]
        assert first["status"] == "abandoned", first
        assert first["error_type"] == "WorkerLost"
        assert first["decision"] == "retry"
        assert worker_pid(first["worker"]) == victim
        assert report.jobs[job_id]["attempts"] >= 2
    abandoned_elsewhere = [
        (job_id, a["number"], a["worker"])
        for job_id, rows in report.attempts.items()
        for a in rows
        if a["status"] == "abandoned" and worker_pid(a["worker"]) != victim
    ]
    assert abandoned_elsewhere == []
    assert group.restarts() == 1


def test_killing_the_whole_worker_group_with_prefetched_messages_loses_nothing(
    deployment, upstream
):
    upstream.script("PUT", "/billing/customers/*", slow(0.5), repeat_last=True)
    deployment.start_api()
    group = deployment.start_worker(processes=2, threads=4)
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_group_{i}"} for i in range(60)
    )

    # Each process holds more messages than it has threads (prefetch): queued jobs whose
    # message is no longer ready in the queue are held, unacknowledged, by a worker.
    def prefetched() -> int:
        queued = deployment.count("status = 'queued'")
        return queued - deployment.broker.ready_now(deployment.vhost, "sync")

    wait_for(
        lambda: len(deployment.running_attempts()) > 0 and prefetched() > 0,
        timeout=30,
        what="messages prefetched beyond the running attempts",
    )
    ready_before = group.ready_count()
    killed = group.kill_group()
    assert len(killed) >= 3  # Dramatiq's main process and both worker processes
    group.wait_ready(after=ready_before)

    report = deployment.settle_and_check(ids, timeout=120)
    assert report.statuses == {"succeeded": len(ids)}
    assert group.restarts() == 1


def test_a_job_whose_worker_dies_every_time_ends_dead_after_max_attempts_instead_of_looping(
    deployment, upstream
):
    # The CRM never answers in time for this one entity: every attempt is still running when
    # its worker process is killed, as with a job that crashes its worker each time.
    upstream.script("GET", "/crm/customers/c_crash", slow(60), repeat_last=True)
    deployment.start_api()
    groups = [deployment.start_worker(f"worker-{n}", processes=1, threads=2) for n in (1, 2)]
    [crash] = deployment.submit_all(
        [{"type": "customer_sync", "entity_id": "c_crash", "max_attempts": 3}]
    )
    victims = []
    for number in (1, 2, 3):

        def attempt_running(number: int = number):
            # Running, and its call to the CRM made (and hanging).
            if len(upstream.calls(path="/crm/customers/c_crash")) < number:
                return None
            return next((a for a in deployment.attempts(crash) if a["number"] == number), None)

        attempt = wait_for(attempt_running, timeout=40, what=f"attempt {number} to run")
        assert attempt["status"] == "running"
        victims.append(worker_pid(attempt["worker"]))
        os.kill(victims[-1], signal.SIGKILL)

    others = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_after_{i}"} for i in range(6)
    )  # the workers still do other work
    report = deployment.settle_and_check([crash, *others], timeout=60)

    job = report.jobs[crash]
    assert job["status"] == "dead"
    assert job["error_type"] == "WorkerLost"
    assert job["attempts"] == 3
    attempts = report.attempts[crash]
    assert [a["status"] for a in attempts] == ["abandoned"] * 3
    assert [a["decision"] for a in attempts] == ["retry", "retry", "dead"]
    assert [worker_pid(a["worker"]) for a in attempts] == victims
    assert all(report.jobs[i]["status"] == "succeeded" for i in others)
    assert sum(g.restarts() for g in groups) == 3
    assert len(upstream.calls(path="/crm/customers/c_crash")) == 3  # three runs, no fourth
