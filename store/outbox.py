"""The job table as an outbox: what is due for publishing, and the message that carries it.

A job is published when it is queued or retrying, due, and has no confirmed message yet
(`published_at` is null). Dead jobs whose copy has not reached the dead-letter queue
(`dead_lettered_at` is null) are the second kind of outbox entry.
"""

from __future__ import annotations

import atexit
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from dramatiq import Broker, Message
from dramatiq.errors import BrokerConnectionError
from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from store import ledger, publisher
from store.models import Job
from store.types import UtcDateTime, utcnow

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


JOBS = Job.__table__
J = JOBS.c

# Built once: it runs after every publish. Fenced on the attempts the message was built
# for (see mark_published); rows a worker holds are skipped (see ledger.unlocked_attempts).
_MARK = (
    update(JOBS)
    .where(
        J.id.in_(
            ledger.unlocked_attempts(
                "p_marks",
                # By primary key only: ix_jobs_due holds every unpublished job, and a plan
                # through it reads all of them for every mark during a burst.
                ledger.STATUS.in_(("queued", "retrying")),
                J.published_at.is_(None),
            )
        )
    )
    .values(published_at=bindparam("p_now", type_=UtcDateTime()))
)
_MARKS_PER_STATEMENT = 1000


def mark_published(db: Session | Connection, pendings: Sequence[Pending]) -> None:
    """Record that the broker took these jobs' messages.

    Only where the job is still in the state the message was built for: a worker may have
    claimed the job and scheduled a retry meanwhile, and that retry still needs publishing.
    A job whose row is locked elsewhere is left unmarked; should it still be waiting after
    the grace, the relay publishes it again and the claim refuses the extra copy.
    """
    now = utcnow()
    for start in range(0, len(pendings), _MARKS_PER_STATEMENT):
        chunk = pendings[start : start + _MARKS_PER_STATEMENT]
        db.execute(_MARK, {"p_marks": [(p.job_id, p.attempts) for p in chunk], "p_now": now})


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


def publish(
    broker: Broker,
    sessions: sessionmaker[Session],
    pendings: Sequence[Pending],
    *,
    marker: Marker | None = None,
    group: publisher.GroupPublisher | None = None,
) -> int:
    """Publish freshly committed jobs now and mark them; what fails is left to the relay.

    With `group`, in one transaction with what other threads publish at the same moment.
    The marks are written before returning, or by `marker` shortly after. Returns how many
    were published. Never raises for a broker outage: the job is safe in SQL.
    """
    messages = [message_for(p) for p in pendings]
    try:
        if group is not None:
            group.send(messages)
        else:
            publisher.send(broker, messages)
    except BrokerConnectionError:
        log.warning("broker unavailable; %d job(s) left to the relay", len(pendings))
        return 0
    if marker is not None:
        marker.add(pendings)
        return len(pendings)
    try:
        with sessions.begin() as session:
            mark_published(session, pendings)
    except DBAPIError:
        # The relay will publish them again; the claim makes the duplicate harmless.
        log.warning("could not mark %d job(s) published", len(pendings), exc_info=True)
    return len(pendings)


class Marker:
    """Marks published jobs from a background thread, all that came in one interval per UPDATE.

    A transaction of its own per accepted job cost the API as much as accepting the job.
    `interval_s` is far inside API_PUBLISH_GRACE, so the relay still leaves these jobs
    alone. A mark lost to a crash lets the relay publish the job a second time, which the
    worker's claim refuses; the job itself is safe in SQL from before the publish.
    The thread starts with the first mark, stops after `idle_s` without any, and whatever
    is queued is written by `close()`, which also runs at interpreter exit.
    """

    def __init__(self, engine: Engine, *, interval_s: float = 0.05, idle_s: float = 1.0) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._idle_rounds = max(1, round(idle_s / interval_s))
        self._lock = threading.Lock()
        self._queued: list[Pending] = []
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._at_exit = False

    def add(self, pendings: Sequence[Pending]) -> None:
        """Queue marks for messages the broker has taken."""
        with self._lock:
            self._queued.extend(pendings)
            if self._thread is None:
                if not self._at_exit:
                    atexit.register(self.close)
                    self._at_exit = True
                self._thread = threading.Thread(target=self._run, name="outbox-marker", daemon=True)
                self._thread.start()

    def flush(self) -> int:
        """Write the marks queued so far; returns how many there were."""
        with self._lock:
            batch, self._queued = self._queued, []
        if batch:
            try:
                with self._engine.begin() as db:
                    mark_published(db, batch)
            except Exception:
                # The relay publishes them again after its grace; the claim refuses the copy.
                log.warning("could not mark %d job(s) published", len(batch), exc_info=True)
        return len(batch)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and write what is still queued."""
        self._closing.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        self.flush()

    def _run(self) -> None:
        idle = 0
        while not self._closing.wait(self._interval_s):
            if self.flush():
                idle = 0
                continue
            idle += 1
            if idle >= self._idle_rounds:
                with self._lock:
                    if not self._queued:
                        self._thread = None
                        return
        with self._lock:
            self._thread = None
        self.flush()
