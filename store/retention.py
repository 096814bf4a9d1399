"""Pruning finished jobs: in small batches, so no long locks; the audit log is never pruned."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from store.models import Job
from store.sql import now_plus
from store.states import Status

PRUNABLE: tuple[str, ...] = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


def cutoff(session: Session, age: timedelta) -> datetime:
    """The moment `age` ago, by the database's clock."""
    moment = session.scalar(select(now_plus(-age.total_seconds())))
    assert moment is not None
    return moment


def _candidates(cutoff: datetime, statuses: tuple[str, ...]) -> Select[Any]:
    return select(Job.id).where(Job.status.in_(statuses), Job.finished_at < cutoff)


def count_prunable(session: Session, cutoff: datetime, *, include_dead: bool) -> dict[str, int]:
    """How many jobs of each status a prune would delete."""
    statuses = PRUNABLE + ((Status.DEAD,) if include_dead else ())
    rows = session.execute(
        select(Job.status, func.count())
        .where(Job.status.in_(statuses), Job.finished_at < cutoff)
        .group_by(Job.status)
    )
    return dict(rows.all())


def prune(
    sessions: sessionmaker[Session],
    cutoff: datetime,
    *,
    include_dead: bool = False,
    batch: int = 1000,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete finished jobs (and, by cascade, their attempts) that finished before `cutoff`.

    Dead jobs are kept unless `include_dead`: they wait for an operator. Each batch is its
    own short transaction. Returns how many jobs were deleted.
    """
    statuses = PRUNABLE + ((Status.DEAD,) if include_dead else ())
    deleted = 0
    while True:
        with sessions.begin() as session:
            ids = session.scalars(_candidates(cutoff, statuses).limit(batch)).all()
            if not ids:
                return deleted
            session.execute(delete(Job).where(Job.id.in_(ids)))
        deleted += len(ids)
        if on_batch is not None:
            on_batch(len(ids))
