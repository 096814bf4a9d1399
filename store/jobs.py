"""Creating, reading and listing jobs, always keyed by tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import errors
from store.ids import new_id
from store.models import ACTIVE_STATUSES, Attempt, Job
from store.types import utcnow


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


def create_job(session: Session, new: NewJob) -> tuple[Job, bool]:
    """Insert a queued job; returns (job, created). An idempotent repeat returns the original.

    Raises DuplicateActiveJob or IdempotencyConflict. The insert runs in a savepoint so a
    conflict leaves the caller's transaction (e.g. a batch) usable.
    """
    if new.idempotency_key is not None:
        existing = _by_idempotency_key(session, new)
        if existing is not None:
            return existing, False
    job = _new_row(new, utcnow())
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return _explain_conflict(session, new), False
    return job, True


def create_jobs(session: Session, news: Sequence[NewJob]) -> list[Job | errors.StoreError]:
    """Insert many queued jobs with one statement; each item is its job or why it was refused.

    Rows that hit a unique index (an active duplicate, also within the batch) are skipped by
    the database and explained afterwards, so one conflict does not sink the batch.
    """
    now = utcnow()
    rows = [_new_row(new, now) for new in news]
    if not rows:
        return []
    dialect_insert = (
        postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    )
    table = Job.__table__
    inserted = set(
        session.scalars(
            dialect_insert(table)
            .values([{c.name: getattr(row, c.key) for c in table.columns} for row in rows])
            .on_conflict_do_nothing()
            .returning(table.c.id)
        )
    )
    results: list[Job | errors.StoreError] = []
    for new, row in zip(news, rows, strict=True):
        if row.id in inserted:
            results.append(row)
            continue
        try:
            results.append(_explain_conflict(session, new))
        except errors.StoreError as e:
            results.append(e)
    return results


def _new_row(new: NewJob, now: datetime) -> Job:
    job_id = new_id()
    return Job(
        id=job_id,
        tenant=new.tenant,
        type=new.type,
        queue=new.queue,
        entity_id=new.entity_id,
        payload=new.payload,
        status="queued",
        priority=new.priority,
        attempts=0,
        max_attempts=new.max_attempts,
        timeout_s=new.timeout_s,
        correlation_id=new.correlation_id or str(job_id),
        replay_of=new.replay_of,
        idempotency_key=new.idempotency_key,
        request_hash=new.request_hash,
        created_at=now,
        run_at=new.run_at,
        next_attempt_at=new.run_at if new.run_at and new.run_at > now else None,
        progress=None,
        result=None,
        error_type=None,
        error=None,
        replayed_by=None,
        started_at=None,
        finished_at=None,
        published_at=None,
        lease_expires_at=None,
        cancel_requested_at=None,
        dead_lettered_at=None,
    )


def _by_idempotency_key(session: Session, new: NewJob) -> Job | None:
    job = session.scalars(
        select(Job).where(Job.tenant == new.tenant, Job.idempotency_key == new.idempotency_key)
    ).one_or_none()
    if job is not None and job.request_hash != new.request_hash:
        raise errors.IdempotencyConflict("this Idempotency-Key was used with a different body")
    return job


def _explain_conflict(session: Session, new: NewJob) -> Job:
    # Another transaction won a race on one of the unique indexes: say which one.
    if new.idempotency_key is not None:
        existing = _by_idempotency_key(session, new)
        if existing is not None:
            return existing
    active = session.scalar(
        select(Job.id).where(
            Job.tenant == new.tenant,
            Job.type == new.type,
            Job.entity_id == new.entity_id,
            Job.status.in_(ACTIVE_STATUSES),
        )
    )
    if active is not None:
        raise errors.DuplicateActiveJob(active)
    raise errors.StoreError("the job conflicts with one that has since finished; try again")


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
