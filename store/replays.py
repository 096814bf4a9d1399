"""Bulk replay of dead jobs: chunked transactions, then publish, then clear the dead-letter queue.

Used by `POST /v1/dead-letters/replay` and `courier replay`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dramatiq import Broker
from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from store import actions, dead_letter_queue, jobs, outbox
from store.models import Job

log = logging.getLogger(__name__)

# Each chunk is one short transaction of a few statements, so a bulk replay never holds
# many locks for long.
CHUNK = 1000

J = actions.J


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which dead jobs to replay."""

    job_ids: Sequence[uuid.UUID] | None = None
    type: str | None = None
    error_type: str | None = None
    tenant: str | None = None
    limit: int = 1000


@dataclass(frozen=True)
class Result:
    """Pairs of (old job id, new job id) and the jobs that could not be replayed, with why."""

    replayed: list[tuple[uuid.UUID, uuid.UUID]]
    skipped: list[tuple[uuid.UUID, str]]


class Queued(Protocol):
    """Enough of a job to find its dead letter."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def queue(self) -> str: ...


def preview(session: Session, selection: Selection) -> list[Job]:
    """The dead jobs a replay of `selection` would take (for dry runs)."""
    found: list[Job] = []
    before = None
    while len(found) < selection.limit:
        rows, before = jobs.list_jobs(
            session,
            tenant=selection.tenant,
            type=selection.type,
            error_type=selection.error_type,
            ids=selection.job_ids,
            dead_letters=True,
            limit=selection.limit - len(found),
            before=before,
        )
        found += rows
        if before is None:
            break
    return found


def replay_dead(
    sessions: sessionmaker[Session],
    broker: Broker | None,
    selection: Selection,
    *,
    actor: str,
    reason: str | None,
    on_progress: Callable[[int], None] | None = None,
) -> Result:
    """Replay the selected dead jobs; returns what was replayed and what was skipped.

    Without a `broker` the new jobs are left to the relay (as when the broker is in another
    process's memory).
    """
    result = Result([], [])
    replayed_jobs: list[Row[Any]] = []
    before = None
    while (done := len(result.replayed) + len(result.skipped)) < selection.limit:
        size = min(CHUNK, selection.limit - done)
        with sessions.begin() as session:
            olds = _lock_page(session, selection, size, before)
            pairs, refused = actions.replay_many(
                session, olds, actor=actor, reason=reason, via="bulk"
            )
        result.skipped.extend((old_id, str(why)) for old_id, why in refused)
        if broker is not None and pairs:
            outbox.publish(broker, sessions, [_pending(new) for _, new in pairs])
        replayed_jobs.extend(old for old, _ in pairs)
        result.replayed.extend((old.id, new["id"]) for old, new in pairs)
        if on_progress is not None:
            on_progress(len(olds))
        if len(olds) < size:
            break
        before = olds[-1].id
    if broker is not None:
        # Removing copies reads the whole dead-letter queue: once per replay, not per chunk.
        forget(broker, replayed_jobs)
    return result


def forget(broker: Broker, old_jobs: Sequence[Queued]) -> None:
    """Remove replayed jobs' copies from their dead-letter queues (best effort: they expire)."""
    by_queue: dict[str, set[str]] = {}
    for job in old_jobs:
        by_queue.setdefault(job.queue, set()).add(str(job.id))
    for queue, ids in by_queue.items():
        try:
            dead_letter_queue.remove(broker, queue, ids)
        except Exception:
            log.warning(
                "could not remove %d dead letters from %s.XQ", len(ids), queue, exc_info=True
            )


def _pending(new: dict[str, Any]) -> outbox.Pending:
    return outbox.Pending(
        new["id"],
        new["type"],
        new["queue"],
        new["priority"],
        new["timeout_s"],
        new["correlation_id"],
        new["attempts"],
    )


def _lock_page(
    session: Session, selection: Selection, limit: int, before: uuid.UUID | None
) -> Sequence[Row[Any]]:
    # Newest first, as listed. A concurrent bulk replay skips the rows this one holds (and
    # would not find them dead and unreplayed after it commits); SQLite has no row locks
    # but runs one writing transaction at a time.
    query = (
        select(*actions.REPLAY_COLUMNS)
        .where(J.status == "dead", J.replayed_by.is_(None))
        .order_by(J.id.desc())
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if selection.tenant is not None:
        query = query.where(J.tenant == selection.tenant)
    if selection.type is not None:
        query = query.where(J.type == selection.type)
    if selection.error_type is not None:
        query = query.where(J.error_type == selection.error_type)
    if selection.job_ids is not None:
        query = query.where(J.id.in_(selection.job_ids))
    if before is not None:
        query = query.where(J.id < before)
    return session.execute(query).all()
