"""The job table as an outbox: which jobs' messages are due for the broker.

A job is published when it is waiting, due, and has no confirmed message yet
(`published_at` is null). Dead jobs whose copy has not reached the dead-letter queue
(`dead_lettered_at` is null) are the second kind of outbox entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from store import states
from store.models import Job

J = Job.__table__.c


@dataclass(frozen=True)
class JobMessage:
    """Enough of a job to build the message that asks a worker to run it."""

    job_id: uuid.UUID
    type: str
    queue: str
    priority: int
    timeout_s: int
    correlation_id: str
    #: Attempts made when the message was built: its published mark must not outlive that.
    attempts: int
    #: The job's trace context, which its publish span continues.
    traceparent: str | None = None

    @classmethod
    def of(cls, job: Any) -> JobMessage:
        """The message of a job row (a `Job`, or a row with the same columns)."""
        return cls(
            job.id,
            job.type,
            job.queue,
            job.priority,
            job.timeout_s,
            job.correlation_id,
            job.attempts,
            job.traceparent,
        )

    @property
    def state(self) -> tuple[uuid.UUID, int]:
        """The `(job id, attempts)` pair that `transitions.mark_published` fences on."""
        return self.job_id, self.attempts


_COLUMNS = (
    J.id,
    J.type,
    J.queue,
    J.priority,
    J.timeout_s,
    J.correlation_id,
    J.attempts,
    J.traceparent,
)
#: The columns a `JobMessage` is built from, in its fields' order.
MESSAGE_COLUMNS = _COLUMNS

_DUE = select(*_COLUMNS).where(states.due_for_publishing(J)).order_by(J.next_attempt_at)


# The rows are locked for the reading transaction alone, which ends before the broker is
# asked (it may keep a publisher waiting; relays take turns instead, `store.turns`). The lock
# still matters: a database that would refuse the published marks (read-only after a
# failover, a missing UPDATE privilege) refuses it too, so nothing is published that could
# not be marked, and published again every round; and rows a claim holds are skipped.
def _locked(query: Any, limit: int) -> Any:
    return query.limit(limit).with_for_update(skip_locked=True)


def read_due(db: Connection, *, limit: int) -> list[JobMessage]:
    """A batch of due, unpublished jobs, oldest first."""
    return [JobMessage(*row) for row in db.execute(_locked(_DUE, limit))]


@dataclass(frozen=True)
class DeadLetter:
    """A dead job whose copy belongs in its queue's dead-letter queue."""

    message: JobMessage
    error_type: str | None


_MISSING_DEAD_LETTERS = select(*_COLUMNS, J.error_type).where(states.dead_letter_missing(J))


def read_missing_dead_letters(db: Connection, *, limit: int) -> Sequence[DeadLetter]:
    """Dead, unreplayed jobs whose copy is not in the dead-letter queue yet."""
    rows = db.execute(_locked(_MISSING_DEAD_LETTERS, limit))
    return [DeadLetter(JobMessage(*row[:-1]), row[-1]) for row in rows]
