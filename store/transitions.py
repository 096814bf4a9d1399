"""Every change of a job's state, each one statement over a batch of jobs.

A batch of one is a single job; the worker's group commit passes every claim or finish
waiting in its process at once. The same statements run on PostgreSQL and SQLite (see
`store.sql`), their rules come from `store.states`, and every time in them is the
database's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    Float,
    Integer,
    SmallInteger,
    String,
    Text,
    Uuid,
    and_,
    bindparam,
    case,
    column,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as insert_on_conflict
from sqlalchemy.sql.expression import ColumnClause

from store import admission, job_changes, states
from store.models import ATTEMPT_TOTALS, ATTEMPTS, JOBS
from store.sql import Batch, Chain, millis_since, now, now_plus, one_of
from store.states import AttemptStatus, Status
from store.storable import storable
from store.types import UtcDateTime

# Core tables, not ORM entities: these statements run for every message.
J, A, T = JOBS.c, ATTEMPTS.c, ATTEMPT_TOTALS.c

#: Rows per (type, decision) in attempt_totals: processes writing at once mostly write
#: different rows, so no group commit waits for another process's.
TOTAL_SHARDS = 8
#: The decision counted for a succeeded attempt, and for an abandoned one (whose worker
#: vanished), beside the decisions of failed attempts (`states.Decision`).
SUCCEEDED, ABANDONED = "succeeded", "abandoned"


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
    started_at: datetime  # the database's time
    traceparent: str | None = None  # the job's trace context, which the attempt continues


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How an attempt ended and the status it asks for its job."""

    job_status: Status  # succeeded | retrying | failed | dead | cancelled
    error_type: str | None = None
    error: str | None = None
    retry_in_ms: int | None = None
    result: dict[str, Any] | None = None


@dataclass(frozen=True)
class Reaped:
    """A running attempt whose worker is gone or hung, and what became of its job."""

    job_id: uuid.UUID
    number: int
    job_status: str  # retrying | dead | cancelled
    error_type: str  # WorkerLost | TimeLimitExceeded


def _ids(name: str) -> Batch:
    return Batch(name, column("id", Uuid))


def _attempts(name: str) -> Batch:
    return Batch(name, column("id", Uuid), column("number", Integer))


def _shard() -> int:
    # Per call, not at import: the worker forks its processes after importing this module.
    return os.getpid() % TOTAL_SHARDS


def _count(decision: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The statement adding the attempts just ended to attempt_totals, one row per
    (type, decision) in this process's shard; `decision(ended)` is each one's decision.

    Ordered, so that two transactions that share a shard lock its rows in the same order.
    """

    def build(ended: Any) -> Any:
        each = select(ended.c.type, decision(ended).label("decision")).subquery("decided")
        rows = (
            select(
                each.c.type, each.c.decision, bindparam("shard", type_=SmallInteger), func.count()
            )
            .group_by(each.c.type, each.c.decision)
            .order_by(each.c.type, each.c.decision)
        )
        # PostgreSQL's INSERT … ON CONFLICT DO UPDATE, which SQLite spells the same.
        upsert = insert_on_conflict(ATTEMPT_TOTALS).from_select(
            ["type", "decision", "shard", "count"], rows
        )
        return upsert.on_conflict_do_update(
            index_elements=[T.type, T.decision, T.shard],
            set_={"count": T.count + upsert.excluded.count},
        )

    return build


def _unlocked(batch: Batch, *rules: Callable[[Any], Any]) -> Any:
    """Ids of the batch's `(id, number)` attempts that meet `rules`, locked; rows
    another transaction holds are skipped, not waited for.

    For bookkeeping the group commit may overtake (published marks, lease renewals): the
    rows it holds are attempts it is claiming or finishing, which then need neither, and
    waiting for them deadlocked with it.
    """
    locked = JOBS.alias("locked")
    return (
        select(locked.c.id)
        .where(
            batch.has(locked.c.id),
            locked.c.attempts == batch.c.number,
            *(rule(locked.c) for rule in rules),
        )
        .with_for_update(skip_locked=True, of=locked)
        .scalar_subquery()
    )


# --- claim ------------------------------------------------------------------------------

_CLAIMING = _ids("claiming")
_CLAIM = (
    update(JOBS)
    .where(_CLAIMING.has(J.id), states.claimable_now(J))
    .values(
        status=Status.RUNNING,
        attempts=J.attempts + 1,
        lease_expires_at=now_plus(bindparam("lease_s")),
        started_at=func.coalesce(J.started_at, now()),
        next_attempt_at=None,
        waiting_for=None,
    )
    .returning(
        J.id,
        J.attempts,
        J.max_attempts,
        J.tenant,
        J.type,
        J.entity_id,
        J.payload,
        J.correlation_id,
        J.timeout_s,
        now().label("claimed_at"),
        J.traceparent,
    )
)


def _open(claimed: Any) -> Any:
    """Open the next attempt of each job just claimed."""
    return ATTEMPTS.insert().from_select(
        ["job_id", "number", "status", "started_at", "worker"],
        select(
            claimed.c.id,
            claimed.c.attempts,
            literal(AttemptStatus.RUNNING),
            now(),
            bindparam("worker", type_=String),
        ),
    )


_CLAIM_AND_OPEN = Chain(
    _CLAIM, _open, carry=("id", "attempts"), name="claimed", notify=job_changes.announcing
)
_REFUSED = _ids("refused")
_EARLY, _CANCEL_ASKED = states.waiting_not_due(J), states.cancel_pending(J)
# One statement for both kinds of refused job that need something: an early message's
# job is handed back to the relay; a waiting job with a cancel request ends cancelled, so
# no copy of its message, however often published, leaves it waiting forever.
_SETTLE_REFUSED = (
    update(JOBS)
    .where(_REFUSED.has(J.id), or_(_EARLY, _CANCEL_ASKED))
    .values(
        published_at=case((_EARLY, None), else_=J.published_at),
        status=case((_CANCEL_ASKED, Status.CANCELLED), else_=J.status),
        finished_at=case((_CANCEL_ASKED, now()), else_=J.finished_at),
        waiting_for=case((_CANCEL_ASKED, None), else_=J.waiting_for),
    )
    .returning(J.id, J.status)
)


_PARKING = Batch(
    "parking", column("id", Uuid), column("waiting_for", String), column("until", UtcDateTime())
)
# Waiting is not failing: status and attempts stay, the message is given up and the relay
# publishes the job again when due.
_PARK = (
    update(JOBS)
    .where(_PARKING.has(J.id), states.claimable_now(J))
    .values(
        waiting_for=_PARKING.c.waiting_for,
        published_at=None,
        next_attempt_at=func.coalesce(
            _PARKING.c.until, now_plus(bindparam("park_delay_s", type_=Float))
        ),
    )
    .returning(J.id)
)


def park(db: Connection, parks: Mapping[uuid.UUID, admission.Park]) -> None:
    """Hold back claimable jobs: each says what it waits for and is due again at its
    `until` (or after the short default delay), its status and attempts unchanged. Their
    Job objects change (`waiting_for`, `next_attempt_at`), so they are announced."""
    if not parks:
        return
    sqlite = db.dialect.name == "sqlite"
    rows = [(i, p.key, _batch_time(p.until, sqlite=sqlite)) for i, p in parks.items()]
    parked = db.execute(_PARK, {"parking": rows, "park_delay_s": admission.PARK_DELAY_S})
    job_changes.announce(db, parked.scalars().all())


def _batch_time(at: datetime | None, *, sqlite: bool) -> str | None:
    # A batch's values travel as JSON text: a time as each database reads one (SQLite
    # compares SQLAlchemy's own format as text).
    if at is None:
        return None
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else at.isoformat()


def claim(
    db: Connection,
    job_ids: Iterable[uuid.UUID],
    *,
    worker: str,
    lease_s: float,
    rules: Sequence[admission.Rule] = (),
    types: Collection[str] | None = None,
) -> dict[uuid.UUID, Claim]:
    """Move the due jobs among `job_ids` to running and open their next attempts.

    Each of `rules` may hold back some of them first (`store.admission`): those are parked,
    not claimed. A job left out is also a duplicate or stale message (running elsewhere,
    finished, cancelled, not due). One that is waiting but not due yet is handed back to
    the relay; one waiting with a cancel request is cancelled. Every job it claims, parks or
    cancels is announced to waiting requests (`store.job_changes`). `types`, the job types the
    messages name, spares the rules that concern none of them.
    """
    ids = list(dict.fromkeys(job_ids))
    parks = admission.decide(db, ids, rules, types=types)
    park(db, parks)
    ids = [i for i in ids if i not in parks]
    if not ids:
        return {}
    params = {"claiming": [(i,) for i in ids], "lease_s": lease_s, "worker": worker}
    rows = _CLAIM_AND_OPEN.run(db, params)
    claimed = {row.id for row in rows}
    if len(claimed) < len(ids):
        refused = [(i,) for i in ids if i not in claimed]
        settled = db.execute(_SETTLE_REFUSED, {"refused": refused})
        job_changes.announce(db, [i for i, status in settled if status == Status.CANCELLED])
    return {row.id: Claim(*row) for row in rows}


# --- finish, and the attempts it closes -------------------------------------------------


def _outcomes(name: str, *more: ColumnClause[Any]) -> Batch:
    """A batch of attempts' outcomes: (id, number, status, error_type, error, retry_in_ms, …)."""
    return Batch(
        name,
        column("id", Uuid),
        column("number", Integer),
        column("status", String),
        column("error_type", String),
        column("error", Text),
        column("retry_in_ms", BigInteger),
        *more,
    )


_FINISHING = _outcomes("finishing", column("result", JSON))
_AFTER = states.status_after_attempt(J, _FINISHING.c.status)
_FINISH = (
    update(JOBS)
    .where(
        _FINISHING.has(J.id),
        states.running_attempt(J, _FINISHING.c.number),
    )
    .values(
        status=_AFTER,
        lease_expires_at=None,
        error_type=_FINISHING.c.error_type,
        error=_FINISHING.c.error,
        result=_FINISHING.c.result,
        finished_at=case((_AFTER == Status.RETRYING, None), else_=now()),
        next_attempt_at=case(
            (_AFTER == Status.RETRYING, now_plus(_FINISHING.c.retry_in_ms / 1000.0)),
            else_=None,
        ),
        # A retry is due for the relay to publish.
        published_at=case((_AFTER == Status.RETRYING, None), else_=J.published_at),
    )
    .returning(J.id, J.attempts, J.status, J.type)
)


def _close_finished(finished: Any) -> Any:
    """Close the attempts whose jobs were just finished; their jobs' new status says what was
    decided (a cancel beats a retry)."""
    outcome = _FINISHING.c
    return (
        update(ATTEMPTS)
        .where(
            _FINISHING.has(A.job_id),
            A.job_id == finished.c.id,
            A.number == finished.c.attempts,
            A.status == AttemptStatus.RUNNING,
            outcome.id == finished.c.id,
        )
        .values(
            status=case(
                (outcome.status == Status.SUCCEEDED, literal(AttemptStatus.SUCCEEDED)),
                else_=literal(AttemptStatus.FAILED),
            ),
            decision=states.decision_for(finished.c.status),
            error_type=outcome.error_type,
            error=outcome.error,
            retry_in_ms=case((finished.c.status == Status.RETRYING, outcome.retry_in_ms)),
            finished_at=now(),
            duration_ms=millis_since(A.started_at),
        )
    )


_FINISH_AND_CLOSE = Chain(
    _FINISH,
    _close_finished,
    # The job's new status says the attempt's decision, as it does for the attempt's row.
    _count(lambda finished: func.coalesce(states.decision_for(finished.c.status), SUCCEEDED)),
    carry=("id", "attempts", "status", "type"),
    notify=job_changes.announcing,
)


def finish(db: Connection, finishes: Sequence[tuple[Claim, Outcome]]) -> dict[uuid.UUID, str]:
    """Record attempts' outcomes and their jobs' new states; returns the jobs written, each
    with the status it now has (a cancel may have beaten the one asked for).

    A job left out was fenced off: its worker no longer owns the attempt. Errors and results
    are recorded as PostgreSQL can store them (`store.storable`).
    """
    rows = [
        (
            c.job_id,
            c.number,
            o.job_status,
            o.error_type,
            storable(o.error),
            o.retry_in_ms,
            storable(o.result),
        )
        for c, o in finishes
    ]
    params = {"finishing": rows, "shard": _shard()}
    return {row.id: row.status for row in _FINISH_AND_CLOSE.run(db, params)}


# --- leases and the reaper --------------------------------------------------------------

_RENEWING = _attempts("renewing")
_RENEW = (
    update(JOBS)
    .where(J.id.in_(_unlocked(_RENEWING, lambda j: states.status_of(j) == Status.RUNNING)))
    .values(lease_expires_at=now_plus(bindparam("lease_s")))
)


def renew_leases(
    db: Connection, attempts: Iterable[tuple[uuid.UUID, int]], *, lease_s: float
) -> int:
    """Extend the leases of these `(job id, attempt number)` attempts still running."""
    rows = list(attempts)
    if not rows:
        return 0
    return db.execute(_RENEW, {"renewing": rows, "lease_s": lease_s}).rowcount


_REAPED_STATUS = states.status_after_reap(J)
_EXPIRED = JOBS.alias("expired")
_CURRENT = ATTEMPTS.alias("current")
_GRACE_S = bindparam("stuck_grace_s", type_=Float)
_LOST = "the worker running this attempt stopped renewing its lease"
_HUNG = "the attempt was still running past its time limit and grace (a hung worker thread)"
# A CTE, planned once: as `id IN (subquery)` PostgreSQL reran the subquery per row and
# reaped past the limit. The attempt is joined outer, so that only the lease decides for a
# job whose attempt row were missing.
_EXPIRED_IDS = (
    select(
        _EXPIRED.c.id,
        _EXPIRED.c.attempts,
        case(
            (states.lease_expired(_EXPIRED.c), literal(states.WORKER_LOST)),
            else_=literal(states.TIME_LIMIT_EXCEEDED),
        ).label("error_type"),
        case((states.lease_expired(_EXPIRED.c), literal(_LOST)), else_=literal(_HUNG)).label(
            "error"
        ),
    )
    .select_from(
        _EXPIRED.outerjoin(
            _CURRENT,
            and_(_CURRENT.c.job_id == _EXPIRED.c.id, _CURRENT.c.number == _EXPIRED.c.attempts),
        )
    )
    .where(states.reapable(_EXPIRED.c, _CURRENT.c.started_at, _GRACE_S))
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=_EXPIRED)
    .cte("expired_ids")
)
_REAP = (
    update(JOBS)
    .where(J.id == _EXPIRED_IDS.c.id, states.running_attempt(J, _EXPIRED_IDS.c.attempts))
    .values(
        status=_REAPED_STATUS,
        lease_expires_at=None,
        error_type=_EXPIRED_IDS.c.error_type,
        error=_EXPIRED_IDS.c.error,
        finished_at=case((_REAPED_STATUS == Status.RETRYING, None), else_=now()),
        next_attempt_at=case((_REAPED_STATUS == Status.RETRYING, now()), else_=None),
        published_at=case((_REAPED_STATUS == Status.RETRYING, None), else_=J.published_at),
    )
    .returning(J.id, J.attempts, J.status, J.error_type, J.error, J.type)
)


def _close_reaped(reaped: Any) -> Any:
    """Mark the reaped jobs' attempts abandoned: they count, with no duration."""
    return (
        update(ATTEMPTS)
        .where(
            A.job_id == reaped.c.id,
            A.number == reaped.c.attempts,
            A.status == AttemptStatus.RUNNING,
        )
        .values(
            status=AttemptStatus.ABANDONED,
            decision=states.decision_for(reaped.c.status),
            error_type=reaped.c.error_type,
            error=reaped.c.error,
            retry_in_ms=case((reaped.c.status == Status.RETRYING, 0)),
            finished_at=now(),
            duration_ms=None,
        )
    )


_REAP_AND_CLOSE = Chain(
    _REAP,
    _close_reaped,
    _count(lambda reaped: literal(ABANDONED, String)),
    carry=("id", "attempts", "status", "error_type", "error", "type"),
    notify=job_changes.announcing,
)


def reap_expired(db: Connection, *, stuck_grace_s: float, limit: int = 100) -> list[Reaped]:
    """End attempts whose worker is gone (lease expired) or hung (past the job's time limit
    plus `stuck_grace_s`) as `abandoned`; retry their jobs, or bury them when spent.

    Rows locked by another reaper are skipped.
    """
    params = {"limit": limit, "stuck_grace_s": stuck_grace_s, "shard": _shard()}
    rows = _REAP_AND_CLOSE.run(db, params)
    return [Reaped(r.id, r.attempts, r.status, r.error_type) for r in rows]


# --- dead letters -----------------------------------------------------------------------

_DEAD_LETTERED = _ids("dead_lettered")
_MARK_DEAD_LETTERED = (
    update(JOBS)
    .where(_DEAD_LETTERED.has(J.id), J.status == Status.DEAD)
    .values(dead_lettered_at=now())
)


def mark_dead_lettered(db: Connection, job_ids: Iterable[uuid.UUID]) -> None:
    """Record that these dead jobs' copies are in the dead-letter queue."""
    rows = [(i,) for i in job_ids]
    if rows:
        db.execute(_MARK_DEAD_LETTERED, {"dead_lettered": rows})


_BURYING = _ids("burying")
_BURY = (
    update(JOBS)
    .where(
        _BURYING.has(J.id),
        one_of(states.status_of(J), states.CLAIMABLE),
    )
    .values(
        status=Status.DEAD,
        error_type=bindparam("error_type", type_=String),
        error=bindparam("error", type_=Text),
        finished_at=now(),
        dead_lettered_at=now(),
        waiting_for=None,
    )
    .returning(J.id)
)


def bury(
    db: Connection, job_ids: Iterable[uuid.UUID], *, error_type: str, error: str
) -> set[uuid.UUID]:
    """Mark waiting jobs dead whose messages went to the dead-letter queue unrun (no attempt)."""
    rows = [(i,) for i in job_ids]
    if not rows:
        return set()
    return set(db.scalars(_BURY, {"burying": rows, "error_type": error_type, "error": error}))


# --- publishing -------------------------------------------------------------------------

_PUBLISHED = _attempts("published")
_MARK_PUBLISHED = (
    update(JOBS)
    .where(
        J.id.in_(
            _unlocked(_PUBLISHED, lambda j: states.unpublished_in_state(j, _PUBLISHED.c.number))
        )
    )
    .values(published_at=now())
)
#: Marks per statement: a lock list longer than this is split.
_MARKS_PER_STATEMENT = 1000


def mark_published(db: Connection, published: Sequence[tuple[uuid.UUID, int]]) -> None:
    """Record that the broker took the messages of these `(job id, attempts)` states.

    A job whose row is locked elsewhere is left unmarked; should it still be waiting after
    the grace, the relay publishes it again and the claim refuses the extra copy.
    """
    for start in range(0, len(published), _MARKS_PER_STATEMENT):
        chunk = published[start : start + _MARKS_PER_STATEMENT]
        db.execute(_MARK_PUBLISHED, {"published": list(chunk)})


_UNPUBLISH_WAITING = (
    update(JOBS).where(one_of(J.status, states.CLAIMABLE)).values(published_at=None)
)


def unpublish_waiting(db: Connection) -> int:
    """Forget every waiting job's publication, for a broker that lost its queues (memory://)."""
    return db.execute(_UNPUBLISH_WAITING).rowcount


# --- cancel -----------------------------------------------------------------------------

_CANCELLING = _ids("cancelling")
_AT_ONCE = states.cancellable_at_once(J)
_CANCEL = (
    update(JOBS)
    .where(_CANCELLING.has(J.id), one_of(J.status, states.ACTIVE))
    .values(
        status=case((_AT_ONCE, Status.CANCELLED), else_=J.status),
        finished_at=case((_AT_ONCE, now()), else_=J.finished_at),
        waiting_for=case((_AT_ONCE, None), else_=J.waiting_for),
        cancel_requested_at=func.coalesce(J.cancel_requested_at, now()),
    )
    .returning(J.id, J.status)
)


def cancel(db: Connection, job_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Cancel waiting jobs at once and ask running ones to stop at their next checkpoint.

    Returns each active job's status after the call; finished jobs are left out.
    """
    rows = [(i,) for i in job_ids]
    if not rows:
        return {}
    return {job_id: status for job_id, status in db.execute(_CANCEL, {"cancelling": rows})}


_CANCEL_WAITING_IN_QUEUE = (
    update(JOBS)
    .where(J.queue == bindparam("of_queue", type_=String), states.purgeable(J))
    .values(
        status=Status.CANCELLED,
        finished_at=now(),
        waiting_for=None,
        cancel_requested_at=func.coalesce(J.cancel_requested_at, now()),
    )
    .returning(J.id)
)


def cancel_waiting_in_queue(db: Connection, queue: str) -> list[uuid.UUID]:
    """Cancel every waiting job of `queue` (a purge) in one statement; returns their ids.

    The same rule as `cancel` for a waiting job; running jobs are left to finish. A job
    committed after the statement began is not seen, and is not cancelled.
    """
    return list(db.scalars(_CANCEL_WAITING_IN_QUEUE, {"of_queue": queue}))


# --- replay -----------------------------------------------------------------------------

_REPLAYING = Batch(
    "replaying",
    column("old_id", Uuid),
    column("new_id", Uuid),
    column("n", Integer),
)
# The new jobs of a replay, each on its type's queue now and with the traceparent of its new
# trace.
_NEW_REPLAYS = Batch(
    "replaying",
    column("old_id", Uuid),
    column("new_id", Uuid),
    column("n", Integer),
    column("queue", String),
    column("traceparent", String),
)
_OLD = JOBS.alias("old")
_PAYLOAD = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# A new job refused by a unique index (an active job for the same entity) is skipped by
# the database and explained afterwards, so one refusal does not sink the others. In the
# given order, so that of two dead jobs for one entity the first is replayed.
_INSERT_REPLAYS = (
    insert_on_conflict(JOBS)
    .from_select(
        [
            "id",
            "tenant",
            "type",
            "queue",
            "entity_id",
            "payload",
            "status",
            "priority",
            "attempts",
            "max_attempts",
            "timeout_s",
            "correlation_id",
            "replay_of",
            "traceparent",
            "created_at",
            "callback_url",
        ],
        select(
            _NEW_REPLAYS.c.new_id,
            _OLD.c.tenant,
            _OLD.c.type,
            _NEW_REPLAYS.c.queue,
            _OLD.c.entity_id,
            func.coalesce(bindparam("payload", type_=_PAYLOAD), _OLD.c.payload),
            literal(Status.QUEUED),
            _OLD.c.priority,
            literal(0),
            _OLD.c.max_attempts,
            _OLD.c.timeout_s,
            _OLD.c.correlation_id,
            _OLD.c.id,
            _NEW_REPLAYS.c.traceparent,
            now(),
            _OLD.c.callback_url,
        )
        .where(_NEW_REPLAYS.has(_OLD.c.id, "old_id"))
        .order_by(_NEW_REPLAYS.c.n),
    )
    .on_conflict_do_nothing()
    .returning(J.id, J.created_at)
)
_LINK_REPLAYS = (
    update(JOBS)
    .where(
        _REPLAYING.has(J.id, "old_id"),
        states.replayable(J),
    )
    .values(replayed_by=_REPLAYING.c.new_id)
    .returning(J.id)
)


def insert_replays(
    db: Connection,
    replays: Sequence[tuple[uuid.UUID, uuid.UUID, str, str | None]],
    payload: dict[str, Any] | None,
) -> dict[uuid.UUID, datetime]:
    """Insert a new queued job copied from each old one of `(old id, new id, queue,
    traceparent)`; returns the new jobs that went in, with their creation times. `payload`,
    if given, replaces every old job's payload; each new job has the traceparent given (a
    new trace).
    """
    rows = [(old, new, n, queue, tp) for n, (old, new, queue, tp) in enumerate(replays)]
    found = db.execute(_INSERT_REPLAYS, {"replaying": rows, "payload": payload})
    return {row.id: row.created_at for row in found}


def link_replays(db: Connection, pairs: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> set[uuid.UUID]:
    """Link old jobs to their replays (`replayed_by`) behind the fence; returns the old ids
    linked."""
    rows = [(old, new, n) for n, (old, new) in enumerate(pairs)]
    return set(db.scalars(_LINK_REPLAYS, {"replaying": rows}))
