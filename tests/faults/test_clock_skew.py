"""A worker whose clock runs a minute ahead: leases, reaping and retry due times follow the
database's clock, so the skew changes nothing.

The worker is a real `courier worker` under libfaketime (Debian's `faketime` package, which
`scripts/ensure-services` installs), on the shared PostgreSQL and RabbitMQ. Every time these
tests compare is one the database wrote or read: a time a worker took from its own clock
would be a minute off, and the explicit checks below say so.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.faults.harness import FaultDeployment, slow, worker_pid
from tests.support import services
from tests.support.deployment import WorkerGroup
from tests.support.polling import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timing]

SKEW_S = 60
#: Far below the skew, far above scheduling noise.
TOLERANCE = timedelta(seconds=5)
CUSTOMER = {"id": "c", "name": "Customer", "email": "c@example.com"}
#: Long enough for a second worker to start while it runs: a few seconds on a quiet
#: machine, 20 and more on two cores busy with the suite's parallel workers.
JOB_ONE_S = 40

# Python 3.11's time.sleep() waits with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME),
# which libfaketime 0.9.10 breaks when it leaves the monotonic clock alone (EINVAL; its
# issue #426); faking the monotonic clock instead hangs every timed lock wait (issue #390).
# So the monotonic clock stays real and this shim, imported at start-up by every Python
# process of the worker, sleeps through a timed wait (which libfaketime leaves alone).
SLEEP_SHIM = '''\
"""Test shim (tests/faults/test_clock_skew.py): time.sleep without clock_nanosleep."""
import threading
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
'''


def faketime_library() -> str | None:
    """libfaketime's preload library, where Debian (or a local build) puts it."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    found += sorted(glob.glob("/usr/local/lib/faketime/libfaketime.so.1"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def clock_ahead(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a process whose wall clock runs SKEW_S seconds ahead (checked)."""
    library = faketime_library()
    if library is None:
        services.unavailable(
            "libfaketime (apt-get install faketime; scripts/ensure-services installs it)",
            FileNotFoundError("no /usr/lib/*/faketime/libfaketime.so.1"),
        )
    shim = tmp_path_factory.mktemp("faketime-shim")
    (shim / "sitecustomize.py").write_text(SLEEP_SHIM)
    env = {
        "LD_PRELOAD": str(library),
        "FAKETIME": f"+{SKEW_S}s",
        "FAKETIME_DONT_RESET": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p),
    }
    # `date` under it, and Python with the shim: both a minute ahead, and sleeps still work.
    date = subprocess.run(
        ["date", "+%s"], env={**os.environ, **env}, capture_output=True, text=True, timeout=10
    )
    assert abs(int(date.stdout) - time.time() - SKEW_S) < 3, (date.stdout, date.stderr)
    probe = (
        "import time; t = time.monotonic(); time.sleep(0.2); "
        "print(time.time(), time.monotonic() - t)"
    )
    python = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert python.returncode == 0, python.stderr
    wall, slept = map(float, python.stdout.split())
    assert abs(wall - time.time() - SKEW_S) < 3 and 0.19 < slept < 1, python.stdout
    return env


# --- helpers ----------------------------------------------------------------------------


def db_now(deployment: FaultDeployment) -> datetime:
    with deployment.sql() as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def logged_at(group: WorkerGroup, job_id: str, attempt: int) -> datetime:
    """When the worker logged the outcome of an attempt, by the worker's own clock.

    The line is written after the finish commits, and passes through Dramatiq's main
    process on its way to the log: it may come a moment after SQL shows the job ended.
    """

    def outcome() -> datetime | None:
        for line in group.log_lines(job_id):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (
                entry.get("job_id") == job_id
                and entry.get("attempt") == attempt
                and "outcome" in entry
            ):
                return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
        return None

    return wait_for(outcome, timeout=15, what=f"the outcome line of job {job_id} attempt {attempt}")


def assert_worker_clock_ahead(group: WorkerGroup, job_id: str, attempt: dict[str, Any]) -> None:
    """The worker that ran `attempt` did so with its clock SKEW_S ahead of the database's."""
    ahead = logged_at(group, job_id, attempt["number"]) - attempt["finished_at"]
    assert abs(ahead - timedelta(seconds=SKEW_S)) < TOLERANCE, (
        f"the worker's clock was {ahead} ahead of the database's, not {SKEW_S}s"
    )


def assert_database_times(job: dict[str, Any], attempts: list[dict[str, Any]], seen: datetime):
    """Every time written for the job is the database's: none is later than `seen`, a
    database time read after they were all written (a worker's clock is a minute ahead)."""
    times = {
        f"job.{name}": job[name]
        for name in ("started_at", "finished_at", "published_at", "lease_expires_at")
    }
    for a in attempts:
        times.update({f"attempt {a['number']}.{k}": a[k] for k in ("started_at", "finished_at")})
    later = {name: t for name, t in times.items() if t is not None and t > seen + TOLERANCE}
    assert later == {}, f"written from a clock ahead of the database's (read at {seen})"


# --- the tests --------------------------------------------------------------------------


def test_a_job_longer_than_its_lease_is_not_reaped_for_a_clock_ahead(
    deployment, upstream, clock_ahead
):
    # The fault suite's timings: a 3 s lease, the reaper every 0.5 s.
    lease_s = int(deployment.env["COURIER_LEASE_S"])
    assert lease_s <= 3
    deployment.env["COURIER_UPSTREAM_TIMEOUT_S"] = "60"
    # Job one runs on a worker with the right time, for many leases, while a worker a minute
    # ahead reaps: by its clock every lease the first worker writes has long expired.
    upstream.script("GET", "/crm/customers/c_long_1", slow(JOB_ONE_S, body=CUSTOMER))
    # Job two runs on the worker a minute ahead, alone: its leases and its reaper.
    upstream.script("GET", "/crm/customers/c_long_2", slow(3 * lease_s, body=CUSTOMER))
    deployment.start_api()
    steady = deployment.start_worker("steady", threads=2)

    first = deployment.submit({"type": "customer_sync", "entity_id": "c_long_1"})
    deployment.wait_status(first, "running")
    [running] = deployment.attempts(first)
    assert worker_pid(running["worker"]) in steady.worker_pids()

    ahead = deployment.start_worker("ahead", threads=2, env=clock_ahead)
    # The skewed reaper must get its chances while job one still runs: several ticks.
    left = running["started_at"] + timedelta(seconds=JOB_ONE_S) - db_now(deployment)
    assert left > timedelta(seconds=3), f"inconclusive: job one ends {left} after the reaper starts"

    done = deployment.wait_status(first, "succeeded", "failed", "dead", "cancelled", timeout=60)
    attempts = deployment.attempts(first)
    assert done["status"] == "succeeded", (done, attempts)
    assert [(a["number"], a["status"]) for a in attempts] == [(1, "succeeded")]
    assert done["attempts"] == 1
    assert not ahead.log_lines("abandoned")

    steady.terminate()
    second = deployment.submit({"type": "customer_sync", "entity_id": "c_long_2"})
    done = deployment.wait_status(second, "succeeded", "failed", "dead", "cancelled", timeout=60)
    attempts = deployment.attempts(second)
    assert done["status"] == "succeeded", (done, attempts)
    assert [(a["number"], a["status"]) for a in attempts] == [(1, "succeeded")]
    assert worker_pid(attempts[0]["worker"]) in ahead.worker_pids()
    assert attempts[0]["duration_ms"] >= 3 * lease_s * 1000  # it did outlive its lease
    assert not ahead.log_lines("abandoned")

    # The clock really was ahead where job two ran, and nothing it wrote came from it.
    assert_worker_clock_ahead(ahead, second, attempts[0])
    seen = db_now(deployment)
    for job_id in (first, second):
        assert_database_times(deployment.job(job_id), deployment.attempts(job_id), seen)


def test_a_retry_is_not_claimed_before_the_database_says_it_is_due(
    deployment, upstream, clock_ahead
):
    backoff_ms = 3000
    # A backoff between fixed bounds is exactly the minimum for the first retry.
    deployment.env["COURIER_MIN_BACKOFF_MS"] = deployment.env["COURIER_MAX_BACKOFF_MS"] = str(
        backoff_ms
    )
    upstream.script(
        "GET",
        "/crm/customers/c_flaky",
        {"status": 503, "body": {"error": "unavailable"}},
        {"status": 200, "body": CUSTOMER},
    )
    deployment.start_api()
    ahead = deployment.start_worker("ahead", threads=2, env=clock_ahead)
    job_id = deployment.submit({"type": "customer_sync", "entity_id": "c_flaky"})

    # Watch by the database's clock: when the retry was scheduled, and when attempt two
    # first showed up (it started no later than that).
    watched: dict[str, Any] = {}

    def second_attempt_seen() -> bool:
        with deployment.sql() as conn:
            now, status, due, count = conn.execute(
                "SELECT now(), status, next_attempt_at,"
                " (SELECT count(*) FROM attempts WHERE job_id = jobs.id)"
                " FROM jobs WHERE id = %s",
                (job_id,),
            ).fetchone()
        if status == "retrying":
            watched.setdefault("retrying_seen", now)
            watched["next_attempt_at"] = due
        if count >= 2:
            watched["second_seen"] = now
            return True
        return False

    wait_for(second_attempt_seen, timeout=60, interval=0.05, what="the second attempt")
    done = deployment.wait_status(job_id, "succeeded", "failed", "dead", "cancelled", timeout=60)
    first, second = deployment.attempts(job_id)
    assert done["status"] == "succeeded", (done, first, second)
    assert (first["status"], first["decision"], first["retry_in_ms"]) == ("failed", "retry", 3000)
    assert "retrying_seen" in watched, "the retry was never seen waiting"

    due = first["finished_at"] + timedelta(milliseconds=first["retry_in_ms"])
    # The due time is the database's: the attempt's end plus the backoff, one transaction.
    assert watched["next_attempt_at"] == due
    # Not claimed again before it was due, by the database's clock: attempt two did not
    # exist yet when that clock passed the due time.
    assert watched["second_seen"] >= due, (
        f"attempt 2 existed at {watched['second_seen']} by the database's clock, "
        f"before its retry was due at {due}"
    )
    assert second["started_at"] >= due
    # Both times are the database's: written no later than its clock read them back.
    assert first["finished_at"] <= watched["retrying_seen"]
    assert second["started_at"] <= watched["second_seen"]

    assert_worker_clock_ahead(ahead, job_id, first)
    assert_database_times(deployment.job(job_id), [first, second], db_now(deployment))
