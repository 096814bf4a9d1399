"""Bulk replay end to end: replay chunks in SQL, publish the new jobs, clear the dead letters.

Used by `POST /v1/dead-letters/replay` and `courier replay`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from delivery import dead_letters
from delivery.outbox import Outbox
from store import actions, bulk_replay
from store.outbox import JobMessage
from tracing import spans

log = logging.getLogger(__name__)


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


def replay_dead(
    sessions: sessionmaker[Session],
    outbox: Outbox | None,
    selection: bulk_replay.Selection,
    *,
    actor: str,
    reason: str | None,
    on_progress: Callable[[int], None] | None = None,
    queues: Mapping[str, str] | None = None,
) -> Result:
    """Replay the selected dead jobs; returns what was replayed and what was skipped.

    Each new job goes to its type's queue in `queues` (job type → queue, as configured).
    Without an `outbox` the new jobs are left to the relay (as when the broker is in another
    process's memory).
    """
    selection.check()
    result = Result([], [])
    replayed_jobs: list[Any] = []
    before = None
    while (done := len(result.replayed) + len(result.skipped)) < selection.limit:
        size = min(bulk_replay.CHUNK, selection.limit - done)
        with sessions.begin() as session:
            chunk = bulk_replay.replay_chunk(
                session,
                selection,
                size=size,
                before=before,
                actor=actor,
                reason=reason,
                queues=queues,
                new_trace=new_trace,
            )
        result.skipped.extend((old_id, str(why)) for old_id, why in chunk.refused)
        if outbox is not None:
            outbox.publish([_message(new) for _, new in chunk.replayed])
        replayed_jobs.extend(old for old, _ in chunk.replayed)
        result.replayed.extend((old.id, new["id"]) for old, new in chunk.replayed)
        if on_progress is not None:
            on_progress(len(chunk.olds))
        if len(chunk.olds) < size:
            break
        before = chunk.olds[-1].id
    if outbox is not None:
        # Removing copies reads the whole dead-letter queue: once per replay, not per chunk.
        forget(outbox, replayed_jobs)
    return result


def new_trace(old: actions.Replayable) -> str:
    """A replay's new trace, whose first span links to the replayed job's trace."""
    return spans.replay(old.traceparent, old_job_id=str(old.id))


def forget(outbox: Outbox, old_jobs: Sequence[Queued]) -> None:
    """Remove replayed jobs' copies from their dead-letter queues (best effort: they expire)."""
    by_queue: dict[str, set[str]] = {}
    for job in old_jobs:
        by_queue.setdefault(job.queue, set()).add(str(job.id))
    for queue, ids in by_queue.items():
        try:
            dead_letters.remove(outbox.broker, queue, ids)
        except Exception:
            log.warning(
                "could not remove %d dead letters from %s.XQ", len(ids), queue, exc_info=True
            )


def _message(new: dict[str, Any]) -> JobMessage:
    return JobMessage(
        new["id"],
        new["type"],
        new["queue"],
        new["priority"],
        new["timeout_s"],
        new["correlation_id"],
        new["attempts"],
        new["traceparent"],
    )
