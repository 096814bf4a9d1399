"""What a running attempt writes and reads besides its state: progress, and cancel requests."""

from __future__ import annotations

import uuid
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
_CANCEL_REQUESTED = select(J.cancel_requested_at).where(J.id == bindparam("p_job_id"))


def set_progress(db: Connection, job_id: uuid.UUID, number: int, progress: dict[str, Any]) -> bool:
    """Store the running attempt's progress; False if it no longer owns the job."""
    params = {"p_job_id": job_id, "p_number": number, "p_progress": progress}
    written = bool(db.execute(_SET_PROGRESS, params).rowcount)
    if written:
        job_changes.announce(db, [job_id])
    return written


def cancel_requested(db: Connection, job_id: uuid.UUID) -> bool:
    """Whether someone asked the job to stop."""
    return db.scalar(_CANCEL_REQUESTED, {"p_job_id": job_id}) is not None
