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

from sqlalchemy import Connection, bindparam, select

from store import fairness, states
from store.models import Job
from store.sql import now, now_plus, one_of

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

# A tenant's due jobs in two ranges of `ix_jobs_due_by_tenant`, so that neither reads the
# jobs that are due only later (a tenant's far-off retries or `run_at` jobs).
_TENANT_UNPUBLISHED = (
    J.queue == bindparam("p_queue"),
    J.tenant == bindparam("p_tenant"),
    J.published_at.is_(None),
    one_of(J.status, states.CLAIMABLE),
)
_DUE_TIMED = (
    select(*_COLUMNS)
    .where(*_TENANT_UNPUBLISHED, J.next_attempt_at <= now())
    .order_by(J.next_attempt_at)
)
_DUE_AT_ONCE = select(*_COLUMNS).where(
    *_TENANT_UNPUBLISHED,
    J.next_attempt_at.is_(None),
    J.created_at < now_plus(-states.API_PUBLISH_GRACE.total_seconds()),
)


# The rows are locked for the reading transaction alone, which ends before the broker is
# asked (it may keep a publisher waiting; relays take turns instead, `store.turns`). The lock
# still matters: a database that would refuse the published marks (read-only after a
# failover, a missing UPDATE privilege) refuses it too, so nothing is published that could
# not be marked, and published again every round; and rows a claim holds are skipped.
def _locked(query: Any, limit: int) -> Any:
    return query.limit(limit).with_for_update(skip_locked=True)


def read_due(
    db: Connection, *, limit: int, share: int = fairness.DEFAULT_SHARE
) -> list[JobMessage]:
    """A batch of due, unpublished jobs, shared out between tenants.

    Each queue and tenant is topped up to `share` messages in the broker. The batch is
    split in equal parts between the tenants with due jobs and room; what a tenant leaves
    of its part is split again between those that used theirs whole. Within a tenant, jobs
    due by their time (retries, `run_at`) come first, oldest first, then those due at once.
    """
    due: list[JobMessage] = []
    rooms: dict[fairness.Backlog, int] = {}
    waiting = fairness.backlogs(db)
    while waiting and len(due) < limit:
        part = -(-(limit - len(due)) // len(waiting))
        still = []
        for backlog in waiting:
            wanted = min(part, limit - len(due), rooms.get(backlog, share))
            if wanted <= 0:
                break
            rows = _due_of(db, backlog, wanted)
            if backlog not in rooms and rows:
                # Counted only for tenants with due jobs: the others cost two index probes.
                rooms[backlog] = share - fairness.in_broker(db, *backlog, cap=share)
                rows = rows[: max(rooms[backlog], 0)]
            rooms[backlog] = rooms.get(backlog, share) - len(rows)
            due.extend(rows)
            if len(rows) == wanted and rooms[backlog] > 0:
                still.append(backlog)
        waiting = still
    return due


def _due_of(db: Connection, backlog: fairness.Backlog, wanted: int) -> list[JobMessage]:
    key = {"p_queue": backlog.queue, "p_tenant": backlog.tenant}
    found: list[JobMessage] = []
    for statement in (_DUE_TIMED, _DUE_AT_ONCE):
        rows = db.execute(_locked(statement, wanted - len(found)), key).all()
        found.extend(JobMessage(*row) for row in rows)
        if len(found) == wanted:
            break
    return found


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
