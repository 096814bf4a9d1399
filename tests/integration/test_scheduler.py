"""The scheduler's tick on real PostgreSQL: due occurrences become jobs, exactly once."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bench import schedules as bench_schedules
from store import errors, occurrences, schedule_lag, schedules
from store.cadence import EPOCH, Cadence
from store.db import make_sessionmaker
from store.models import SCHEDULES, AuditEntry, Job, Schedule, ScheduleRun
from store.sql import now
from tests.support.polling import wait_for
from tests.support.records import add_queued

pytestmark = pytest.mark.integration

QUEUES = {"directory_sync": "sync", "customer_sync": "sync"}


def add_schedule(
    sessions: sessionmaker[Session], name: str = "nightly", **fields: Any
) -> uuid.UUID:
    """A live schedule of tenant acme (an hourly directory_sync unless `fields` say otherwise)."""
    cadence = Cadence.checked(
        cron=fields.pop("cron", None),
        interval_s=fields.pop("interval_s", 3600),
        timezone=fields.pop("timezone", "UTC"),
        jitter_s=fields.pop("jitter_s", 0),
    )
    new = schedules.NewSchedule(
        tenant=fields.pop("tenant", "acme"),
        name=name,
        type=fields.pop("type", "directory_sync"),
        cadence=cadence,
        max_attempts=3,
        **fields,
    )
    with sessions.begin() as session:
        return schedules.create(session, new).id


def db_now(sessions: sessionmaker[Session]) -> datetime:
    with sessions() as session:
        return session.execute(select(now())).scalar_one()


def aligned(moment: datetime, step_s: int) -> datetime:
    """The interval occurrence at or before `moment`."""
    return EPOCH + ((moment - EPOCH) // timedelta(seconds=step_s)) * timedelta(seconds=step_s)


def move(
    sessions: sessionmaker[Session],
    schedule_id: uuid.UUID,
    occurrence: datetime,
    fire_at: datetime | None = None,
) -> None:
    """Point the schedule at `occurrence` (as if the scheduler had been down since then)."""
    with sessions.begin() as session:
        session.execute(
            update(SCHEDULES)
            .where(SCHEDULES.c.id == schedule_id)
            .values(next_occurrence=occurrence, next_fire_at=fire_at or occurrence)
        )


def tick(
    engine: Engine, queues: dict[str, str] = QUEUES, limit: int = 100
) -> list[occurrences.Fired]:
    with make_sessionmaker(engine).begin() as session:
        fired, _ = occurrences.fire_due(session, queues=queues, timeout_s=60, limit=limit)
    return fired


def jobs_of(sessions: sessionmaker[Session], schedule_id: uuid.UUID) -> list[Job]:
    with sessions() as session:
        query = select(Job).where(Job.schedule_id == schedule_id).order_by(Job.scheduled_for)
        return list(session.scalars(query))


def runs_of(sessions: sessionmaker[Session], schedule_id: uuid.UUID) -> list[ScheduleRun]:
    with sessions() as session:
        query = (
            select(ScheduleRun)
            .where(ScheduleRun.schedule_id == schedule_id)
            .order_by(ScheduleRun.scheduled_for)
        )
        return list(session.scalars(query))


def schedule(sessions: sessionmaker[Session], schedule_id: uuid.UUID) -> Schedule:
    with sessions() as session:
        return session.get_one(Schedule, schedule_id)


def test_a_due_occurrence_makes_one_job_carrying_its_schedule_and_time(engine, sessions):
    sid = add_schedule(sessions)
    hour = aligned(db_now(sessions), 3600)
    move(sessions, sid, hour)

    fired = tick(engine)
    assert tick(engine) == []  # handled: the next tick finds nothing due

    [job] = jobs_of(sessions, sid)
    assert [f.job_id for f in fired] == [job.id]
    assert fired[0].schedule == "acme/nightly"
    assert (job.schedule_id, job.scheduled_for, job.type, job.queue) == (
        sid,
        hour,
        "directory_sync",
        "sync",
    )
    assert job.status == "queued" and job.published_at is None  # the relay's to publish
    [run] = runs_of(sessions, sid)
    assert (run.scheduled_for, run.outcome, run.job_id) == (hour, "created", job.id)
    after = schedule(sessions, sid)
    assert after.next_occurrence == hour + timedelta(hours=1)
    assert (after.last_job_id, after.last_scheduled_for) == (job.id, hour)


def test_two_concurrent_ticks_handle_each_occurrence_once(engine, sessions):
    ids = [add_schedule(sessions, f"s{i}", interval_s=10, overlap="allow") for i in range(60)]
    first = aligned(db_now(sessions), 10) - timedelta(seconds=30)
    for sid in ids:
        move(sessions, sid, first)
    start = threading.Barrier(2)
    fired: list[list[occurrences.Fired]] = [[], []]
    failures: list[BaseException] = []

    def ticker(n: int) -> None:
        other = make_sessionmaker(engine)  # its own connection and session
        start.wait()
        try:
            while True:
                with other.begin() as session:
                    got, due = occurrences.fire_due(session, queues=QUEUES, timeout_s=60, limit=7)
                fired[n] += got
                if due == 0:
                    return
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=ticker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert fired[0] and fired[1], "both ticks should have done part of the work"
    with sessions() as session:
        doubled = session.execute(
            select(Job.schedule_id, Job.scheduled_for)
            .group_by(Job.schedule_id, Job.scheduled_for)
            .having(func.count() > 1)
        ).all()
        assert doubled == []
        for sid in ids:
            after = session.get_one(Schedule, sid)
            expected = []
            occurrence = first
            while occurrence < after.next_occurrence:
                expected.append(occurrence)
                occurrence += timedelta(seconds=10)
            got = session.scalars(
                select(Job.scheduled_for).where(Job.schedule_id == sid).order_by(Job.scheduled_for)
            ).all()
            assert got == expected and len(expected) >= 4
    assert len(fired[0]) + len(fired[1]) == len(
        {(f.schedule_id, f.scheduled_for) for f in fired[0] + fired[1]}
    )


def test_overlap_skip_records_skipped_runs_while_the_last_job_is_active(engine, sessions):
    sid = add_schedule(sessions, interval_s=10, overlap="skip")
    first = aligned(db_now(sessions), 10) - timedelta(seconds=30)
    move(sessions, sid, first)

    tick(engine)

    [job] = jobs_of(sessions, sid)
    runs = runs_of(sessions, sid)
    assert job.scheduled_for == first
    assert [r.outcome for r in runs] == ["created"] + ["skipped"] * (len(runs) - 1)
    assert len(runs) >= 4 and all(r.job_id is None for r in runs[1:])
    assert schedule(sessions, sid).skipped_runs == len(runs) - 1


def test_overlap_allow_gives_every_occurrence_its_job(engine, sessions):
    sid = add_schedule(sessions, interval_s=10, overlap="allow")
    first = aligned(db_now(sessions), 10) - timedelta(seconds=30)
    move(sessions, sid, first)

    tick(engine)

    jobs = jobs_of(sessions, sid)
    assert len(jobs) >= 4
    assert [j.scheduled_for for j in jobs] == [
        first + timedelta(seconds=10 * i) for i in range(len(jobs))
    ]
    assert [r.outcome for r in runs_of(sessions, sid)] == ["created"] * len(jobs)
    assert schedule(sessions, sid).skipped_runs == 0


def test_an_occurrence_whose_job_breaks_the_active_job_rule_is_skipped(engine, sessions):
    sid = add_schedule(sessions, type="customer_sync", entity_id="c_1", overlap="allow")
    add_queued(sessions, type="customer_sync", entity_id="c_1")
    hour = aligned(db_now(sessions), 3600)
    move(sessions, sid, hour)

    assert tick(engine) == []

    [run] = runs_of(sessions, sid)
    assert (run.outcome, run.job_id) == ("skipped", None)
    assert jobs_of(sessions, sid) == []
    assert schedule(sessions, sid).skipped_runs == 1


def daily_two_hours_ago(
    sessions: sessionmaker[Session], **fields: Any
) -> tuple[uuid.UUID, datetime]:
    """A daily schedule whose latest occurrence was two hours ago (long missed), pointed at
    the one three days before that."""
    latest = (db_now(sessions) - timedelta(hours=2)).replace(second=0, microsecond=0)
    sid = add_schedule(
        sessions, cron=f"{latest.minute} {latest.hour} * * *", interval_s=None, **fields
    )
    move(sessions, sid, latest - timedelta(days=3))
    return sid, latest


def test_missed_skip_counts_the_missed_occurrences_and_runs_none(engine, sessions):
    sid, latest = daily_two_hours_ago(sessions, missed="skip")

    assert tick(engine) == []

    after = schedule(sessions, sid)
    assert after.skipped_runs == 4
    assert runs_of(sessions, sid) == []
    assert after.next_occurrence == latest + timedelta(days=1)


def test_missed_once_runs_only_the_latest_missed_occurrence(engine, sessions):
    sid, latest = daily_two_hours_ago(sessions, missed="once")

    tick(engine)

    [job] = jobs_of(sessions, sid)
    assert job.scheduled_for == latest
    assert [r.scheduled_for for r in runs_of(sessions, sid)] == [latest]
    after = schedule(sessions, sid)
    assert after.skipped_runs == 0  # dropped, not counted
    assert after.next_occurrence == latest + timedelta(days=1)


def test_a_long_downtime_of_a_one_second_interval_is_counted_without_a_step_per_second(
    engine, sessions
):
    sid = add_schedule(sessions, interval_s=1, missed="skip", overlap="allow")
    first = aligned(db_now(sessions), 1) - timedelta(days=365)
    move(sessions, sid, first)

    tick(engine)

    after = schedule(sessions, sid)
    handled = (after.next_occurrence - first).total_seconds()
    jobs = jobs_of(sessions, sid)
    assert 59 <= len(jobs) <= 62  # the last minute's occurrences are not missed
    assert after.skipped_runs == handled - len(jobs)
    assert after.skipped_runs > 365 * 86400 - 100


def test_a_schedule_whose_job_type_is_gone_is_paused_and_the_others_still_fire(engine, sessions):
    gone = add_schedule(sessions, "gone", type="retired_sync")
    fine = add_schedule(sessions, "fine")
    hour = aligned(db_now(sessions), 3600)
    move(sessions, gone, hour)
    move(sessions, fine, hour)

    fired = tick(engine)

    assert [f.schedule_id for f in fired] == [fine]
    paused = schedule(sessions, gone)
    assert paused.paused
    assert paused.paused_reason == "job type 'retired_sync' is not registered"
    assert jobs_of(sessions, gone) == []
    with sessions() as session:
        [entry] = session.scalars(select(AuditEntry)).all()
    assert (entry.actor, entry.action, entry.tenant) == ("scheduler", "schedule.pause", "acme")
    assert entry.reason == paused.paused_reason
    assert entry.details == {"schedule_id": str(gone), "name": "gone"}


def test_one_failing_schedule_does_not_stop_the_tick(engine, sessions):
    broken = add_schedule(sessions, "broken")
    fine = add_schedule(sessions, "fine")
    hour = aligned(db_now(sessions), 3600)
    move(sessions, broken, hour)
    move(sessions, fine, hour)
    # A cron expression the cadence cannot read (written past the API's checks).
    with sessions.begin() as session:
        session.execute(
            text("UPDATE schedules SET cron = 'not a cron', interval_s = NULL WHERE id = :id"),
            {"id": broken},
        )

    fired = tick(engine)

    assert [f.schedule_id for f in fired] == [fine]
    put_off = schedule(sessions, broken)
    assert put_off.next_occurrence == hour  # not handled: tried again later
    retry_in = put_off.next_fire_at - db_now(sessions)
    assert timedelta(seconds=50) < retry_in <= timedelta(seconds=occurrences.RETRY_AFTER_S)
    assert tick(engine) == []  # it does not fill every batch meanwhile
    with sessions() as session:
        assert schedule_lag.lags(session)["acme/broken"] > 0  # and it shows as late


def test_jitter_is_applied_when_created_and_delays_firing(engine, sessions):
    sid = add_schedule(sessions, jitter_s=600)
    created = schedule(sessions, sid)
    delay = created.next_fire_at - created.next_occurrence
    assert timedelta(0) <= delay < timedelta(seconds=600)
    assert delay == Cadence(None, 3600, "UTC", 600).jitter(sid, created.next_occurrence)

    # In real time: a one-second schedule whose occurrences are each delayed by up to 3 s.
    quick = add_schedule(sessions, "quick", interval_s=1, jitter_s=3, overlap="allow")
    cadence = Cadence(None, 1, "UTC", 3)

    def runs() -> list[ScheduleRun]:
        tick(engine)
        return len(found := runs_of(sessions, quick)) >= 4 and found

    for run in wait_for(runs, timeout=20, what="four occurrences"):
        # created_at is the tick's transaction time: never before the delayed fire time.
        assert run.created_at >= cadence.fire_at(quick, run.scheduled_for), run
    assert [j.scheduled_for for j in jobs_of(sessions, quick)] == [
        r.scheduled_for for r in runs_of(sessions, quick)
    ]


def test_paused_schedules_never_fire(engine, sessions):
    sid = add_schedule(sessions, paused=True)
    move(sessions, sid, aligned(db_now(sessions), 3600) - timedelta(hours=5))

    assert tick(engine) == []
    assert runs_of(sessions, sid) == []


def test_the_lag_shows_a_stalled_schedule_and_zero_for_an_on_time_one(engine, sessions):
    add_schedule(sessions, "on-time")
    stalled = add_schedule(sessions, "stalled")
    add_schedule(sessions, "paused", paused=True)
    an_hour_ago = aligned(db_now(sessions), 3600) - timedelta(hours=1)
    move(sessions, stalled, an_hour_ago)  # no scheduler has handled it since

    with sessions() as session:
        lags = schedule_lag.lags(session)
    late = (db_now(sessions) - an_hour_ago).total_seconds()
    assert lags["acme/on-time"] == 0
    assert late - 5 <= lags["acme/stalled"] <= late
    assert "acme/paused" not in lags

    [fired] = tick(engine)  # no worker starts the job: still late, counted from its occurrence
    with sessions() as session:
        lags = schedule_lag.lags(session)
    late = (db_now(sessions) - fired.scheduled_for).total_seconds()
    assert late - 5 <= lags["acme/stalled"] <= late
    assert lags["acme/on-time"] == 0


def test_the_tick_runs_on_sqlite(sqlite_engine):
    sessions = make_sessionmaker(sqlite_engine)
    sid = add_schedule(sessions)
    hour = aligned(datetime.now(UTC), 3600)
    move(sessions, sid, hour)

    [fired] = tick(sqlite_engine)
    assert tick(sqlite_engine) == []

    [job] = jobs_of(sessions, sid)
    assert (job.id, job.scheduled_for) == (fired.job_id, hour)
    assert [r.outcome for r in runs_of(sessions, sid)] == ["created"]


def test_the_tick_reads_due_schedules_through_their_partial_index(database_url, engine):
    bench_schedules.seed(database_url, 20_000)

    plan = bench_schedules.due_query_plan(engine)

    assert "ix_schedules_due" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_a_worker_fires_due_schedules_on_its_own(stack, sessions):
    sid = add_schedule(sessions)
    hour = aligned(db_now(sessions), 3600)
    move(sessions, sid, hour)

    worker = stack.start_worker(threads=1)

    [job] = wait_for(lambda: jobs_of(sessions, sid), timeout=30, what="the schedule's job")
    assert job.scheduled_for == hour
    assert worker.scheduler.interval_s == stack.settings.scheduler_interval_s


def test_metrics_show_each_live_schedules_lag(stack, sessions):
    add_schedule(sessions, "on-time")
    stalled = add_schedule(sessions, "stalled", tenant="globex")
    move(sessions, stalled, aligned(db_now(sessions), 3600) - timedelta(hours=1))

    metrics = stack.client.simulate_get("/metrics").text

    lags = {
        sample.labels["schedule"]: sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "courier_schedule_lag_seconds"
        for sample in family.samples
    }
    assert lags.keys() == {"acme/on-time", "globex/stalled"}
    assert lags["acme/on-time"] == 0
    assert lags["globex/stalled"] >= 3600


def test_overlap_skip_waits_for_the_last_job_to_finish_across_ticks(engine, sessions):
    sid = add_schedule(sessions, interval_s=1, overlap="skip")

    [first] = wait_for(lambda: tick(engine), timeout=10, what="the first job")

    def outcomes() -> list[str]:
        tick(engine)
        return [r.outcome for r in runs_of(sessions, sid)]

    wait_for(lambda: "skipped" in outcomes(), timeout=10, what="a skipped occurrence")
    assert [j.id for j in jobs_of(sessions, sid)] == [first.job_id]  # still queued: no other

    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == first.job_id).values(status="succeeded"))
    [second] = wait_for(lambda: tick(engine), timeout=10, what="the job after it finished")
    assert second.scheduled_for > first.scheduled_for
    runs = runs_of(sessions, sid)
    skipped = [r for r in runs if r.outcome == "skipped"]
    assert schedule(sessions, sid).skipped_runs == len(skipped) >= 1
    assert all(first.scheduled_for < r.scheduled_for < second.scheduled_for for r in skipped)


def test_adding_the_job_of_a_handled_occurrence_leaves_nothing_behind(sessions):
    sid = add_schedule(sessions, type="customer_sync", entity_id="c_7")
    at = aligned(db_now(sessions), 3600)
    with sessions.begin() as session:
        s = session.get_one(Schedule, sid)
        schedules.record_skipped(session, s, scheduled_for=at)
    with sessions.begin() as session, pytest.raises(schedules.OccurrenceTaken):
        s = session.get_one(Schedule, sid)
        schedules.add_job(
            session, s, scheduled_for=at, outcome="triggered", queue="sync", timeout_s=60
        )
    assert jobs_of(sessions, sid) == []

    add_queued(sessions, type="customer_sync", entity_id="c_7")
    with sessions.begin() as session:
        s = session.get_one(Schedule, sid)
        with pytest.raises(errors.DuplicateActiveJob):
            schedules.add_job(
                session,
                s,
                scheduled_for=at + timedelta(seconds=1),
                outcome="triggered",
                queue="sync",
                timeout_s=60,
            )
        assert s.last_job_id is None
    assert [r.scheduled_for for r in runs_of(sessions, sid)] == [at]  # no row for the refusal
