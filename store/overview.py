"""What the dashboard's overview and workers pages read: bounded queries on indexed columns.

Counts by status and queue depths come from the stats snapshot; these add what it lacks:
throughput over the last hour (`ix_jobs_finished_at`), dead letters by error type
(`ix_jobs_dead`), the oldest ready job per queue (`ix_jobs_ready_since`) and the attempts
running now with their leases (`ix_jobs_lease`). Every age is measured by the database's clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from store import states
from store.models import ATTEMPTS, JOBS
from store.sql import now, one_of

#: The throughput plot's window, in minutes (the current, partial one included).
WINDOW_MINUTES = 60
#: Error types listed in the dead-letter breakdown; the rest are summed as "other".
ERROR_TYPES = 20
#: Running attempts listed at most (a deployment's worker threads are far fewer).
RUNNING = 1000


@dataclass(frozen=True)
class Throughput:
    """Jobs finished per minute by outcome, oldest minute first."""

    start: datetime
    minutes: list[datetime]
    counts: dict[str, list[int]]

    @property
    def total(self) -> int:
        """Jobs finished in the whole window."""
        return sum(sum(series) for series in self.counts.values())


@dataclass(frozen=True)
class ErrorCount:
    """How many dead letters died of one error type (None: no error type recorded)."""

    error_type: str | None
    count: int


@dataclass(frozen=True)
class RunningAttempt:
    """An attempt running now, with the worker process that holds its lease."""

    job_id: uuid.UUID
    number: int
    type: str
    tenant: str
    queue: str
    worker: str
    started_at: datetime
    lease_expires_at: datetime | None
    lease_expired: bool


class epoch_minute(FunctionElement[Any]):
    """Whole minutes from the Unix epoch to a timestamp (the minute it falls in)."""

    type = Integer()
    inherit_cache = True


@compiles(epoch_minute, "postgresql")
def _epoch_minute_pg(element: epoch_minute, compiler: SQLCompiler, **kw: Any) -> str:
    (at,) = element.clauses
    return f"CAST(floor(extract(epoch FROM {compiler.process(at, **kw)}) / 60) AS BIGINT)"


@compiles(epoch_minute, "sqlite")
def _epoch_minute_sqlite(element: epoch_minute, compiler: SQLCompiler, **kw: Any) -> str:
    (at,) = element.clauses
    return f"(CAST(strftime('%s', {compiler.process(at, **kw)}) AS INTEGER) / 60)"


def database_now(session: Session) -> datetime:
    """The database's current time."""
    return session.execute(select(now())).scalar_one()


def throughput(session: Session, *, at: datetime) -> Throughput:
    """Jobs finished per minute by outcome over the `WINDOW_MINUTES` minutes up to `at`."""
    current = at.replace(second=0, microsecond=0)
    start = current - timedelta(minutes=WINDOW_MINUTES - 1)
    minute = epoch_minute(JOBS.c.finished_at)
    rows = session.execute(
        select(minute, JOBS.c.status, func.count())
        .where(JOBS.c.finished_at >= start, one_of(JOBS.c.status, states.TERMINAL))
        .group_by(minute, JOBS.c.status)
    )
    first = _epoch_minutes(start)
    counts = {str(s): [0] * WINDOW_MINUTES for s in states.TERMINAL}
    for index, status, n in rows:
        # A row finished after `at` (since it was read) belongs to no minute shown.
        if 0 <= index - first < WINDOW_MINUTES:
            counts[status][index - first] += n
    minutes = [start + timedelta(minutes=i) for i in range(WINDOW_MINUTES)]
    return Throughput(start=start, minutes=minutes, counts=counts)


def _epoch_minutes(at: datetime) -> int:
    return int(at.timestamp()) // 60


def dead_letters_by_error(session: Session) -> list[ErrorCount]:
    """Dead letters (dead, not replayed) per error type, most first; past `ERROR_TYPES`
    types the rest are not listed."""
    count = func.count().label("n")
    rows = session.execute(
        select(JOBS.c.error_type, count)
        .where(states.dead_letter(JOBS.c))
        .group_by(JOBS.c.error_type)
        .order_by(count.desc(), JOBS.c.error_type)
        .limit(ERROR_TYPES)
    )
    return [ErrorCount(error_type, n) for error_type, n in rows]


def running_attempts(session: Session) -> list[RunningAttempt]:
    """The attempts running now (at most `RUNNING`), by worker then start."""
    attempt = ATTEMPTS.c
    job = JOBS.c
    rows = session.execute(
        select(
            job.id,
            attempt.number,
            job.type,
            job.tenant,
            job.queue,
            attempt.worker,
            attempt.started_at,
            job.lease_expires_at,
            states.lease_expired(job).label("expired"),
        )
        .select_from(
            JOBS.join(ATTEMPTS, and_(attempt.job_id == job.id, attempt.number == job.attempts))
        )
        .where(
            one_of(job.status, (states.Status.RUNNING,)),
            attempt.status == states.AttemptStatus.RUNNING,
        )
        .order_by(attempt.worker, attempt.started_at, job.id)
        .limit(RUNNING)
    )
    return [
        RunningAttempt(
            job_id=r.id,
            number=r.number,
            type=r.type,
            tenant=r.tenant,
            queue=r.queue,
            worker=r.worker,
            started_at=r.started_at,
            lease_expires_at=r.lease_expires_at,
            lease_expired=bool(r.expired),
        )
        for r in rows
    ]
