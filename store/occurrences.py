"""The scheduler's tick: the occurrences that are due become jobs, exactly once.

Every worker process runs the tick; none leads. A tick locks a batch of due schedules with
`FOR UPDATE SKIP LOCKED`, so concurrent ticks split the work instead of queueing behind
each other, and each schedule is advanced with a compare-and-set on its `next_occurrence`.
The run row's primary key (schedule, occurrence), inserted with the job, is the last word:
whichever process inserts it first wins. Everything is decided by the database's clock.

The tick's cost follows the due schedules, not all of them: it reads `ix_schedules_due`.
Jobs it creates wait in the outbox (`published_at` null) for the relay to publish.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import CursorResult, Select, false, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from store import audit, errors, quotas, schedules, states
from store.cadence import EPOCH, Cadence
from store.models import SCHEDULES, Job, Schedule
from store.sql import now, now_plus

log = logging.getLogger(__name__)

#: An occurrence that fires more than this late was missed (the scheduler was down).
MISSED_AFTER_S = 60
#: The most cron occurrences one schedule's catch-up counts one by one; a minutely cron
#: reaches it after 69 days of downtime, and occurrences beyond it are not counted.
MAX_CRON_STEPS = 100_000
#: A schedule whose handling failed (a bug, a value the database refused) is tried again
#: this much later.
RETRY_AFTER_S = 60


@dataclass(frozen=True)
class Fired:
    """A job the tick created for one occurrence of a schedule."""

    job_id: uuid.UUID
    schedule_id: uuid.UUID
    schedule: str  # "<tenant>/<name>"
    scheduled_for: datetime


@dataclass(frozen=True)
class Plan:
    """What to do with a schedule's due occurrences, decided from its cadence and the clock."""

    run: list[datetime]  # each gets a job (or an overlap skip), in order
    missed_skipped: int  # missed occurrences dropped and counted (missed="skip")
    next_occurrence: datetime
    next_fire_at: datetime


def due_schedules(limit: int) -> Select[Schedule]:
    """Live schedules whose next occurrence fires by now, soonest first; concurrent ticks
    skip each other's rows."""
    return (
        select(Schedule)
        .where(Schedule.paused == false(), Schedule.next_fire_at <= now())
        .order_by(Schedule.next_fire_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def fire_due(
    session: Session,
    *,
    queues: Mapping[str, str],
    timeout_s: int,
    limit: int = 100,
    max_active: int = quotas.DEFAULT_MAX_ACTIVE,
) -> tuple[list[Fired], int]:
    """Handle one batch of due schedules in the caller's transaction; returns the jobs
    created and how many schedules were due (a full batch means more may be waiting).

    A schedule whose job type is not in `queues` (job type → queue) is paused with the
    reason. An occurrence that would take its tenant over `max_active` active jobs is
    recorded skipped. Any other error of one schedule is logged, its savepoint rolled back and the
    schedule tried again RETRY_AFTER_S later; the others go on.
    """
    fired: list[Fired] = []
    db_now = session.execute(select(now())).scalar_one()
    due = session.scalars(due_schedules(limit)).all()
    for schedule in due:
        schedule_id = schedule.id  # the object is expired if its savepoint is rolled back
        try:
            with session.begin_nested():
                fired += _handle(session, schedule, db_now, queues, timeout_s, max_active)
        except errors.DatabaseUnavailable:
            raise
        except schedules.OccurrenceTaken:
            log.debug("schedule %s was handled by another process", schedule_id)
        except Exception:
            log.exception(
                "schedule %s could not be handled; tried again in %ss", schedule_id, RETRY_AFTER_S
            )
            _put_off(session, schedule_id)
    return fired, len(due)


def _put_off(session: Session, schedule_id: uuid.UUID) -> None:
    """Retry a schedule that failed later, so that it neither fills every batch (starving the
    others) nor logs its error every tick. Its next occurrence stays, so its lag still shows."""
    with session.begin_nested():
        session.execute(
            update(SCHEDULES)
            .where(SCHEDULES.c.id == schedule_id)
            .values(next_fire_at=now_plus(RETRY_AFTER_S))
        )


def _handle(
    session: Session,
    schedule: Schedule,
    db_now: datetime,
    queues: Mapping[str, str],
    timeout_s: int,
    max_active: int,
) -> list[Fired]:
    queue = queues.get(schedule.type)
    if queue is None:
        _pause_unregistered(session, schedule, db_now)
        return []
    cadence = schedules.cadence_of(schedule)
    plan = plan_due(
        cadence, schedule.id, first=schedule.next_occurrence, missed=schedule.missed, now=db_now
    )
    active = schedule.overlap == "skip" and _last_job_active(session, schedule)
    skipped = plan.missed_skipped
    fired: list[Fired] = []
    # The schedule's row is written once, at the end (its changes are not flushed before).
    with session.no_autoflush:
        for occurrence in plan.run:
            if active or quotas.over_quota(session, schedule.tenant, max_active=max_active):
                schedules.record_skipped(session, schedule, scheduled_for=occurrence)
                skipped += 1
                continue
            try:
                job = schedules.add_job(
                    session,
                    schedule,
                    scheduled_for=occurrence,
                    outcome="created",
                    queue=queue,
                    timeout_s=timeout_s,
                )
            except (errors.DuplicateActiveJob, errors.EntityBusy):
                # The active-job rule: another job of this tenant, type and entity is running.
                schedules.record_skipped(session, schedule, scheduled_for=occurrence)
                skipped += 1
                continue
            active = schedule.overlap == "skip"
            fired.append(
                Fired(job.id, schedule.id, f"{schedule.tenant}/{schedule.name}", occurrence)
            )
        _advance(session, schedule, plan, skipped)
    return fired


def _advance(session: Session, schedule: Schedule, plan: Plan, skipped: int) -> None:
    """Move the schedule past now with what this tick did to it, if no other process moved it
    since it was read (else OccurrenceTaken, and the caller rolls back)."""
    s = SCHEDULES.c
    values = {
        "next_occurrence": plan.next_occurrence,
        "next_fire_at": plan.next_fire_at,
        "skipped_runs": schedule.skipped_runs + skipped,
        "last_job_id": schedule.last_job_id,
        "last_scheduled_for": schedule.last_scheduled_for,
    }
    result = session.execute(
        update(SCHEDULES)
        .where(
            s.id == schedule.id,
            # The value the schedule was read with: it is not written back before this.
            s.next_occurrence == schedule.next_occurrence,
            s.paused == false(),
        )
        .values(values)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        raise schedules.OccurrenceTaken()
    # The row says so now: the object learns the values without writing them again.
    for name, value in values.items():
        set_committed_value(schedule, name, value)


def _last_job_active(session: Session, schedule: Schedule) -> bool:
    if schedule.last_job_id is None:
        return False
    status = session.scalar(select(Job.status).where(Job.id == schedule.last_job_id))
    return status in states.ACTIVE


def _pause_unregistered(session: Session, schedule: Schedule, db_now: datetime) -> None:
    reason = f"job type {schedule.type!r} is not registered"
    schedule.paused = True
    schedule.paused_reason = reason
    schedule.updated_at = db_now
    audit.record(
        session,
        actor="scheduler",
        action="schedule.pause",
        tenant=schedule.tenant,
        reason=reason,
        details={"schedule_id": str(schedule.id), "name": schedule.name},
    )
    session.flush()
    log.warning(
        "schedule %s/%s (%s) paused: %s", schedule.tenant, schedule.name, schedule.id, reason
    )


def plan_due(
    cadence: Cadence, schedule_id: uuid.UUID, *, first: datetime, missed: str, now: datetime
) -> Plan:
    """Which occurrences from `first` (included) are due at `now`, which were missed, and
    where the schedule goes next.

    Occurrences are handled in order: one whose jitter would fire it before an earlier one
    fires with that one. An occurrence that fires more than MISSED_AFTER_S late was missed;
    with missed="skip" the missed ones are counted and dropped, with "once" only the latest
    of them runs. Occurrences that are missed whatever their jitter are counted without
    being visited one by one, so a long downtime costs little.
    """
    late_before = now - timedelta(seconds=MISSED_AFTER_S)
    missed_count, latest_missed, cursor = _surely_missed(
        cadence, first, before=late_before - timedelta(seconds=cadence.jitter_s)
    )
    run: list[datetime] = []
    occurrences = _from(cadence, cursor)
    occurrence = next(occurrences)
    fires = cadence.fire_at(schedule_id, occurrence)
    while fires <= now:
        if fires < late_before:
            missed_count, latest_missed = missed_count + 1, occurrence
        else:
            run.append(occurrence)
        occurrence = next(occurrences)
        fires = max(cadence.fire_at(schedule_id, occurrence), fires)
    if missed == "once":
        once = [latest_missed] if latest_missed is not None else []
        return Plan(once + run, 0, occurrence, fires)
    return Plan(run, missed_count, occurrence, fires)


def _surely_missed(
    cadence: Cadence, first: datetime, *, before: datetime
) -> tuple[int, datetime | None, datetime]:
    """How many occurrences from `first` lie before `before`, the latest of them, and the
    first occurrence from `before` on."""
    if first >= before:
        return 0, None, first
    if cadence.interval_s is not None:
        step = timedelta(seconds=cadence.interval_s)
        k_first = -((EPOCH - first) // step)  # ceiling: the first aligned occurrence
        k_last, rest = divmod(before - EPOCH, step)
        if not rest:
            k_last -= 1
        if k_last < k_first:
            return 0, None, first
        return k_last - k_first + 1, EPOCH + k_last * step, EPOCH + (k_last + 1) * step
    count, latest = 0, None
    for occurrence in _from(cadence, first):
        if occurrence >= before:
            return count, latest, occurrence
        count, latest = count + 1, occurrence
        if count == MAX_CRON_STEPS:
            break
    # Capped: the rest are dropped uncounted; the latest is looked up directly.
    cursor = cadence.after(before - timedelta(microseconds=1))
    return count, _cron_latest_before(cadence, before), cursor


def _cron_latest_before(cadence: Cadence, moment: datetime) -> datetime:
    assert cadence.cron is not None
    start = (moment + timedelta(minutes=1)).astimezone(ZoneInfo(cadence.timezone))
    for local in CronSim(cadence.cron, start, reverse=True):
        occurrence = local.astimezone(UTC)
        if occurrence < moment:
            return occurrence
    raise AssertionError("a checked cron expression fires")  # pragma: no cover


def _from(cadence: Cadence, first: datetime) -> Iterator[datetime]:
    return cadence.occurrences_after(first - timedelta(microseconds=1))
