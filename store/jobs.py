"""Creating, reading and listing jobs, always keyed by tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from store import errors
from store.ids import new_id
from store.models import ACTIVE_STATUSES, Attempt, Job
from store.types import utcnow

# Core statements built once: a submission and a status poll are the API's hot paths, and
# building a statement (and its cache key) per call cost more than running it.
JOBS = Job.__table__
J = JOBS.c

# A row that hits a unique index is skipped (no exception, no savepoint) and explained.
INSERT_SKIPPING_CONFLICTS = {
    name: dialect_insert(JOBS).on_conflict_do_nothing().returning(J.id)
    for name, dialect_insert in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))
}
_BY_IDEMPOTENCY_KEY = select(JOBS).where(
    J.tenant == bindparam("p_tenant"), J.idempotency_key == bindparam("p_key")
)
_ACTIVE_FOR_ENTITY = select(J.id).where(
    J.tenant == bindparam("p_tenant"),
    J.type == bindparam("p_type"),
    J.entity_id == bindparam("p_entity_id"),
    J.status.in_(ACTIVE_STATUSES),
)
# The columns of the contract's Job object, by primary key (and tenant, for clients).
_READ = select(
    J.id,
    J.tenant,
    J.type,
    J.entity_id,
    J.payload,
    J.status,
    J.priority,
    J.attempts,
    J.max_attempts,
    J.progress,
    J.result,
    J.error_type,
    J.error,
    J.correlation_id,
    J.replay_of,
    J.replayed_by,
    J.created_at,
    J.started_at,
    J.finished_at,
    J.next_attempt_at,
    J.run_at,
).where(J.id == bindparam("p_id"))
_READ_IN_TENANT = _READ.where(J.tenant == bindparam("p_tenant"))


@dataclass(frozen=True, kw_only=True)
class NewJob:
    """A validated request to run a job."""

    tenant: str
    type: str
    queue: str
    entity_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int
    timeout_s: int
    run_at: datetime | None = None
    correlation_id: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    replay_of: uuid.UUID | None = None


def create_job(db: Session | Connection, new: NewJob) -> tuple[Job, bool]:
    """Insert a queued job; returns (job, created). An idempotent repeat returns the original.

    Raises DuplicateActiveJob or IdempotencyConflict. A row that hits a unique index is
    skipped by the database rather than failing, so a conflict leaves the caller's
    transaction (e.g. a replay's) usable without a savepoint.
    """
    if new.idempotency_key is not None:
        existing = _by_idempotency_key(db, new)
        if existing is not None:
            return existing, False
    values = _values(new, utcnow())
    if db.execute(INSERT_SKIPPING_CONFLICTS[_dialect(db)], values).first() is None:
        return _explain_conflict(db, new), False
    return Job(**values), True


def create_jobs(session: Session, news: Sequence[NewJob]) -> list[Job | errors.StoreError]:
    """Insert many queued jobs with one statement; each item is its job or why it was refused.

    Rows that hit a unique index (an active duplicate, also within the batch) are skipped by
    the database and explained afterwards, so one conflict does not sink the batch.
    """
    now = utcnow()
    rows = [_values(new, now) for new in news]
    if not rows:
        return []
    # Many parameter sets, one statement: SQLAlchemy sends them as multi-row INSERTs from a
    # compiled template. Rendering the rows into the statement itself cost 80 % of a batch
    # request's CPU (a new 14,500-parameter statement to compile every time).
    inserted = set(session.connection().scalars(INSERT_SKIPPING_CONFLICTS[_dialect(session)], rows))
    results: list[Job | errors.StoreError] = []
    for new, row in zip(news, rows, strict=True):
        if row["id"] in inserted:
            results.append(Job(**row))
            continue
        try:
            results.append(_explain_conflict(session, new))
        except errors.StoreError as e:
            results.append(e)
    return results


def _dialect(db: Session | Connection) -> str:
    return db.get_bind().dialect.name if isinstance(db, Session) else db.dialect.name


def _values(new: NewJob, now: datetime) -> dict[str, Any]:
    job_id = new_id()
    return {
        "id": job_id,
        "tenant": new.tenant,
        "type": new.type,
        "queue": new.queue,
        "entity_id": new.entity_id,
        "payload": new.payload,
        "status": "queued",
        "priority": new.priority,
        "attempts": 0,
        "max_attempts": new.max_attempts,
        "timeout_s": new.timeout_s,
        "correlation_id": new.correlation_id or str(job_id),
        "replay_of": new.replay_of,
        "idempotency_key": new.idempotency_key,
        "request_hash": new.request_hash,
        "created_at": now,
        "run_at": new.run_at,
        "next_attempt_at": new.run_at if new.run_at and new.run_at > now else None,
        "progress": None,
        "result": None,
        "error_type": None,
        "error": None,
        "replayed_by": None,
        "started_at": None,
        "finished_at": None,
        "published_at": None,
        "lease_expires_at": None,
        "cancel_requested_at": None,
        "dead_lettered_at": None,
    }


def _by_idempotency_key(db: Session | Connection, new: NewJob) -> Job | None:
    row = db.execute(
        _BY_IDEMPOTENCY_KEY, {"p_tenant": new.tenant, "p_key": new.idempotency_key}
    ).first()
    if row is None:
        return None
    if row.request_hash != new.request_hash:
        raise errors.IdempotencyConflict("this Idempotency-Key was used with a different body")
    return Job(**row._mapping)


def _explain_conflict(db: Session | Connection, new: NewJob) -> Job:
    # Another transaction won a race on one of the unique indexes: say which one.
    if new.idempotency_key is not None:
        existing = _by_idempotency_key(db, new)
        if existing is not None:
            return existing
    if new.entity_id is not None:  # null entity ids never collide
        active = db.execute(
            _ACTIVE_FOR_ENTITY,
            {"p_tenant": new.tenant, "p_type": new.type, "p_entity_id": new.entity_id},
        ).scalar()
        if active is not None:
            raise errors.DuplicateActiveJob(active)
    raise errors.StoreError("the job conflicts with one that has since finished; try again")


def read_job(db: Session | Connection, job_id: uuid.UUID, *, tenant: str | None) -> Row[Any]:
    """What a client sees of a job (the Job object's columns), as a plain row, without the ORM.

    Raises JobNotFound if it does not exist or `tenant` (None: any tenant) may not see it.
    """
    if tenant is None:
        row = db.execute(_READ, {"p_id": job_id}).first()
    else:
        row = db.execute(_READ_IN_TENANT, {"p_id": job_id, "p_tenant": tenant}).first()
    if row is None:
        raise errors.JobNotFound(f"no job {job_id}")
    return row


def get_job(session: Session, job_id: uuid.UUID, *, tenant: str | None) -> Job:
    """The job, if it exists and `tenant` (None: any tenant) may see it."""
    query = select(Job).where(Job.id == job_id)
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    job = session.scalars(query).one_or_none()
    if job is None:
        raise errors.JobNotFound(f"no job {job_id}")
    return job


def list_jobs(
    session: Session,
    *,
    tenant: str | None,
    status: str | None = None,
    type: str | None = None,
    entity_id: str | None = None,
    error_type: str | None = None,
    ids: Sequence[uuid.UUID] | None = None,
    dead_letters: bool = False,
    limit: int = 50,
    before: uuid.UUID | None = None,
) -> tuple[Sequence[Job], uuid.UUID | None]:
    """A page of jobs, newest first, and the cursor of the next page (None at the end)."""
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    if dead_letters:
        query = query.where(Job.status == "dead", Job.replayed_by.is_(None))
    if status is not None:
        query = query.where(Job.status == status)
    if type is not None:
        query = query.where(Job.type == type)
    if entity_id is not None:
        query = query.where(Job.entity_id == entity_id)
    if error_type is not None:
        query = query.where(Job.error_type == error_type)
    if ids is not None:
        query = query.where(Job.id.in_(ids))
    if before is not None:
        query = query.where(Job.id < before)
    rows = session.scalars(query).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


def list_attempts(session: Session, job_id: uuid.UUID) -> Sequence[Attempt]:
    """The job's attempts in order."""
    return session.scalars(
        select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)
    ).all()
