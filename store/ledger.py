"""The attempt ledger: claim before running, fenced finish, progress, leases and the reaper.

Every write that follows a claim is fenced on `status = 'running' AND attempts = n`, so a
worker that lost its lease (frozen, partitioned, reaped) can change nothing any more.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from store.models import Attempt, Job
from store.types import UtcDateTime, utcnow

# Core tables, not ORM entities: these statements run for every message, and the ORM's
# bulk-update bookkeeping showed in profiles without buying anything here.
JOBS, ATTEMPTS = Job.__table__, Attempt.__table__
J, A = JOBS.c, ATTEMPTS.c

#: The job's status for tests next to a primary-key lookup. A queue's mix of statuses
#: changes faster than the planner's statistics, and a plan that tests the status through
#: an index reads the whole backlog (or every running job) per call; `status || ''` is the
#: same value but no index condition, so the primary key always drives the plan.
STATUS = J.status.concat("")


@dataclass(frozen=True)
class Claim:
    """What a worker needs to run one attempt of a job."""

    job_id: uuid.UUID
    number: int
    max_attempts: int
    tenant: str
    type: str
    entity_id: str | None
    payload: dict[str, Any]
    correlation_id: str
    timeout_s: int
    started_at: datetime


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How an attempt ended and where that leaves the job."""

    job_status: str  # succeeded | retrying | failed | dead | cancelled
    decision: str | None = None  # retry | skip | dead
    error_type: str | None = None
    error: str | None = None
    retry_in_ms: int | None = None
    result: dict[str, Any] | None = None

    @property
    def attempt_status(self) -> str:
        return "succeeded" if self.job_status == "succeeded" else "failed"


# The statements run for every message are built once: building them per call (coercing
# clauses, computing cache keys) was the largest cost of a worker in profiles.
_CLAIM = (
    update(JOBS)
    .where(
        J.id == bindparam("p_job_id"),
        STATUS.in_(("queued", "retrying")),
        J.cancel_requested_at.is_(None),
        (J.next_attempt_at.is_(None))
        | (J.next_attempt_at <= bindparam("p_now", type_=UtcDateTime())),
    )
    .values(
        status="running",
        attempts=J.attempts + 1,
        lease_expires_at=bindparam("p_lease_expires_at"),
        started_at=func.coalesce(J.started_at, bindparam("p_now", type_=UtcDateTime())),
        next_attempt_at=None,
    )
    .returning(
        J.attempts,
        J.max_attempts,
        J.tenant,
        J.type,
        J.entity_id,
        J.payload,
        J.correlation_id,
        J.timeout_s,
    )
)
_OPEN_ATTEMPT = insert(ATTEMPTS).values(
    job_id=bindparam("p_job_id"),
    number=bindparam("p_number"),
    status="running",
    started_at=bindparam("p_now", type_=UtcDateTime()),
    worker=bindparam("p_worker"),
)
_RUNNING_ATTEMPT = (
    J.id == bindparam("p_job_id"),
    STATUS == "running",
    J.attempts == bindparam("p_number"),
)
_FINISH_RETRYING = (
    update(JOBS)
    .where(*_RUNNING_ATTEMPT)
    .values(
        status="retrying",
        lease_expires_at=None,
        error_type=bindparam("p_error_type"),
        error=bindparam("p_error"),
        next_attempt_at=bindparam("p_next_attempt_at"),
        published_at=None,  # the retry is due for the relay to publish
    )
)
_FINISH_ENDED = (
    update(JOBS)
    .where(*_RUNNING_ATTEMPT)
    .values(
        status=bindparam("p_status"),
        lease_expires_at=None,
        error_type=bindparam("p_error_type"),
        error=bindparam("p_error"),
        finished_at=bindparam("p_now", type_=UtcDateTime()),
        result=bindparam("p_result"),
    )
)
_CLOSE_ATTEMPT = (
    update(ATTEMPTS)
    .where(
        A.job_id == bindparam("p_job_id"),
        A.number == bindparam("p_number"),
        A.status == "running",
    )
    .values(
        status=bindparam("p_status"),
        decision=bindparam("p_decision"),
        error_type=bindparam("p_error_type"),
        error=bindparam("p_error"),
        retry_in_ms=bindparam("p_retry_in_ms"),
        finished_at=bindparam("p_now", type_=UtcDateTime()),
        duration_ms=bindparam("p_duration_ms"),
    )
)
_CANCEL_REQUESTED = select(J.cancel_requested_at).where(J.id == bindparam("p_job_id"))


def claim(session: Session, job_id: uuid.UUID, *, worker: str, lease_s: int) -> Claim | None:
    """Move a due queued/retrying job to running and open its next attempt; None if not claimable.

    None means a duplicate or stale message (running elsewhere, finished, cancelled, not due).
    """
    now = utcnow()
    row = session.execute(
        _CLAIM,
        {"p_job_id": job_id, "p_now": now, "p_lease_expires_at": now + timedelta(seconds=lease_s)},
    ).one_or_none()
    if row is None:
        _unpublish_if_early(session, job_id, now)
        return None
    session.execute(
        _OPEN_ATTEMPT,
        {"p_job_id": job_id, "p_number": row.attempts, "p_now": now, "p_worker": worker},
    )
    return Claim(job_id, row.attempts, *row[1:], started_at=now)


def _unpublish_if_early(session: Session, job_id: uuid.UUID, now: datetime) -> None:
    # A message that arrives before the job is due (a stale duplicate, or a clock behind the
    # relay's) is dropped; the relay publishes again when the job is due.
    session.execute(
        update(JOBS)
        .where(
            J.id == job_id,
            STATUS.in_(("queued", "retrying")),
            J.cancel_requested_at.is_(None),
            J.next_attempt_at > now,
        )
        .values(published_at=None)
    )


def finish(session: Session, claim: Claim, outcome: Outcome) -> bool:
    """Record the attempt's outcome and the job's new state; False if the fence held it off."""
    now = utcnow()
    if outcome.job_status == "retrying" and cancel_requested(session, claim.job_id):
        # Cancelled while this attempt ran: stop here rather than schedule another attempt.
        outcome = dataclasses.replace(outcome, job_status="cancelled", decision="skip")
    fence = {"p_job_id": claim.job_id, "p_number": claim.number}
    error = {"p_error_type": outcome.error_type, "p_error": outcome.error}
    if outcome.job_status == "retrying":
        due = now + timedelta(milliseconds=outcome.retry_in_ms or 0)
        job_updated = session.execute(
            _FINISH_RETRYING, {**fence, **error, "p_next_attempt_at": due}
        ).rowcount
    else:
        job_updated = session.execute(
            _FINISH_ENDED,
            {
                **fence,
                **error,
                "p_status": outcome.job_status,
                "p_now": now,
                "p_result": outcome.result,
            },
        ).rowcount
    if not job_updated:
        return False
    session.execute(
        _CLOSE_ATTEMPT,
        {
            **fence,
            **error,
            "p_status": outcome.attempt_status,
            "p_decision": outcome.decision,
            "p_retry_in_ms": outcome.retry_in_ms,
            "p_now": now,
            "p_duration_ms": millis(now - claim.started_at),
        },
    )
    return True


def set_progress(session: Session, claim: Claim, progress: dict[str, Any]) -> bool:
    """Store the running attempt's progress; False if it no longer owns the job."""
    return bool(
        session.execute(
            update(JOBS)
            .where(J.id == claim.job_id, STATUS == "running", J.attempts == claim.number)
            .values(progress=progress)
        ).rowcount
    )


def cancel_requested(session: Session, job_id: uuid.UUID) -> bool:
    """Whether someone asked the job to stop."""
    return session.scalar(_CANCEL_REQUESTED, {"p_job_id": job_id}) is not None


def unlocked_attempts(param: str, *conditions: Any) -> Any:
    """Ids of the jobs named by `(id, attempts)` pairs in bind parameter `param` that meet
    `conditions`, locked; rows another transaction holds are skipped, not waited for.

    For bookkeeping that the group commit may overtake (published marks, lease renewals):
    the rows it holds are attempts it is claiming or finishing, which then need neither,
    and waiting for them deadlocked with it, as it locks its batch's rows in another order.
    """
    return (
        select(J.id)
        .where(tuple_(J.id, J.attempts).in_(bindparam(param, expanding=True)), *conditions)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )


# A lease renewed a tick late loses nothing: a tick comes every third of a lease.
_RENEW = (
    update(JOBS)
    .where(J.id.in_(unlocked_attempts("p_claims", STATUS == "running")))
    .values(lease_expires_at=bindparam("p_until", type_=UtcDateTime()))
)


def renew_leases(session: Session, claims: Iterable[Claim], *, lease_s: int) -> int:
    """Extend the leases of attempts still running; returns how many were renewed."""
    pairs = [(c.job_id, c.number) for c in claims]
    if not pairs:
        return 0
    until = utcnow() + timedelta(seconds=lease_s)
    return session.execute(_RENEW, {"p_claims": pairs, "p_until": until}).rowcount


def millis(delta: timedelta) -> int:
    """Whole milliseconds, never negative (clocks step)."""
    return max(0, int(delta.total_seconds() * 1000))


@dataclass(frozen=True)
class Reaped:
    """A running attempt whose lease expired and what became of its job."""

    job_id: uuid.UUID
    number: int
    job_status: str  # retrying | dead


def reap_expired(session: Session, *, limit: int = 100) -> list[Reaped]:
    """Mark attempts whose lease expired `abandoned`; retry their jobs, or bury them when spent.

    Crashes count as attempts, so a job whose worker dies every time ends dead, not looping.
    Rows locked by another reaper are skipped.
    """
    now = utcnow()
    rows = session.execute(
        select(J.id, J.attempts, J.max_attempts, J.cancel_requested_at)
        .where(J.status == "running", J.lease_expires_at < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    reaped = []
    for job_id, number, max_attempts, cancel_requested_at in rows:
        if cancel_requested_at is not None:
            status, decision = "cancelled", "skip"
        elif number >= max_attempts:
            status, decision = "dead", "dead"
        else:
            status, decision = "retrying", "retry"
        error = "the worker running this attempt stopped renewing its lease"
        changes: dict[str, Any] = {
            "status": status,
            "lease_expires_at": None,
            "error_type": "WorkerLost",
            "error": error,
        }
        if status == "retrying":
            changes.update(next_attempt_at=now, published_at=None)
        else:
            changes["finished_at"] = now
        session.execute(update(JOBS).where(J.id == job_id, J.attempts == number).values(**changes))
        session.execute(
            update(ATTEMPTS)
            .where(A.job_id == job_id, A.number == number, A.status == "running")
            .values(
                status="abandoned",
                decision=decision,
                error_type="WorkerLost",
                error=error,
                retry_in_ms=0 if status == "retrying" else None,
                finished_at=now,
                duration_ms=None,
            )
        )
        reaped.append(Reaped(job_id, number, status))
    return reaped


def mark_dead_lettered(session: Session, job_id: uuid.UUID) -> None:
    """Record that the dead job's copy is in the dead-letter queue."""
    session.execute(
        update(JOBS).where(J.id == job_id, STATUS == "dead").values(dead_lettered_at=utcnow())
    )


def bury(session: Session, job_id: uuid.UUID, *, error_type: str, error: str) -> bool:
    """Mark a waiting job dead whose message went to the dead-letter queue unrun (no attempt)."""
    now = utcnow()
    return bool(
        session.execute(
            update(JOBS)
            .where(J.id == job_id, STATUS.in_(("queued", "retrying")))
            .values(
                status="dead",
                error_type=error_type,
                error=error,
                finished_at=now,
                dead_lettered_at=now,
            )
        ).rowcount
    )
