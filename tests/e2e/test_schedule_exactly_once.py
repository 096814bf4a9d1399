"""Three worker processes run the scheduler side by side: every occurrence gets exactly one job."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bench import noop_job
from store import schedules
from store.cadence import Cadence
from store.db import make_engine, make_sessionmaker
from tests.support.polling import wait_for
from tests.support.processes import free_port, wait_http

pytestmark = pytest.mark.e2e

#: A minute of one-second occurrences, each contested by the three schedulers' ticks.
OCCURRENCES = 60
#: Each worker's scheduler ticks ten times a second (the default is once), so every
#: occurrence is raced for by some thirty ticks rather than three.
TICK_S = "0.1"


@pytest.mark.timeout(400)
def test_every_occurrence_of_a_one_second_schedule_gets_exactly_one_job_across_three_workers(
    deployment, database_url
):
    # The no-op job type lives in the repository's bench package, outside the installed ones.
    deployment.env["COURIER_JOB_MODULES"] = "bench.noop_job"
    deployment.env["PYTHONPATH"] = str(Path(noop_job.__file__).parents[1])
    deployment.env["COURIER_SCHEDULER_INTERVAL_S"] = TICK_S
    deployment.start_api()
    second_api = f"127.0.0.1:{free_port()}"
    api = deployment.start("api-2", "api", "--bind", second_api, "--workers", "1")
    wait_http(f"http://{second_api}/readyz", process=api, timeout=60)
    workers = [deployment.start_worker(f"worker-{n}", processes=1, threads=2) for n in range(3)]

    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            schedule_id = schedules.create(
                session,
                schedules.NewSchedule(
                    tenant="acme",
                    name="every-second",
                    type=noop_job.NAME,
                    cadence=Cadence.checked(cron=None, interval_s=1),
                    max_attempts=3,
                    overlap="allow",
                ),
            ).id
    finally:
        engine.dispose()

    def handled() -> int:
        with deployment.sql() as conn:
            return conn.execute(
                "SELECT count(*) FROM schedule_runs WHERE schedule_id = %s", (schedule_id,)
            ).fetchone()[0]

    wait_for(
        lambda: handled() >= OCCURRENCES,
        timeout=OCCURRENCES + 120,
        interval=1,
        what=lambda: f"{OCCURRENCES} occurrences (handled: {handled()})",
    )
    with deployment.sql() as conn:
        conn.execute("UPDATE schedules SET paused = true WHERE id = %s", (schedule_id,))
    wait_for(
        lambda: deployment.count("schedule_id = %s AND status <> 'succeeded'", (schedule_id,)) == 0,
        timeout=120,
        interval=0.5,
        what="every job of the schedule to succeed",
    )

    with deployment.sql() as conn:
        per_occurrence = conn.execute(
            "SELECT scheduled_for, count(*) FROM jobs WHERE schedule_id = %s "
            "GROUP BY scheduled_for ORDER BY scheduled_for",
            (schedule_id,),
        ).fetchall()
        runs = conn.execute(
            "SELECT r.scheduled_for, r.outcome, r.job_id, j.scheduled_for "
            "FROM schedule_runs r LEFT JOIN jobs j ON j.id = r.job_id "
            "WHERE r.schedule_id = %s ORDER BY r.scheduled_for",
            (schedule_id,),
        ).fetchall()
        statuses = conn.execute(
            "SELECT status, count(*) FROM jobs WHERE schedule_id = %s GROUP BY status",
            (schedule_id,),
        ).fetchall()
        skipped = conn.execute(
            "SELECT skipped_runs FROM schedules WHERE id = %s", (schedule_id,)
        ).fetchone()[0]

    times = [t for t, _ in per_occurrence]
    assert len(times) >= OCCURRENCES
    assert [n for _, n in per_occurrence] == [1] * len(times), "an occurrence had two jobs"
    first = times[0]
    assert times == [first + timedelta(seconds=i) for i in range(len(times))], "a gap"
    assert [(r[0], r[1]) for r in runs] == [(t, "created") for t in times]
    assert all(job_id is not None and job_for == t for t, _, job_id, job_for in runs)
    assert statuses == [("succeeded", len(times))]
    assert skipped == 0
    firing = [w for w in workers if w.log_lines("created job")]
    assert firing, "no worker logged a created job"
