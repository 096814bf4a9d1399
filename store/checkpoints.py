"""What a running attempt writes and reads besides its state: progress, and at checkpoints
whether it still owns its job and whether a cancel was asked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from store import job_changes, states
from store.models import JOBS

J = JOBS.c

_SET_PROGRESS = (
    update(JOBS)
    .where(J.id == bindparam("p_job_id"), states.running_attempt(J, bindparam("p_number")))
    .values(progress=bindparam("p_progress"))
)
_STANDING = select(
    J.cancel_requested_at.is_not(None),
    states.running_attempt(J, bindparam("p_number")),
).where(J.id == bindparam("p_job_id"))


@dataclass(frozen=True)
class Standing:
    """What a running attempt learns at a checkpoint."""

    owned: bool  # the job still runs this very attempt (the fence of its writes)
    cancel_requested: bool


def set_progress(db: Connection, job_id: uuid.UUID, number: int, progress: dict[str, Any]) -> bool:
    """Store the running attempt's progress; False if it no longer owns the job."""
    params = {"p_job_id": job_id, "p_number": number, "p_progress": progress}
    written = bool(db.execute(_SET_PROGRESS, params).rowcount)
    if written:
        job_changes.announce(db, [job_id])
    return written


def standing(db: Connection, job_id: uuid.UUID, number: int) -> Standing:
    """Whether attempt `number` still owns its job, and whether someone asked the job to stop."""
    row = db.execute(_STANDING, {"p_job_id": job_id, "p_number": number}).one_or_none()
    if row is None:
        return Standing(owned=False, cancel_requested=False)
    return Standing(owned=bool(row[1]), cancel_requested=bool(row[0]))
