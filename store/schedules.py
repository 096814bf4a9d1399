"""Schedules: creating them, with their first occurrence set by the database's clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store import errors
from store.cadence import Cadence
from store.ids import new_id
from store.models import Schedule
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
