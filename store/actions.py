"""Actions people take on jobs: cancel and replay, each with its audit entry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from store import audit, errors
from store.jobs import NewJob, create_job
from store.models import Job
from store.types import utcnow

# Core, not ORM, updates: an ORM update re-scans every object in the session, which made
# bulk replays (hundreds of jobs per session) quadratic.
JOBS = Job.__table__
J = JOBS.c

REPLAYABLE = ("failed", "dead", "cancelled")


def cancel(session: Session, job: Job, *, actor: str, reason: str | None = None) -> Job:
    """Cancel a waiting job at once, or ask a running one to stop at its next checkpoint."""
    now = utcnow()
    if job.status in ("queued", "retrying"):
        stopped = session.execute(
            update(JOBS)
            .where(J.id == job.id, J.status.in_(("queued", "retrying")))
            .values(status="cancelled", finished_at=now, cancel_requested_at=now)
        ).rowcount
        if not stopped:  # it was claimed meanwhile
            session.refresh(job)
            return cancel(session, job, actor=actor, reason=reason)
    elif job.status == "running":
        session.execute(
            update(JOBS)
            .where(J.id == job.id, J.cancel_requested_at.is_(None))
            .values(cancel_requested_at=now)
        )
    else:
        raise errors.InvalidTransition(f"the job is already {job.status}")
    audit.record(
        session, actor=actor, action="cancel", job_id=job.id, tenant=job.tenant, reason=reason
    )
    session.flush()
    session.refresh(job)
    return job


def replay(
    session: Session,
    job: Job,
    *,
    actor: str,
    payload: dict[str, Any] | None = None,
    reason: str | None = None,
    via: str = "api",
) -> Job:
    """Create a new job linked to `job` (`replay_of`/`replayed_by`); history is left as it was."""
    if job.status not in REPLAYABLE:
        raise errors.InvalidTransition(
            f"only failed, dead or cancelled jobs can be replayed, not {job.status}"
        )
    if job.replayed_by is not None:
        raise errors.InvalidTransition(f"the job was already replayed by {job.replayed_by}")
    new, _ = create_job(
        session,
        NewJob(
            tenant=job.tenant,
            type=job.type,
            queue=job.queue,
            entity_id=job.entity_id,
            payload=job.payload if payload is None else payload,
            priority=job.priority,
            max_attempts=job.max_attempts,
            timeout_s=job.timeout_s,
            correlation_id=job.correlation_id,
            replay_of=job.id,
        ),
    )
    linked = session.execute(
        update(JOBS)
        .where(J.id == job.id, J.replayed_by.is_(None), J.status.in_(REPLAYABLE))
        .values(replayed_by=new.id)
    ).rowcount
    if not linked:  # a concurrent replay won
        raise errors.InvalidTransition("the job was already replayed")
    audit.record(
        session,
        actor=actor,
        action="replay",
        job_id=job.id,
        tenant=job.tenant,
        reason=reason,
        details={"new_job_id": str(new.id), "payload_overridden": payload is not None, "via": via},
    )
    session.flush()
    session.refresh(job)
    return new
