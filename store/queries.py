"""Reading and listing jobs and their attempts, always keyed by tenant."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select
from sqlalchemy.orm import Session

from store import errors, states
from store.models import Attempt, Job

J = Job.__table__.c

# The columns of the Job object, by primary key (and tenant, for clients), built once: a
# status poll is the API's hot path.
_JOB_COLUMNS = (
    J.id,
    J.tenant,
    J.type,
    J.queue,
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
    J.schedule_id,
    J.scheduled_for,
    J.callback_url,
    J.waiting_for,
)
_READ = select(*_JOB_COLUMNS).where(J.id == bindparam("p_id"))
_READ_IN_TENANT = _READ.where(J.tenant == bindparam("p_tenant"))
_READ_MANY = select(*_JOB_COLUMNS).where(J.id.in_(bindparam("p_ids", expanding=True)))
_ATTEMPTS_OF = (
    select(Attempt.__table__)
    .where(Attempt.job_id.in_(bindparam("p_ids", expanding=True)))
    .order_by(Attempt.job_id, Attempt.number)
)


def read_job(
    db: Session | Connection, job_id: uuid.UUID, *, tenant: str | None
) -> Row[*tuple[Any, ...]]:
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


def read_jobs(db: Connection, job_ids: Collection[uuid.UUID]) -> Sequence[Row[*tuple[Any, ...]]]:
    """The rows of `read_job` of every one of these jobs that exists, in one statement (for
    the API's watcher: it has already checked who may see them)."""
    return db.execute(_READ_MANY, {"p_ids": list(job_ids)}).all() if job_ids else []


def attempts_of(db: Connection, job_ids: Collection[uuid.UUID]) -> Sequence[Row[*tuple[Any, ...]]]:
    """The attempts of these jobs, as plain rows, ordered by job and number, in one statement."""
    return db.execute(_ATTEMPTS_OF, {"p_ids": list(job_ids)}).all() if job_ids else []


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
    schedule_id: uuid.UUID | None = None,
    dead_letters: bool = False,
    limit: int = 50,
    before: uuid.UUID | None = None,
) -> tuple[Sequence[Job], uuid.UUID | None]:
    """A page of jobs, newest first, and the cursor of the next page (None at the end)."""
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    if dead_letters:
        query = query.where(states.dead_letter(Job.__table__.c))
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
    if schedule_id is not None:
        query = query.where(Job.schedule_id == schedule_id)
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


def buried_by_its_attempt(db: Connection, job_id: uuid.UUID, number: int) -> bool:
    """Whether attempt `number` ran to its end and its own failure made the job dead (not
    the reaper, which records the attempts it ends as abandoned)."""
    decided = db.execute(
        select(Attempt.status, Attempt.decision).where(
            Attempt.job_id == job_id, Attempt.number == number
        )
    ).first()
    return decided is not None and tuple(decided) == (
        states.AttemptStatus.FAILED,
        states.Decision.DEAD,
    )
