"""Schedules: creating and reading them, and adding the job of one occurrence."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as insert_skipping_conflicts
from sqlalchemy.orm import Session

from store import errors, submissions
from store.cadence import Cadence
from store.ids import new_id
from store.models import JOBS, SCHEDULE_RUNS, Job, Schedule
from store.sql import now

OVERLAP = ("skip", "allow")
MISSED = ("skip", "once")


@dataclass(frozen=True, kw_only=True)
class NewSchedule:
    """A validated request for a schedule."""

    tenant: str
    name: str
    type: str
    cadence: Cadence
    entity_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int
    overlap: str = "skip"
    missed: str = "once"
    paused: bool = False


class DuplicateScheduleName(errors.StoreError):
    """The tenant already has a schedule of that name."""


def create(session: Session, new: NewSchedule) -> Schedule:
    """Insert a schedule whose first occurrence is the first one after now (database clock).

    Raises DuplicateScheduleName.
    """
    db_now = session.execute(select(now())).scalar_one()
    exists = session.scalar(
        select(Schedule.id).where(Schedule.tenant == new.tenant, Schedule.name == new.name)
    )
    if exists is not None:
        raise DuplicateScheduleName()
    schedule = Schedule(
        id=new_id(),
        tenant=new.tenant,
        name=new.name,
        type=new.type,
        entity_id=new.entity_id,
        payload=new.payload,
        priority=new.priority,
        max_attempts=new.max_attempts,
        cron=new.cadence.cron,
        interval_s=new.cadence.interval_s,
        timezone=new.cadence.timezone,
        jitter_s=new.cadence.jitter_s,
        overlap=new.overlap,
        missed=new.missed,
        paused=new.paused,
        skipped_runs=0,
        created_at=db_now,
        updated_at=db_now,
    )
    set_next_occurrence(schedule, after=db_now)
    session.add(schedule)
    session.flush()
    return schedule


def cadence_of(schedule: Schedule) -> Cadence:
    """The schedule's cadence (checked when it was stored)."""
    return Cadence(schedule.cron, schedule.interval_s, schedule.timezone, schedule.jitter_s)


def set_next_occurrence(schedule: Schedule, *, after: datetime) -> None:
    """Point the schedule at its first occurrence after `after`, and when that one fires."""
    cadence = cadence_of(schedule)
    occurrence = cadence.after(after)
    schedule.next_occurrence = occurrence
    schedule.next_fire_at = cadence.fire_at(schedule.id, occurrence)


class ScheduleNotFound(errors.StoreError):
    """No such schedule, or not one the caller may see."""


@dataclass(frozen=True)
class LastRun:
    """The job a schedule created most recently, and its status now."""

    job_id: uuid.UUID
    scheduled_for: datetime
    status: str


def get(session: Session, schedule_id: uuid.UUID, *, tenant: str | None) -> Schedule:
    """The schedule, if it exists and `tenant` (None: any tenant) may see it."""
    query = select(Schedule).where(Schedule.id == schedule_id)
    if tenant is not None:
        query = query.where(Schedule.tenant == tenant)
    schedule = session.scalars(query).one_or_none()
    if schedule is None:
        raise ScheduleNotFound(f"no schedule {schedule_id}")
    return schedule


def listing(
    session: Session,
    *,
    tenant: str | None,
    type: str | None = None,
    paused: bool | None = None,
    limit: int = 50,
    before: uuid.UUID | None = None,
) -> tuple[Sequence[Schedule], uuid.UUID | None]:
    """A page of schedules, newest first, and the cursor of the next page (None at the end)."""
    query = select(Schedule).order_by(Schedule.id.desc()).limit(limit + 1)
    if tenant is not None:
        query = query.where(Schedule.tenant == tenant)
    if type is not None:
        query = query.where(Schedule.type == type)
    if paused is not None:
        query = query.where(Schedule.paused == paused)
    if before is not None:
        query = query.where(Schedule.id < before)
    rows = session.scalars(query).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def last_runs(session: Session, schedules: Sequence[Schedule]) -> dict[uuid.UUID, LastRun]:
    """Each schedule's last run (schedules that never created a job are left out)."""
    job_ids = {s.last_job_id: s for s in schedules if s.last_job_id is not None}
    if not job_ids:
        return {}
    rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all()
    runs: dict[uuid.UUID, LastRun] = {}
    for job_id, status in rows:
        schedule = job_ids[job_id]
        assert schedule.last_scheduled_for is not None
        runs[schedule.id] = LastRun(job_id, schedule.last_scheduled_for, status)
    return runs


def next_runs(schedule: Schedule, count: int = 5) -> list[datetime]:
    """When the schedule's next `count` occurrences fire, jitter applied (none while paused)."""
    if schedule.paused:
        return []
    return cadence_of(schedule).next_runs(schedule.id, schedule.next_occurrence, count)


def add_job(
    session: Session,
    schedule: Schedule,
    *,
    scheduled_for: datetime,
    outcome: str,
    queue: str,
    timeout_s: int,
) -> Job:
    """Create the schedule's job for one occurrence and record the occurrence, in the caller's
    transaction; the schedule's last run becomes this job.

    Raises OccurrenceTaken if another process has already handled this occurrence, or
    DuplicateActiveJob / EntityBusy (the active-job rule applies to schedules too); either
    way nothing is left behind.
    """
    new = submissions.NewJob(
        tenant=schedule.tenant,
        type=schedule.type,
        queue=queue,
        entity_id=schedule.entity_id,
        payload=schedule.payload,
        priority=schedule.priority,
        max_attempts=schedule.max_attempts,
        timeout_s=timeout_s,
        schedule_id=schedule.id,
        scheduled_for=scheduled_for,
    )
    # A refused job raises here, before the occurrence is recorded; the insert was skipped,
    # not failed, so the caller's transaction stays usable.
    job, created = submissions.create_job(session, new)
    assert created  # no idempotency key: a job that is not new is a conflict, raised above
    try:
        _record_run(session, schedule, scheduled_for=scheduled_for, outcome=outcome, job_id=job.id)
    except OccurrenceTaken:
        session.execute(delete(JOBS).where(JOBS.c.id == job.id))
        raise
    schedule.last_job_id = job.id
    schedule.last_scheduled_for = scheduled_for
    return job


def record_skipped(session: Session, schedule: Schedule, *, scheduled_for: datetime) -> None:
    """Record that one occurrence got no job (overlap or the active-job rule), in the
    caller's transaction. Raises OccurrenceTaken if another process has handled it."""
    _record_run(session, schedule, scheduled_for=scheduled_for, outcome="skipped", job_id=None)


def _record_run(
    session: Session,
    schedule: Schedule,
    *,
    scheduled_for: datetime,
    outcome: str,
    job_id: uuid.UUID | None,
) -> None:
    # The primary key makes each occurrence happen once: a second insert is a no-op.
    taken = session.execute(
        insert_skipping_conflicts(SCHEDULE_RUNS)
        .values(
            schedule_id=schedule.id,
            scheduled_for=scheduled_for,
            outcome=outcome,
            job_id=job_id,
            created_at=now(),
        )
        .on_conflict_do_nothing()
        .returning(SCHEDULE_RUNS.c.schedule_id)
    ).first()
    if taken is None:
        raise OccurrenceTaken()


class OccurrenceTaken(errors.StoreError):
    """Another process has already handled this occurrence of the schedule."""
