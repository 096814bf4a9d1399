"""Bulk replay of dead jobs in SQL: which jobs a selection names, replayed chunk by chunk.

Each chunk is one short transaction of a few statements, so a bulk replay never holds
many locks for long. Publishing the new jobs is the broker side's (`delivery.replays`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from store import actions, errors, queries, states
from store.models import Job

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
class Chunk:
    """One chunk's work: the old jobs it locked, the replays made, and those refused."""

    olds: Sequence[Row[*tuple[Any, ...]]]
    replayed: list[tuple[Row[*tuple[Any, ...]], dict[str, Any]]]
    refused: list[tuple[uuid.UUID, errors.StoreError]]


def preview(session: Session, selection: Selection) -> list[Job]:
    """The dead jobs a replay of `selection` would take (for dry runs)."""
    found: list[Job] = []
    before = None
    while len(found) < selection.limit:
        rows, before = queries.list_jobs(
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


def replay_chunk(
    session: Session,
    selection: Selection,
    *,
    size: int,
    before: uuid.UUID | None,
    actor: str,
    reason: str | None,
) -> Chunk:
    """Replay the next `size` selected dead jobs older than `before`, newest first."""
    olds = _lock_page(session, selection, size, before)
    replayed, refused = actions.replay_many(session, olds, actor=actor, reason=reason, via="bulk")
    return Chunk(olds, replayed, refused)


def _lock_page(
    session: Session, selection: Selection, limit: int, before: uuid.UUID | None
) -> Sequence[Row[*tuple[Any, ...]]]:
    # Newest first, as listed. A concurrent bulk replay skips the rows this one holds (and
    # would not find them dead and unreplayed after it commits); SQLite has no row locks
    # but runs one writing transaction at a time.
    query = (
        select(*actions.REPLAY_COLUMNS)
        .where(states.dead_letter(J))
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
