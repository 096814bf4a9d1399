"""Schedules: creating, changing and reading them, and adding the job of one occurrence.

Every change a person makes (create, update, pause, resume, trigger, delete) is written to
the audit log in the transaction that makes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as insert_skipping_conflicts
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import audit, errors, submissions
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
    db_now = _db_now(session)
    _check_name_free(session, new.tenant, new.name)
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
    _flush_unless_name_taken(session)
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


#: The columns a change may set, besides the cadence's and `paused`.
_FIELDS = ("name", "type", "entity_id", "payload", "priority", "max_attempts", "overlap", "missed")
#: The cadence's columns: changing one re-points the next occurrence.
CADENCE_FIELDS = ("cron", "interval_s", "timezone", "jitter_s")


def change(session: Session, schedule: Schedule, wanted: NewSchedule, *, actor: str) -> list[str]:
    """Make the schedule what `wanted` describes (its tenant excepted), audited; the names of
    the fields that changed (`paused` last, if it did).

    A new cadence points the schedule at its first occurrence after now (database clock);
    a change of `paused` pauses or resumes it as `pause` and `resume` do. Raises
    DuplicateScheduleName for a name the tenant already uses.
    """
    values: dict[str, Any] = {f: getattr(wanted, f) for f in _FIELDS}
    values.update({f: getattr(wanted.cadence, f) for f in CADENCE_FIELDS})
    changed = [f for f, v in values.items() if getattr(schedule, f) != v]
    if "name" in changed:
        _check_name_free(session, schedule.tenant, wanted.name)
    for f in changed:
        setattr(schedule, f, values[f])
    if changed:
        db_now = _db_now(session)
        schedule.updated_at = db_now
        if set(changed) & set(CADENCE_FIELDS):
            set_next_occurrence(schedule, after=db_now)
        _flush_unless_name_taken(session)
        record(session, schedule, "schedule.update", actor=actor, changed=changed)
    toggle = pause if wanted.paused else resume
    if toggle(session, schedule, actor=actor):
        changed.append("paused")
    return changed


def pause(
    session: Session,
    schedule: Schedule,
    *,
    actor: str,
    reason: str | None = None,
    paused_reason: str | None = None,
) -> bool:
    """Pause the schedule, audited; False if it was paused already.

    `paused_reason` says why Courier itself paused it (shown with the schedule); a person's
    pause leaves it empty and gives any `reason` to the audit log alone.
    """
    if schedule.paused:
        return False
    schedule.paused = True
    schedule.paused_reason = paused_reason
    schedule.updated_at = _db_now(session)
    record(session, schedule, "schedule.pause", actor=actor, reason=reason or paused_reason)
    session.flush()
    return True


def resume(session: Session, schedule: Schedule, *, actor: str, reason: str | None = None) -> bool:
    """Resume a paused schedule at its first occurrence after now, audited; False if it was
    not paused. Occurrences that fell while it was paused are neither run nor counted."""
    if not schedule.paused:
        return False
    db_now = _db_now(session)
    schedule.paused = False
    schedule.paused_reason = None
    schedule.updated_at = db_now
    set_next_occurrence(schedule, after=db_now)
    record(session, schedule, "schedule.resume", actor=actor, reason=reason)
    session.flush()
    return True


def trigger(
    session: Session,
    schedule: Schedule,
    *,
    queue: str,
    timeout_s: int,
    actor: str,
    reason: str | None = None,
) -> Job:
    """Create the schedule's job now, outside its cadence (scheduled for the database's now),
    audited with the job.

    Raises DuplicateActiveJob while an active job of the same tenant, type and entity exists.
    """
    job = add_job(
        session,
        schedule,
        scheduled_for=_db_now(session),
        outcome="triggered",
        queue=queue,
        timeout_s=timeout_s,
    )
    session.flush()
    record(session, schedule, "schedule.trigger", actor=actor, reason=reason, job_id=job.id)
    return job


def delete(session: Session, schedule: Schedule, *, actor: str, reason: str | None = None) -> None:
    """Delete the schedule and its record of handled occurrences, audited; the jobs it created
    stay, and keep its id as their `schedule_id`."""
    record(session, schedule, "schedule.delete", actor=actor, reason=reason)
    session.delete(schedule)
    session.flush()


def record(
    session: Session,
    schedule: Schedule,
    action: str,
    *,
    actor: str,
    reason: str | None = None,
    job_id: uuid.UUID | None = None,
    changed: Sequence[str] | None = None,
) -> None:
    """Write an audit entry about the schedule, naming it by id and name."""
    details: dict[str, Any] = {"schedule_id": str(schedule.id), "name": schedule.name}
    if changed:
        details["changed"] = list(changed)
    audit.record(
        session,
        actor=actor,
        action=action,
        job_id=job_id,
        tenant=schedule.tenant,
        reason=reason,
        details=details,
    )


def _db_now(session: Session) -> datetime:
    return session.execute(select(now())).scalar_one()


def _check_name_free(session: Session, tenant: str, name: str) -> None:
    exists = session.scalar(
        select(Schedule.id).where(Schedule.tenant == tenant, Schedule.name == name)
    )
    if exists is not None:
        raise DuplicateScheduleName(f"the tenant already has a schedule named {name!r}")


def _flush_unless_name_taken(session: Session) -> None:
    # The check before the write answers the common case; a concurrent writer of the same
    # name passes it too, and the unique index then decides.
    try:
        session.flush()
    except IntegrityError as e:
        if not _names_taken(e):
            raise
        raise DuplicateScheduleName() from None


def _names_taken(error: IntegrityError) -> bool:
    # PostgreSQL names the index; SQLite names its columns.
    message = str(error.orig)
    return "uq_schedules_tenant_name" in message or "schedules.tenant, schedules.name" in message


class ScheduleNotFound(errors.StoreError):
    """No such schedule, or not one the caller may see."""


@dataclass(frozen=True)
class LastRun:
    """The job a schedule created most recently, and its status now."""

    job_id: uuid.UUID
    scheduled_for: datetime
    status: str


def get(
    session: Session, schedule_id: uuid.UUID, *, tenant: str | None, lock: bool = False
) -> Schedule:
    """The schedule, if it exists and `tenant` (None: any tenant) may see it; with `lock`,
    locked until the transaction ends, so that a change and the scheduler's handling of an
    occurrence happen one after the other."""
    query = select(Schedule).where(Schedule.id == schedule_id)
    if lock:
        query = query.with_for_update()
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
        session.execute(sqlalchemy.delete(JOBS).where(JOBS.c.id == job.id))
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
