"""Bulk replay of dead jobs in SQL: which jobs a selection names, replayed chunk by chunk.

Each chunk is one short transaction of a few statements, so a bulk replay never holds
many locks for long. Publishing the new jobs is the broker side's (`delivery.replays`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session

from store import actions, errors, states

CHUNK = 1000

#: How many ids a dry run shows.
PREVIEW_IDS = 20

J = actions.J


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which dead jobs to replay: ids, filters, or (`every`) all of them, up to `limit`."""

    job_ids: Sequence[uuid.UUID] | None = None
    type: str | None = None
    error_type: str | None = None
    tenant: str | None = None
    limit: int = 1000
    every: bool = False

    @property
    def names_jobs(self) -> bool:
        """Whether ids or a filter say which dead jobs are meant."""
        filters = (self.job_ids, self.type, self.error_type, self.tenant)
        return any(f is not None for f in filters)

    def check(self) -> None:
        """Refuse a selection that names nothing without saying it means every dead job: an
        empty or lost request must not replay every tenant's dead letters."""
        if not (self.names_jobs or self.every):
            raise errors.UnnamedReplay()


@dataclass(frozen=True)
class Preview:
    """What a replay of a selection would take: how many jobs, and the first (newest) ids."""

    count: int
    first_ids: list[uuid.UUID]


@dataclass(frozen=True)
class Chunk:
    """One chunk's work: the old jobs it locked, the replays made, and those refused."""

    olds: Sequence[Row[*tuple[Any, ...]]]
    replayed: list[tuple[Row[*tuple[Any, ...]], dict[str, Any]]]
    refused: list[tuple[uuid.UUID, errors.StoreError]]


def preview(session: Session, selection: Selection, *, first: int = PREVIEW_IDS) -> Preview:
    """The count and the first `first` ids of the dead jobs a replay of `selection` would
    take (a dry run: reads only)."""
    selected = _selected(select(J.id), selection).limit(selection.limit)
    count = session.scalar(select(func.count()).select_from(selected.subquery()))
    ids = session.scalars(_selected(select(J.id), selection).limit(min(first, selection.limit)))
    return Preview(count or 0, list(ids))


def replay_chunk(
    session: Session,
    selection: Selection,
    *,
    size: int,
    before: uuid.UUID | None,
    actor: str,
    reason: str | None,
    new_trace: actions.NewTrace,
    queues: Mapping[str, str] | None = None,
) -> Chunk:
    """Replay the next `size` selected dead jobs older than `before`, newest first, each to
    its type's queue in `queues` (see `actions.replay`); each new job's traceparent is
    `new_trace(old)`."""
    olds = _lock_page(session, selection, size, before)
    replayed, refused = actions.replay_many(
        session,
        olds,
        actor=actor,
        reason=reason,
        via="bulk",
        new_trace=new_trace,
        queues=queues,
    )
    return Chunk(olds, replayed, refused)


def _lock_page(
    session: Session, selection: Selection, limit: int, before: uuid.UUID | None
) -> Sequence[Row[*tuple[Any, ...]]]:
    # A replay by filter passes over the rows another transaction holds (a concurrent bulk
    # replay would not leave them dead and unreplayed; anything else, such as a worker's
    # write just after the job died, leaves them for the next replay). Jobs named by id are
    # waited for instead: the operator asked for these, and a 202 that replayed none of them
    # would say nothing. Rows are locked newest first either way, so two replays naming the
    # same jobs cannot deadlock, and the one that waited finds them replayed and takes none.
    # SQLite has no row locks but runs one writing transaction at a time.
    query = _selected(select(*actions.REPLAY_COLUMNS), selection)
    if before is not None:
        query = query.where(J.id < before)
    waits = selection.job_ids is not None
    return session.execute(query.limit(limit).with_for_update(skip_locked=not waits)).all()


def _selected(query: Select[Any], selection: Selection) -> Select[Any]:
    """`query` over the dead, unreplayed jobs `selection` names, newest first, as listed."""
    query = query.where(states.dead_letter(J)).order_by(J.id.desc())
    if selection.tenant is not None:
        query = query.where(J.tenant == selection.tenant)
    if selection.type is not None:
        query = query.where(J.type == selection.type)
    if selection.error_type is not None:
        query = query.where(J.error_type == selection.error_type)
    if selection.job_ids is not None:
        query = query.where(J.id.in_(selection.job_ids))
    return query
