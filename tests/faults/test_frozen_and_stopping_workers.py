"""Workers that freeze past their lease, and workers stopped gracefully (rolling restart)."""

from __future__ import annotations

import pytest

from tests.faults.harness import frozen, slow, worker_pid
from tests.support.polling import wait_for

pytestmark = pytest.mark.faults

#: A frozen consumer with room in its prefetch window would be handed the retried job's
#: message and hold it until it thaws; one message at a time keeps the retry for the others.
ONE_AT_A_TIME = {"dramatiq_queue_prefetch": "1"}


def test_a_worker_frozen_past_its_lease_is_replaced_and_its_late_finish_changes_nothing(
    deployment, upstream
):
    customer = {"id": "c_zombie", "name": "Zombie", "email": "z@example.com"}
    upstream.script("GET", "/crm/customers/c_zombie", slow(3, body=customer))  # once
    deployment.start_api()
    groups = [
        deployment.start_worker(f"worker-{n}", processes=1, threads=2, env=ONE_AT_A_TIME)
        for n in (1, 2)
    ]
    [zombie] = deployment.submit_all([{"type": "customer_sync", "entity_id": "c_zombie"}])

    wait_for(
        lambda: (
            deployment.job(zombie)["status"] == "running"
            and upstream.calls(path="/crm/customers/c_zombie")
        ),
        timeout=20,
        what="the first attempt to be waiting on the CRM",
    )
    [first] = deployment.attempts(zombie)
    zombie_pid = worker_pid(first["worker"])
    [frozen_group] = [g for g in groups if zombie_pid in g.worker_pids()]
    with frozen(zombie_pid):
        # The lease runs out; the reaper retries the job on the other worker.
        job = deployment.wait_status(zombie, "succeeded", "failed", "dead", timeout=30)
        others = deployment.submit_all(
            {"type": "customer_sync", "entity_id": f"c_meanwhile_{i}"} for i in range(8)
        )
        wait_for(
            lambda: deployment.count("status = 'succeeded'") == 1 + len(others),
            timeout=30,
            what="other jobs to run while the worker is frozen",
        )
    assert job["status"] == "succeeded"

    # Thawed, the zombie finishes its attempt; the fence keeps it from writing anything.
    wait_for(
        lambda: [
            line
            for line in frozen_group.log_lines(zombie)
            if '"outcome": "fenced"' in line and '"attempt": 1' in line
        ],
        timeout=20,
        what="the frozen worker's late finish to be fenced",
    )
    report = deployment.settle_and_check([zombie, *others], timeout=30)
    after = report.jobs[zombie]
    for column in ("status", "attempts", "finished_at", "result", "error_type", "error"):
        assert after[column] == job[column], column
    abandoned, succeeded = report.attempts[zombie]
    assert (abandoned["status"], abandoned["error_type"]) == ("abandoned", "WorkerLost")
    assert worker_pid(abandoned["worker"]) == zombie_pid
    assert succeeded["status"] == "succeeded"
    assert worker_pid(succeeded["worker"]) != zombie_pid
    assert report.statuses == {"succeeded": 1 + len(others)}


def test_a_rolling_restart_with_sigterm_finishes_running_attempts_and_abandons_none(
    deployment, upstream
):
    # Some attempts outlast the lease (3 s): a graceful stop must keep them alive to the end.
    for i in range(4):
        upstream.script("PUT", f"/billing/customers/c_long_{i}", slow(5))
    upstream.script("PUT", "/billing/customers/*", slow(0.3), repeat_last=True)
    deployment.start_api()
    a = deployment.start_worker("worker-a", processes=1, threads=4)
    b = deployment.start_worker("worker-b", processes=1, threads=4)
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_long_{i}"} for i in range(4)
    )
    ids += deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_short_{i}"} for i in range(60)
    )

    def running_long_on(group):
        return [
            r
            for r in deployment.running_attempts()
            if r["entity_id"].startswith("c_long")
            and worker_pid(r["worker"]) in group.worker_pids()
        ]

    # Stop A while it runs a long attempt, bring up its replacement, then the same for B.
    wait_for(lambda: running_long_on(a) or running_long_on(b), timeout=20, what="long attempts")
    first, second = (a, b) if running_long_on(a) else (b, a)
    assert first.terminate() == 0
    replacement = deployment.start_worker("worker-a2", processes=1, threads=4)
    assert second.terminate() == 0
    deployment.start_worker("worker-b2", processes=1, threads=4)

    report = deployment.settle_and_check(ids, timeout=90, effects_exactly_once=True)
    assert report.statuses == {"succeeded": len(ids)}
    abandoned = [
        (job_id, a["number"], a["worker"])
        for job_id, rows in report.attempts.items()
        for a in rows
        if a["status"] == "abandoned"
    ]
    assert abandoned == []
    assert all(job["attempts"] == 1 for job in report.jobs.values())
    for group in (first, second):
        assert group.log_lines("Worker has been shut down"), group.process.name
        assert group.restarts() == 0
    assert replacement.worker_pids()
