"""The job's state machine: its statuses, their groups, and the rule of every transition.

Each rule is a SQL condition (or the SQL value of a new status) over the jobs table's
columns, so that the one statement of each transition (`store.transitions`) and the
listing queries share it. The rules take the columns as an argument, so they apply to the
table and to an alias of it alike.

    queued ──claim──▶ running ──finish──▶ succeeded | failed | dead | cancelled
      ▲                 │  └──finish (retryable)──▶ retrying ──claim──▶ running
      └── replay        └──reap (lease expired, or hung)──▶ retrying | dead | cancelled
    queued | retrying ──cancel, purge──▶ cancelled      queued | retrying ──bury──▶ dead
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, literal, null, or_
from sqlalchemy.sql.expression import ColumnCollection

from store.sql import now, now_plus, one_of


class Status(StrEnum):
    """A job's status."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


class AttemptStatus(StrEnum):
    """How one attempt ended (`abandoned`: its worker vanished; it still counts)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"


class Decision(StrEnum):
    """What a failed attempt decided for its job."""

    RETRY = "retry"
    SKIP = "skip"
    DEAD = "dead"


#: Not finished: at most one active job per tenant, type and entity.
ACTIVE = (Status.QUEUED, Status.RUNNING, Status.RETRYING)
#: Waiting for a worker: a claim may take these (when due and not cancelled).
CLAIMABLE = (Status.QUEUED, Status.RETRYING)
#: Finished for good: written once, never left.
TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.DEAD, Status.CANCELLED)
#: What a retryable failure asks for, retries left or not: a cancel request beats either.
RETRYABLE_ENDS = (Status.RETRYING, Status.DEAD)
#: Finished jobs a replay may start again (as a new, linked job).
REPLAYABLE = (Status.FAILED, Status.DEAD, Status.CANCELLED)

ALL = ACTIVE + TERMINAL

#: Jobs due at once are the API's to publish; the relay steps in after this long.
API_PUBLISH_GRACE = timedelta(seconds=2)
#: The worker that buries a job publishes its dead letter itself; the relay copies those
#: still missing after this long (the worker died, or the broker was down).
DEAD_LETTER_GRACE = timedelta(seconds=5)

#: The error of an attempt whose worker stopped renewing its lease.
WORKER_LOST = "WorkerLost"
#: The error of an attempt still running past its time limit and grace (a hung thread).
TIME_LIMIT_EXCEEDED = "TimeLimitExceeded"


def in_sql(statuses: tuple[str, ...]) -> str:
    """`status IN (...)` as SQL text, for partial indexes."""
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def status_of(j: ColumnCollection[str, Any]) -> ColumnElement[str]:
    """The status for tests beside a primary-key lookup.

    A queue's mix of statuses changes faster than the planner's statistics, and a plan that
    tests the status through an index reads the whole backlog per call; `status || ''` is
    the same value but no index condition, so the primary key drives the plan.
    """
    return j.status.concat("")


# --- the rules --------------------------------------------------------------------------


def claimable_now(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Claim: waiting, due by the database's clock, and nobody asked it to stop."""
    return and_(
        one_of(status_of(j), CLAIMABLE),
        j.cancel_requested_at.is_(None),
        or_(j.next_attempt_at.is_(None), j.next_attempt_at <= now()),
    )


def waiting_not_due(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """A message for such a job came early (a stale duplicate): the relay publishes it anew."""
    return and_(
        one_of(status_of(j), CLAIMABLE),
        j.cancel_requested_at.is_(None),
        j.next_attempt_at > now(),
    )


def cancel_pending(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Claim: waiting, yet someone asked it to stop; the claim refuses it and cancels it.

    A cancel ends a waiting job at once, so this only holds for a row written otherwise;
    left waiting, every copy of its message would be refused and it would never end.
    """
    return and_(one_of(status_of(j), CLAIMABLE), j.cancel_requested_at.is_not(None))


def running_attempt(j: ColumnCollection[str, Any], number: Any) -> ColumnElement[bool]:
    """The fence of every write after a claim: the job still runs this very attempt.

    A worker that lost its lease (frozen, partitioned, reaped) can change nothing any more.
    """
    return and_(status_of(j) == Status.RUNNING, j.attempts == number)


def status_after_attempt(j: ColumnCollection[str, Any], asked: Any) -> ColumnElement[str]:
    """Finish: the status an attempt's outcome asks for, except that a cancel beats a
    retryable failure.

    A job someone asked to stop ends cancelled whether its failed attempt asked for a retry
    or, its attempts spent, a dead letter. The request is read by the statement that writes
    the outcome, so a cancel recorded while the attempt was failing is never overtaken. A
    success or a skip is the job's own verdict and stands.
    """
    return case(
        (
            and_(one_of(asked, RETRYABLE_ENDS), j.cancel_requested_at.is_not(None)),
            Status.CANCELLED,
        ),
        else_=asked,
    )


def lease_expired(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Reap: a running attempt whose worker stopped renewing its lease."""
    return and_(j.status == Status.RUNNING, j.lease_expires_at < now())


def hung(
    j: ColumnCollection[str, Any], attempt_started_at: Any, grace_s: Any
) -> ColumnElement[bool]:
    """Reap: a running attempt past its time limit plus a grace, however alive its worker.

    A heartbeat renews every lease of its process, including that of a thread hung where
    the time limit cannot interrupt it (a blocking call in C); such an attempt is abandoned
    so that its job runs again, and the fence keeps the hung thread's late finish out.
    """
    return and_(
        j.status == Status.RUNNING,
        attempt_started_at < now_plus(-(j.timeout_s + grace_s)),
    )


def reapable(
    j: ColumnCollection[str, Any], attempt_started_at: Any, grace_s: Any
) -> ColumnElement[bool]:
    """Reap: a running attempt whose worker is gone (lease expired) or hung past its limit."""
    return or_(lease_expired(j), hung(j, attempt_started_at, grace_s))


def status_after_reap(j: ColumnCollection[str, Any]) -> ColumnElement[str]:
    """Reap: a retryable failure, so crashes count and a job whose worker dies every time
    ends dead; a cancel beats that as it beats any retryable failure."""
    spent = case(
        (j.attempts >= j.max_attempts, literal(Status.DEAD)), else_=literal(Status.RETRYING)
    )
    return status_after_attempt(j, spent)


def decision_for(status: Any) -> ColumnElement[str]:
    """The decision recorded on the attempt that left its job in `status` (none for success)."""
    return case(
        (status == Status.SUCCEEDED, null()),
        (status == Status.RETRYING, literal(Decision.RETRY)),
        (status == Status.DEAD, literal(Decision.DEAD)),
        else_=literal(Decision.SKIP),
    )


def cancellable_at_once(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Cancel: a waiting job stops at once; a running one is asked to stop at a checkpoint."""
    return one_of(status_of(j), CLAIMABLE)


def purgeable(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Purge: every waiting job (those a cancel stops at once); running ones finish.

    Tested on the status itself, not `status_of`: a purge reads a queue's whole backlog, which
    the status index finds without reading the finished jobs.
    """
    return one_of(j.status, CLAIMABLE)


def due_for_publishing(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Relay: waiting, unpublished, and due (a job due at once after the API's grace)."""
    return and_(
        j.published_at.is_(None),
        one_of(j.status, CLAIMABLE),
        or_(
            and_(
                j.next_attempt_at.is_(None),
                j.created_at < now_plus(-API_PUBLISH_GRACE.total_seconds()),
            ),
            j.next_attempt_at <= now(),
        ),
    )


def waiting_in_broker(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Reconcile: published and not claimed yet, so the broker should still hold its message."""
    return and_(j.published_at.is_not(None), one_of(j.status, CLAIMABLE))


def unpublished_in_state(j: ColumnCollection[str, Any], attempts: Any) -> ColumnElement[bool]:
    """Mark published: only the state the message was built for.

    A worker may have claimed the job and scheduled a retry meanwhile, and that retry still
    needs publishing. Or it may have parked the job (a limit or a circuit held it back),
    which keeps its attempts but makes it due later: that state needs publishing too, and a
    message is only ever built for a job due now.
    """
    return and_(
        one_of(status_of(j), CLAIMABLE),
        j.published_at.is_(None),
        j.attempts == attempts,
        or_(j.next_attempt_at.is_(None), j.next_attempt_at <= now()),
    )


def dead_letter_missing(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Relay: a dead, unreplayed job whose copy is not in the dead-letter queue yet."""
    return and_(
        j.status == Status.DEAD,
        j.dead_lettered_at.is_(None),
        j.replayed_by.is_(None),
        j.finished_at < now_plus(-DEAD_LETTER_GRACE.total_seconds()),
    )


def dead_letter(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Dead and not replayed yet: listed as a dead letter, and replayable in bulk."""
    return and_(j.status == Status.DEAD, j.replayed_by.is_(None))


def replayable(j: ColumnCollection[str, Any]) -> ColumnElement[bool]:
    """Replay: finished in a replayable state, and nobody replayed it yet."""
    return and_(j.replayed_by.is_(None), one_of(j.status, REPLAYABLE))


#: Every status's name, in lifecycle order (for listings, filters and schemas).
VALUES = tuple(str(s) for s in ALL)
ATTEMPT_VALUES = tuple(str(s) for s in AttemptStatus)
DECISION_VALUES = tuple(str(d) for d in Decision)
