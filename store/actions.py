"""Actions people take on jobs: cancel and replay, each with its audit entry."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    Connection,
    Uuid,
    bindparam,
    column,
    delete,
    func,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.orm import Session

from store import audit, errors, jobs
from store.ids import new_id
from store.models import ACTIVE_STATUSES, Job
from store.types import UtcDateTime, utcnow

# Core, not ORM, updates: an ORM update re-scans every object in the session, which made
# bulk replays (hundreds of jobs per session) quadratic.
JOBS = Job.__table__
J = JOBS.c

REPLAYABLE = ("failed", "dead", "cancelled")

#: What a replay reads of the job it replays.
REPLAY_COLUMNS = (
    J.id,
    J.tenant,
    J.type,
    J.queue,
    J.entity_id,
    J.payload,
    J.priority,
    J.max_attempts,
    J.timeout_s,
    J.correlation_id,
)


class Replayable(Protocol):
    """A job to replay: a `Job`, or a row of REPLAY_COLUMNS."""

    id: uuid.UUID
    tenant: str
    type: str
    queue: str
    entity_id: str | None
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    timeout_s: int
    correlation_id: str


R = TypeVar("R", bound=Replayable)

# The fence: only a job nobody has replayed yet, and only from a replayable state. (Not an
# IN list: that is an expanding parameter, which executemany refuses.)
_FENCE = (J.replayed_by.is_(None), or_(*(J.status == status for status in REPLAYABLE)))

# On PostgreSQL only the ids travel, as two arrays: the new rows are copied from the old
# ones in the database, by statements short enough for psycopg to parse once. A VALUES list
# of a thousand rows was parsed anew every time and cost ten times as much.
_PAIRS = (
    func.unnest(bindparam("b_olds", type_=ARRAY(Uuid)), bindparam("b_news", type_=ARRAY(Uuid)))
    .table_valued(column("old_id", Uuid), column("new_id", Uuid), with_ordinality="n")
    .render_derived(name="m")
)
_OLD = JOBS.alias("old")
# A new job refused by a unique index (an active job for the same entity) is skipped by the
# database and explained afterwards, so one refusal does not sink the others. In the given
# order, so that of two dead jobs for one entity the first is replayed.
_PG_INSERT = (
    postgresql_insert(JOBS)
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
            "created_at",
        ],
        select(
            _PAIRS.c.new_id,
            _OLD.c.tenant,
            _OLD.c.type,
            _OLD.c.queue,
            _OLD.c.entity_id,
            func.coalesce(bindparam("b_payload", type_=JSONB(none_as_null=True)), _OLD.c.payload),
            literal("queued"),
            _OLD.c.priority,
            literal(0),
            _OLD.c.max_attempts,
            _OLD.c.timeout_s,
            _OLD.c.correlation_id,
            _OLD.c.id,
            bindparam("b_now", type_=UtcDateTime),
        )
        .join_from(_PAIRS, _OLD, _OLD.c.id == _PAIRS.c.old_id)
        .order_by(_PAIRS.c.n),
    )
    .on_conflict_do_nothing()
    .returning(J.id)
)
_PG_LINK = (
    update(JOBS)
    .where(J.id == _PAIRS.c.old_id, *_FENCE)
    .values(replayed_by=_PAIRS.c.new_id)
    .returning(J.id)
)
# SQLite runs in-process: a parameter set per row costs next to nothing there.
_LINK = (
    update(JOBS).where(J.id == bindparam("b_old"), *_FENCE).values(replayed_by=bindparam("b_new"))
)
# Columns a new job leaves empty, for the Job handed back (inserted as NULL).
_EMPTY = (
    "progress",
    "result",
    "error_type",
    "error",
    "replayed_by",
    "idempotency_key",
    "request_hash",
    "run_at",
    "next_attempt_at",
    "started_at",
    "finished_at",
    "published_at",
    "lease_expires_at",
    "cancel_requested_at",
    "dead_lettered_at",
)


def cancel(session: Session, job: Job, *, actor: str, reason: str | None = None) -> Job:
    """Cancel a waiting job at once, or ask a running one to stop at its next checkpoint."""
    now = utcnow()
    if job.status in ("queued", "retrying"):
        stopped = session.execute(
            update(JOBS)
            .where(J.id == job.id, J.status.in_(("queued", "retrying")))
            .values(status="cancelled", finished_at=now, cancel_requested_at=now)
        ).rowcount
        if not stopped:  # it was claimed meanwhile
            session.refresh(job)
            return cancel(session, job, actor=actor, reason=reason)
    elif job.status == "running":
        session.execute(
            update(JOBS)
            .where(J.id == job.id, J.cancel_requested_at.is_(None))
            .values(cancel_requested_at=now)
        )
    else:
        raise errors.InvalidTransition(f"the job is already {job.status}")
    audit.record(
        session, actor=actor, action="cancel", job_id=job.id, tenant=job.tenant, reason=reason
    )
    session.flush()
    session.refresh(job)
    return job


def replay(
    session: Session,
    job: Job,
    *,
    actor: str,
    payload: dict[str, Any] | None = None,
    reason: str | None = None,
    via: str = "api",
) -> Job:
    """Create a new job linked to `job` (`replay_of`/`replayed_by`); history is left as it was."""
    if job.status not in REPLAYABLE:
        raise errors.InvalidTransition(
            f"only failed, dead or cancelled jobs can be replayed, not {job.status}"
        )
    if job.replayed_by is not None:
        raise errors.InvalidTransition(f"the job was already replayed by {job.replayed_by}")
    replayed, refused = replay_many(
        session, [job], actor=actor, payload=payload, reason=reason, via=via
    )
    if refused:
        raise refused[0][1]
    session.refresh(job)
    return Job(**replayed[0][1], **dict.fromkeys(_EMPTY))


def replay_many(
    session: Session,
    olds: Sequence[R],
    *,
    actor: str,
    reason: str | None,
    via: str,
    payload: dict[str, Any] | None = None,
) -> tuple[list[tuple[R, dict[str, Any]]], list[tuple[uuid.UUID, errors.StoreError]]]:
    """Replay `olds` in the session's transaction, a few statements for all of them.

    Returns (old, new job's column values) pairs and the old ids that were refused, with
    why. `payload`, if given, replaces every old job's payload. Each replay links both ways
    and writes its audit entry in the same transaction.
    """
    if not olds:
        return [], []
    now = utcnow()
    news = {old.id: _new_job(old, payload, now) for old in olds}
    connection = session.connection()
    inserted = _insert(connection, news, payload, now)
    refused = _explain_refused(session, [o for o in olds if news[o.id]["id"] not in inserted])
    links = {o.id: news[o.id]["id"] for o in olds if o.id not in refused}
    linked = _link(connection, links)
    if len(linked) < len(links):
        # A concurrent replay linked some of these first. Their new jobs were never visible
        # to anyone, so they go, and those replays are refused.
        lost = [new for old, new in links.items() if old not in linked]
        connection.execute(delete(JOBS).where(J.id.in_(lost)))
        refused |= {
            o: errors.InvalidTransition("the job was already replayed")
            for o in links
            if o not in linked
        }
    replayed = [(o, news[o.id]) for o in olds if o.id not in refused]
    audit.record_many(
        session,
        actor=actor,
        action="replay",
        reason=reason,
        entries=[
            (
                old.id,
                old.tenant,
                {
                    "new_job_id": str(new["id"]),
                    "payload_overridden": payload is not None,
                    "via": via,
                },
            )
            for old, new in replayed
        ],
    )
    return replayed, [(o.id, refused[o.id]) for o in olds if o.id in refused]


def _insert(
    connection: Connection,
    news: dict[uuid.UUID, dict[str, Any]],
    payload: dict[str, Any] | None,
    now: datetime,
) -> set[uuid.UUID]:
    # The ids of the new jobs that went in.
    if connection.dialect.name == "postgresql":
        ids = {
            "b_olds": list(news),
            "b_news": [new["id"] for new in news.values()],
            "b_payload": payload,
            "b_now": now,
        }
        return set(connection.scalars(_PG_INSERT, ids))
    return set(connection.scalars(jobs.INSERT_SKIPPING_CONFLICTS["sqlite"], list(news.values())))


def _link(connection: Connection, links: dict[uuid.UUID, uuid.UUID]) -> set[uuid.UUID]:
    # The old jobs now linked to their new ones (old id -> new id), behind the fence.
    if not links:
        return set()
    if connection.dialect.name == "postgresql":
        ids = {"b_olds": list(links), "b_news": list(links.values())}
        return set(connection.scalars(_PG_LINK, ids))
    rows = [{"b_old": old, "b_new": new} for old, new in links.items()]
    if connection.execute(_LINK, rows).rowcount == len(rows):
        return set(links)
    found = connection.execute(select(J.id, J.replayed_by).where(J.id.in_(links)))
    return {old for old, by in found if by == links[old]}


def _new_job(old: Replayable, payload: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "tenant": old.tenant,
        "type": old.type,
        "queue": old.queue,
        "entity_id": old.entity_id,
        "payload": old.payload if payload is None else payload,
        "status": "queued",
        "priority": old.priority,
        "attempts": 0,
        "max_attempts": old.max_attempts,
        "timeout_s": old.timeout_s,
        "correlation_id": old.correlation_id,
        "replay_of": old.id,
        "created_at": now,
    }


def _explain_refused(
    session: Session, olds: Sequence[Replayable]
) -> dict[uuid.UUID, errors.StoreError]:
    # Say which active job holds each refused entity (one query for all of them).
    keys = {(o.tenant, o.type, o.entity_id) for o in olds if o.entity_id is not None}
    active: dict[tuple[str, str, str | None], uuid.UUID] = {}
    if keys:
        rows = session.execute(
            select(J.tenant, J.type, J.entity_id, J.id).where(
                J.status.in_(ACTIVE_STATUSES), tuple_(J.tenant, J.type, J.entity_id).in_(keys)
            )
        )
        active = {(r.tenant, r.type, r.entity_id): r.id for r in rows}
    why: dict[uuid.UUID, errors.StoreError] = {}
    for old in olds:
        holder = active.get((old.tenant, old.type, old.entity_id))
        why[old.id] = (
            errors.DuplicateActiveJob(holder)
            if holder is not None
            else errors.StoreError("the job conflicts with one that has since finished; try again")
        )
    return why
