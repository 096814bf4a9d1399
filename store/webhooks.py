"""Webhook deliveries: queued for ended jobs, claimed when due, their outcomes recorded.

The jobs table is the outbox of webhooks too: a job that ended with a `callback_url` and no
`callback_queued_at` is owed a delivery. Queueing it and marking the job happen in one
transaction, so each ended job gets exactly one delivery however many processes scan, and a
crash between a job's end and its delivery loses nothing: the next scan finds the job.

A delivery is claimed for a lease (its `next_attempt_at` moved past the time one send may
take) before it is sent, outside any transaction; a process that dies while sending leaves
it to be claimed again when the lease runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    case,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from store import states, tenants
from store.ids import new_id
from store.models import JOBS, WEBHOOK_DELIVERIES, WebhookDelivery
from store.sql import millis_since, now, now_plus, one_of

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

#: A job row (all of the jobs table's columns) to the Job JSON its webhook carries.
Body = Callable[[Any], dict[str, Any]]

J = JOBS.c
D = WEBHOOK_DELIVERIES.c

# The predicates spell those of the partial indexes (ix_jobs_callback_due,
# ix_webhook_deliveries_due), values in the SQL text, so the planner uses them.
_OWED = and_(
    J.callback_url.is_not(None),
    J.callback_queued_at.is_(None),
    one_of(J.status, states.TERMINAL),
)
_PENDING = one_of(D.status, [PENDING])

# Other scanners skip the rows one has locked; the guard in the UPDATE makes a row that was
# queued meanwhile (read before another's commit) a no-op.
_QUEUE = (
    update(JOBS)
    .where(
        J.id.in_(
            select(J.id)
            .where(_OWED)
            .order_by(J.finished_at)
            .limit(bindparam("p_limit", type_=Integer))
            .with_for_update(skip_locked=True)
        ),
        _OWED,
    )
    .values(callback_queued_at=now())
    .returning(*JOBS.c)
)
_INSERT = insert(WEBHOOK_DELIVERIES).values(
    status=PENDING, attempts=0, created_at=now(), next_attempt_at=now()
)

_CLAIM = (
    update(WEBHOOK_DELIVERIES)
    .where(
        D.id.in_(
            select(D.id)
            .where(_PENDING, D.next_attempt_at <= now())
            .order_by(D.next_attempt_at)
            .limit(bindparam("p_limit", type_=Integer))
            .with_for_update(skip_locked=True)
        ),
        _PENDING,
        D.next_attempt_at <= now(),
    )
    .values(attempts=D.attempts + 1, next_attempt_at=now_plus(bindparam("p_lease_s")))
    .returning(D.id, D.job_id, D.event, D.url, D.body, D.attempts)
)
_JOBS_OF = select(J.id, J.tenant, J.traceparent).where(J.id.in_(bindparam("p_ids", expanding=True)))

_DELIVERED = (
    update(WEBHOOK_DELIVERIES)
    .where(D.id == bindparam("p_id"), _PENDING)
    .values(
        status=DELIVERED,
        delivered_at=now(),
        next_attempt_at=None,
        last_status_code=bindparam("p_code"),
        last_error=None,
    )
)
# What is left of the retry window after this attempt, by the database's clock: the next
# attempt is due after the delay, or at the window's end if that comes first; none is left,
# the delivery has failed.
_LEFT_MS = bindparam("p_window_ms", type_=Integer) - millis_since(D.created_at)
_DELAY_MS = bindparam("p_delay_ms", type_=Integer)
_RETRY = (
    update(WEBHOOK_DELIVERIES)
    .where(D.id == bindparam("p_id"), D.attempts == bindparam("p_attempt"), _PENDING)
    .values(
        status=case((_LEFT_MS <= 0, literal(FAILED, String)), else_=literal(PENDING, String)),
        next_attempt_at=case(
            (_LEFT_MS <= 0, None),
            (_LEFT_MS < _DELAY_MS, now_plus(_LEFT_MS / 1000.0)),
            else_=now_plus(_DELAY_MS / 1000.0),
        ),
        last_status_code=bindparam("p_code"),
        last_error=bindparam("p_error"),
    )
    .returning(D.status)
)


@dataclass(frozen=True)
class Due:
    """A delivery claimed for sending: what to send where, and what to sign it with."""

    id: uuid.UUID
    job_id: uuid.UUID
    event: str
    url: str
    body: dict[str, Any]
    attempt: int
    tenant: str
    traceparent: str | None
    secret: str


def queue_ended(db: Connection, *, body: Body, limit: int = 200) -> int:
    """Queue one delivery for each of up to `limit` ended jobs owed one, in the caller's
    transaction; returns how many were queued."""
    ended = db.execute(_QUEUE, {"p_limit": limit}).all()
    if ended:
        db.execute(
            _INSERT,
            [
                {
                    "id": new_id(),
                    "job_id": job.id,
                    "event": f"job.{job.status}",
                    "url": job.callback_url,
                    "body": body(job),
                }
                for job in ended
            ],
        )
    return len(ended)


def claim_due(db: Connection, *, limit: int, lease_s: float) -> list[Due]:
    """Claim up to `limit` due deliveries for `lease_s` seconds, counting their attempt."""
    if limit < 1:
        return []
    claimed = db.execute(_CLAIM, {"p_limit": limit, "p_lease_s": lease_s}).all()
    if not claimed:
        return []
    jobs = {row.id: row for row in db.execute(_JOBS_OF, {"p_ids": [c.job_id for c in claimed]})}
    secrets = tenants.webhook_secrets(db, (job.tenant for job in jobs.values()))
    return [
        Due(
            id=c.id,
            job_id=c.job_id,
            event=c.event,
            url=c.url,
            body=c.body,
            attempt=c.attempts,
            tenant=jobs[c.job_id].tenant,
            traceparent=jobs[c.job_id].traceparent,
            secret=secrets[jobs[c.job_id].tenant],
        )
        for c in claimed
    ]


def record_delivered(db: Connection, delivery_id: uuid.UUID, *, status_code: int) -> None:
    """The endpoint accepted the delivery (a 2xx)."""
    db.execute(_DELIVERED, {"p_id": delivery_id, "p_code": status_code})


def record_refused(
    db: Connection,
    due: Due,
    *,
    status_code: int | None,
    error: str,
    delay_ms: int,
    window_s: int,
) -> str | None:
    """The attempt did not get a 2xx: retry after `delay_ms` while the `window_s` since the
    delivery was queued lasts, else give up. Returns the delivery's status now (None if a
    newer attempt owns it)."""
    return db.execute(
        _RETRY,
        {
            "p_id": due.id,
            "p_attempt": due.attempt,
            "p_code": status_code,
            "p_error": error,
            "p_delay_ms": delay_ms,
            "p_window_ms": window_s * 1000,
        },
    ).scalar()


def list_for_job(session: Session, job_id: uuid.UUID) -> Sequence[WebhookDelivery]:
    """A job's deliveries, oldest first."""
    return session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    ).all()
