"""Stopping `courier worker` the ways operators do: Ctrl-C in a terminal, `kill -TERM -<pgid>`,
systemd's SIGTERM to every process of the unit, Docker's SIGTERM to the main process only.

Each of them is one stop request: running attempts finish, none is abandoned or run twice.
A second Ctrl-C some time later stops at once, and the drain timeout bounds a graceful stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.faults.harness import elapsed, slow
from tests.support.deployment import ProcessDeployment, WorkerGroup
from tests.support.polling import wait_for
from tests.support.processes import descendants, signal_all

pytestmark = [pytest.mark.faults, pytest.mark.timing]

#: The job's upstream write takes this long: it is mid-flight when the signal comes.
JOB_S = 3.5


def _group_sigint(group: WorkerGroup) -> None:
    os.killpg(group.supervisor, signal.SIGINT)  # what Ctrl-C in the terminal does


def _group_sigterm(group: WorkerGroup) -> None:
    os.killpg(group.supervisor, signal.SIGTERM)  # kill -TERM -<pgid>


def _every_process_sigterm(group: WorkerGroup) -> None:
    # systemd's KillMode=control-group: each process of the unit, one by one.
    signal_all([group.supervisor, *descendants(group.supervisor)], signal.SIGTERM)


def _main_process_sigterm(group: WorkerGroup) -> None:
    group.process.send(signal.SIGTERM)  # docker stop: PID 1 only


def _running_long_job(
    deployment: ProcessDeployment,
    upstream,
    entity: str,
    *,
    seconds: float = JOB_S,
    processes: int = 2,
    env: dict[str, str] | None = None,
) -> tuple[WorkerGroup, str]:
    upstream.script("PUT", f"/billing/customers/{entity}", slow(seconds))  # once; a retry is quick
    deployment.start_api()
    group = deployment.start_worker(processes=processes, threads=2, env=env)
    job_id = deployment.submit(type="customer_sync", entity_id=entity)
    wait_for(
        lambda: upstream.calls(path=f"/billing/customers/{entity}"),
        timeout=20,
        what="the attempt to be writing to Billing",
    )
    return group, job_id


def _wait_exit(group: WorkerGroup, timeout: float) -> int:
    try:
        return group.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"courier worker still running after {timeout}s") from None


@pytest.mark.parametrize(
    "stop",
    [_group_sigint, _group_sigterm, _every_process_sigterm, _main_process_sigterm],
    ids=["group-sigint", "group-sigterm", "every-process-sigterm", "main-process-sigterm"],
)
def test_one_stop_request_lets_the_running_attempt_finish_and_exits_0(deployment, upstream, stop):
    group, job_id = _running_long_job(deployment, upstream, "c_graceful")

    stopped = time.monotonic()
    stop(group)
    assert _wait_exit(group, timeout=JOB_S + 15) == 0, group.output()[-3000:]
    print(f"{stop.__name__}: exited 0 {elapsed(stopped):.1f}s after the signal")

    [attempt] = deployment.attempts(job_id)
    assert attempt["status"] == "succeeded", group.output()[-3000:]
    assert deployment.job(job_id)["status"] == "succeeded"
    assert len(upstream.calls(path="/billing/customers/c_graceful")) == 1
    assert group.log_lines("Worker has been shut down")


def test_a_second_ctrl_c_stops_at_once_and_the_abandoned_attempt_is_retried(deployment, upstream):
    group, job_id = _running_long_job(deployment, upstream, "c_impatient")

    _group_sigint(group)
    wait_for(
        lambda: len(group.log_lines("Stopping worker process")) == group.processes,
        timeout=5,
        what="the worker processes to start draining",
    )
    # The operator presses Ctrl-C again a moment later: a separate request, not a copy.
    time.sleep(1)
    second = time.monotonic()
    _group_sigint(group)
    _wait_exit(group, timeout=JOB_S)
    assert elapsed(second) < 2, f"stopped {elapsed(second):.1f}s after the second Ctrl-C"
    assert deployment.attempts(job_id)[0]["status"] == "running"  # its worker is gone

    deployment.start_worker("worker-again", processes=1, threads=2)
    deployment.wait_status(job_id, "succeeded", timeout=30)
    abandoned, succeeded = deployment.attempts(job_id)
    assert (abandoned["status"], succeeded["status"]) == ("abandoned", "succeeded")


def test_the_drain_timeout_stops_what_still_runs_and_its_attempt_is_retried(deployment, upstream):
    group, job_id = _running_long_job(
        deployment,
        upstream,
        "c_endless",
        seconds=10,
        processes=1,
        env={"COURIER_DRAIN_TIMEOUT_S": "1"},
    )

    stopped = time.monotonic()
    _main_process_sigterm(group)
    _wait_exit(group, timeout=8)
    assert elapsed(stopped) < 6, f"the drain took {elapsed(stopped):.1f}s with a 1 s timeout"

    deployment.start_worker("worker-again", processes=1, threads=2)
    deployment.wait_status(job_id, "succeeded", timeout=30)
    abandoned, succeeded = deployment.attempts(job_id)
    assert (abandoned["status"], succeeded["status"]) == ("abandoned", "succeeded")
