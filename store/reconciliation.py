"""What SQL says a queue should hold, for the reconciler to compare with what the broker holds.

A job waits in the broker from the confirm of its message (`published_at`) until a worker
claims it, and the message leaves the broker only after the claim. So, jobs published
longer ago than a settle time and still unclaimed are at most the messages the broker
holds (plus the messages of attempts still running): any surplus in SQL is messages the
broker lost. The ages are the database's, never a host's.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Float,
    Integer,
    String,
    and_,
    bindparam,
    func,
    select,
    update,
)

from store import states
from store.models import ATTEMPTS, JOBS
from store.sql import now_plus
from store.states import Status

J, A = JOBS.c, ATTEMPTS.c

_QUEUE = bindparam("of_queue", type_=String)
_CUTOFF = now_plus(-bindparam("settle_s", type_=Float))
_SETTLED = and_(states.waiting_in_broker(J), J.queue == _QUEUE, J.published_at < _CUTOFF)

_COUNT_SETTLED = select(func.count()).select_from(JOBS).where(_SETTLED)

# Each running attempt holds its message unacknowledged until it finishes; one that started
# before the cutoff was delivered before the broker's count was read.
_COUNT_RUNNING = (
    select(func.count())
    .select_from(JOBS.join(ATTEMPTS, and_(A.job_id == J.id, A.number == J.attempts)))
    .where(J.queue == _QUEUE, J.status == Status.RUNNING, A.started_at < _CUTOFF)
)

_OLDEST = (
    select(J.id)
    .where(_SETTLED)
    .order_by(J.published_at)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True)
)
# Unpublished, the jobs are the outbox's again: the relay publishes them and marks them
# published anew, so the next round counts them as recent.
_UNPUBLISH_OLDEST = (
    update(JOBS).where(J.id.in_(_OLDEST.scalar_subquery())).values(published_at=None)
)


def count_settled(db: Connection, queue: str, *, settle_s: float) -> int:
    """Jobs of `queue` published more than `settle_s` ago and not claimed yet."""
    return db.scalar(_COUNT_SETTLED, {"of_queue": queue, "settle_s": settle_s}) or 0


def count_running(db: Connection, queue: str, *, settle_s: float) -> int:
    """Attempts of `queue`'s jobs running since more than `settle_s` ago."""
    return db.scalar(_COUNT_RUNNING, {"of_queue": queue, "settle_s": settle_s}) or 0


def unpublish_oldest(db: Connection, queue: str, *, settle_s: float, limit: int) -> int:
    """Take the `limit` oldest settled jobs of `queue` back into the outbox; returns how many.
    Rows locked elsewhere (being claimed) are skipped."""
    result = db.execute(
        _UNPUBLISH_OLDEST, {"of_queue": queue, "settle_s": settle_s, "limit": limit}
    )
    return cast(CursorResult[Any], result).rowcount
