"""How late each live schedule is in starting its latest due occurrence.

A schedule that silently stops firing (no scheduler running, its job stuck in the queue)
shows as a growing lag; one that fires on time shows 0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import false, select
from sqlalchemy.orm import Session

from store import states
from store.cadence import Cadence
from store.models import JOBS, SCHEDULE_RUNS, SCHEDULES
from store.sql import now

S, J, R = SCHEDULES.c, JOBS.c, SCHEDULE_RUNS.c

# One pass over the live schedules; the last job and its run row are primary-key lookups.
_LIVE = (
    select(
        now().label("now"),
        S.id,
        S.tenant,
        S.name,
        S.cron,
        S.interval_s,
        S.timezone,
        S.jitter_s,
        S.next_occurrence,
        S.next_fire_at,
        S.last_scheduled_for,
        J.status,
        J.started_at,
        R.outcome,
    )
    .select_from(SCHEDULES)
    .outerjoin(JOBS, J.id == S.last_job_id)
    .outerjoin(SCHEDULE_RUNS, (R.schedule_id == S.id) & (R.scheduled_for == S.last_scheduled_for))
    .where(S.paused == false())
)


def lags(session: Session) -> dict[str, float]:
    """Seconds each unpaused schedule (`"<tenant>/<name>"`) is late.

    Late means: its next occurrence's fire time has passed and the scheduler has not handled
    it (now minus that time), or else its last job is still queued and not started (now
    minus when its occurrence fired); otherwise 0.
    """
    result: dict[str, float] = {}
    for row in session.execute(_LIVE):
        result[f"{row.tenant}/{row.name}"] = max(_late_since(row, row.now), 0.0)
    return result


def _late_since(row: Any, db_now: datetime) -> float:
    cadence = Cadence(row.cron, row.interval_s, row.timezone, row.jitter_s)
    # From the occurrence itself rather than `next_fire_at`, which the scheduler moves on
    # when it puts off a schedule it failed to handle.
    due_at = min(row.next_fire_at, cadence.fire_at(row.id, row.next_occurrence))
    if due_at <= db_now:
        return (db_now - due_at).total_seconds()
    if row.status == states.Status.QUEUED and row.started_at is None:
        fired = row.last_scheduled_for
        if row.outcome != "triggered":  # a triggered job's time is when it was asked for
            fired = cadence.fire_at(row.id, fired)
        return (db_now - fired).total_seconds()
    return 0.0
