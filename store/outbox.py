"""The job table as an outbox: what is due for publishing, and the message that carries it.

A job is published when it is queued or retrying, due, and has no confirmed message yet
(`published_at` is null). Dead jobs whose copy has not reached the dead-letter queue
(`dead_lettered_at` is null) are the second kind of outbox entry.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from dramatiq import Broker, Message
from dramatiq.errors import BrokerConnectionError
from sqlalchemy import select, tuple_, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from store import publisher
from store.models import Job
from store.types import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    """Enough of a job to build its message."""

    job_id: uuid.UUID
    type: str
    queue: str
    priority: int
    timeout_s: int
    correlation_id: str
    #: Attempts made when the message was built: its mark must not outlive that state.
    attempts: int


#: Jobs due at once are the API's to publish; the relay steps in after this long.
API_PUBLISH_GRACE = timedelta(seconds=2)

_PENDING_COLUMNS = (
    Job.id,
    Job.type,
    Job.queue,
    Job.priority,
    Job.timeout_s,
    Job.correlation_id,
    Job.attempts,
)


def pending_of(job: Job) -> Pending:
    """The outbox view of a job just written."""
    return Pending(
        job.id, job.type, job.queue, job.priority, job.timeout_s, job.correlation_id, job.attempts
    )


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
            ((Job.next_attempt_at.is_(None)) & (Job.created_at < now - API_PUBLISH_GRACE))
            | (Job.next_attempt_at <= now),
        )
        .order_by(Job.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [Pending(*row) for row in rows]


def mark_published(session: Session, pendings: Sequence[Pending]) -> None:
    """Record that the broker took these jobs' messages.

    Only where the job is still in the state the message was built for: a worker may have
    claimed the job and scheduled a retry meanwhile, and that retry still needs publishing.
    """
    if pendings:
        session.execute(
            update(Job)
            .where(
                tuple_(Job.id, Job.attempts).in_([(p.job_id, p.attempts) for p in pendings]),
                Job.status.in_(("queued", "retrying")),
                Job.published_at.is_(None),
            )
            .values(published_at=utcnow())
        )


def unpublish_all_active(session: Session) -> int:
    """Forget every active job's publication, for a broker that lost its queues (memory://)."""
    return session.execute(
        update(Job).where(Job.status.in_(("queued", "retrying"))).values(published_at=None)
    ).rowcount


# The worker that buries a job publishes its dead letter right away; the relay only steps in
# for copies still missing after this long (the worker died, or the broker was down).
DEAD_LETTER_GRACE = timedelta(seconds=5)


def lock_undead_lettered(session: Session, *, limit: int) -> list[tuple[Pending, int, str | None]]:
    """Lock dead, unreplayed jobs whose copy is not in the dead-letter queue yet."""
    rows = session.execute(
        select(*_PENDING_COLUMNS, Job.error_type)
        .where(
            Job.status == "dead",
            Job.dead_lettered_at.is_(None),
            Job.replayed_by.is_(None),
            Job.finished_at < utcnow() - DEAD_LETTER_GRACE,
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [(Pending(*row[:7]), row[6], row[7]) for row in rows]


def publish(broker: Broker, sessions: sessionmaker[Session], pendings: Sequence[Pending]) -> int:
    """Publish freshly committed jobs now and mark them; what fails is left to the relay.

    Returns how many were published. Never raises for a broker outage: the job is safe in SQL.
    """
    try:
        publisher.send(broker, [message_for(p) for p in pendings])
    except BrokerConnectionError:
        log.warning("broker unavailable; %d job(s) left to the relay", len(pendings))
        return 0
    try:
        with sessions.begin() as session:
            mark_published(session, pendings)
    except DBAPIError:
        # The relay will publish them again; the claim makes the duplicate harmless.
        log.warning("could not mark %d job(s) published", len(pendings), exc_info=True)
    return len(pendings)
