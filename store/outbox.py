"""The job table as an outbox: what is due for publishing, and the message that carries it.

A job is published when it is queued or retrying, due, and has no confirmed message yet
(`published_at` is null). Dead jobs whose copy has not reached the dead-letter queue
(`dead_lettered_at` is null) are the second kind of outbox entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from dramatiq import Message
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.models import Job
from store.types import utcnow


@dataclass(frozen=True)
class Pending:
    """Enough of a job to build its message."""

    job_id: uuid.UUID
    type: str
    queue: str
    priority: int
    timeout_s: int
    correlation_id: str


_PENDING_COLUMNS = (Job.id, Job.type, Job.queue, Job.priority, Job.timeout_s, Job.correlation_id)


def pending_of(job: Job) -> Pending:
    """The outbox view of a job just written."""
    return Pending(job.id, job.type, job.queue, job.priority, job.timeout_s, job.correlation_id)


def message_for(pending: Pending) -> Message[None]:
    """The Dramatiq message that asks a worker to run the job; the body names only the job."""
    return Message(
        queue_name=pending.queue,
        actor_name=pending.type,
        args=(str(pending.job_id),),
        kwargs={},
        options={
            "broker_priority": pending.priority,
            "time_limit": pending.timeout_s * 1000,
            "correlation_id": pending.correlation_id,
        },
    )


def lock_due(session: Session, *, limit: int) -> Sequence[Pending]:
    """Lock a batch of due, unpublished jobs; other relays skip the locked rows."""
    now = utcnow()
    rows = session.execute(
        select(*_PENDING_COLUMNS)
        .where(
            Job.published_at.is_(None),
            Job.status.in_(("queued", "retrying")),
            (Job.next_attempt_at.is_(None)) | (Job.next_attempt_at <= now),
        )
        .order_by(Job.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [Pending(*row) for row in rows]


def mark_published(session: Session, job_ids: Sequence[uuid.UUID]) -> None:
    """Record that the broker confirmed these jobs' messages."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.published_at.is_(None))
            .values(published_at=utcnow())
        )


def unpublish_all_active(session: Session) -> int:
    """Forget every active job's publication, for a broker that lost its queues (memory://)."""
    return session.execute(
        update(Job).where(Job.status.in_(("queued", "retrying"))).values(published_at=None)
    ).rowcount
