"""Bulk replay of dead jobs: chunked transactions, then publish, then clear the dead-letter queue.

Used by `POST /v1/dead-letters/replay` and `courier replay`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dramatiq import Broker
from sqlalchemy.orm import Session, sessionmaker

from store import actions, dead_letter_queue, errors, jobs, outbox
from store.models import Job

log = logging.getLogger(__name__)

# Each chunk is one short transaction, so a bulk replay never holds many locks for long.
CHUNK = 200


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


def preview(session: Session, selection: Selection) -> list[Job]:
    """The dead jobs a replay of `selection` would take (for dry runs)."""
    found: list[Job] = []
    before = None
    while len(found) < selection.limit:
        rows, before = _page(session, selection, selection.limit - len(found), before)
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
    replayed_jobs: list[Job] = []
    before = None
    while len(result.replayed) + len(result.skipped) < selection.limit:
        done = len(result.replayed) + len(result.skipped)
        pairs: list[tuple[Job, Job]] = []
        with sessions.begin() as session:
            rows, before = _page(session, selection, min(CHUNK, selection.limit - done), before)
            for old in rows:
                try:
                    new = actions.replay(session, old, actor=actor, reason=reason, via="bulk")
                except errors.StoreError as e:
                    result.skipped.append((old.id, str(e)))
                else:
                    pairs.append((old, new))
        if broker is not None:
            outbox.publish(broker, sessions, [outbox.pending_of(new) for _, new in pairs])
        replayed_jobs.extend(old for old, _ in pairs)
        result.replayed.extend((old.id, new.id) for old, new in pairs)
        if on_progress is not None:
            on_progress(len(rows))
        if before is None:
            break
    if broker is not None:
        # Removing copies reads the whole dead-letter queue: once per replay, not per chunk.
        forget(broker, replayed_jobs)
    return result


def forget(broker: Broker, old_jobs: Sequence[Job]) -> None:
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


def _page(
    session: Session, selection: Selection, limit: int, before: uuid.UUID | None
) -> tuple[Sequence[Job], uuid.UUID | None]:
    return jobs.list_jobs(
        session,
        tenant=selection.tenant,
        type=selection.type,
        error_type=selection.error_type,
        ids=selection.job_ids,
        dead_letters=True,
        limit=limit,
        before=before,
    )
