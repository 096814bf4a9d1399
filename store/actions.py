"""Actions people take on jobs: cancel, purge a queue and replay, each with its audit entry."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from store import audit, errors, job_changes, states, transitions
from store.ids import new_id
from store.models import JOBS, Job
from store.sql import one_of
from store.states import Status

J = JOBS.c

#: What a replay reads of the job it replays.
REPLAY_COLUMNS = (
    J.id,
    J.tenant,
    J.type,
    J.queue,
    J.entity_id,
    J.payload,
    J.priority,
    J.max_attempts,
    J.timeout_s,
    J.correlation_id,
    J.callback_url,
    J.traceparent,
)


class Replayable(Protocol):
    """A job to replay: a `Job`, or a row of REPLAY_COLUMNS."""

    id: uuid.UUID
    tenant: str
    type: str
    queue: str
    entity_id: str | None
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    timeout_s: int
    correlation_id: str
    callback_url: str | None
    traceparent: str | None


R = TypeVar("R", bound=Replayable)

#: The traceparent of a replay's new job, given the job it replays (a new trace, linked).
NewTrace = Callable[[Replayable], str]

# Columns a new job leaves empty, for the Job handed back (inserted as NULL).
_EMPTY = (
    "progress",
    "result",
    "error_type",
    "error",
    "replayed_by",
    "idempotency_key",
    "request_hash",
    "run_at",
    "next_attempt_at",
    "started_at",
    "finished_at",
    "published_at",
    "lease_expires_at",
    "cancel_requested_at",
    "dead_lettered_at",
    "schedule_id",
    "scheduled_for",
)


def cancel(session: Session, job: Job, *, actor: str, reason: str | None = None) -> Job:
    """Cancel a waiting job at once, or ask a running one to stop at its next checkpoint."""
    if job.id not in transitions.cancel(session.connection(), [job.id]):
        session.refresh(job)
        raise errors.InvalidTransition(f"the job is already {job.status}")
    job_changes.announce(session.connection(), [job.id])
    audit.record(
        session, actor=actor, action="cancel", job_id=job.id, tenant=job.tenant, reason=reason
    )
    session.flush()
    session.refresh(job)
    return job


def purge_queue(session: Session, queue: str, *, actor: str, reason: str | None = None) -> int:
    """Cancel every queued or retrying job of `queue`, with one audit entry; returns how many.

    The caller empties the broker's queue first (`delivery.purge`), so that any job this
    misses, committed after its statement began, was published after the broker was emptied.
    """
    connection = session.connection()
    cancelled_ids = transitions.cancel_waiting_in_queue(connection, queue)
    job_changes.announce(connection, cancelled_ids)
    cancelled = len(cancelled_ids)
    audit.record(
        session,
        actor=actor,
        action="queue.purge",
        reason=reason,
        details={"queue": queue, "cancelled": cancelled},
    )
    return cancelled


def replay(
    session: Session,
    job: Job,
    *,
    actor: str,
    new_trace: NewTrace,
    payload: dict[str, Any] | None = None,
    reason: str | None = None,
    via: str = "api",
    queues: Mapping[str, str] | None = None,
) -> Job:
    """Create a new job linked to `job` (`replay_of`/`replayed_by`); history is left as it was.

    The new job goes to its type's queue in `queues` (the configured map), where the type
    runs now; a type missing from it keeps the old job's queue. Its trace context is
    `new_trace(job)`.
    """
    if job.status not in states.REPLAYABLE:
        raise errors.InvalidTransition(
            f"only failed, dead or cancelled jobs can be replayed, not {job.status}"
        )
    if job.replayed_by is not None:
        raise errors.InvalidTransition(f"the job was already replayed by {job.replayed_by}")
    replayed, refused = replay_many(
        session,
        [job],
        actor=actor,
        new_trace=new_trace,
        payload=payload,
        reason=reason,
        via=via,
        queues=queues,
    )
    if refused:
        raise refused[0][1]
    session.refresh(job)
    return Job(**replayed[0][1], **dict.fromkeys(_EMPTY))


def replay_many(
    session: Session,
    olds: Sequence[R],
    *,
    actor: str,
    reason: str | None,
    via: str,
    new_trace: NewTrace,
    payload: dict[str, Any] | None = None,
    queues: Mapping[str, str] | None = None,
) -> tuple[list[tuple[R, dict[str, Any]]], list[tuple[uuid.UUID, errors.StoreError]]]:
    """Replay `olds` in the session's transaction, a few statements for all of them.

    Returns (old, new job's column values) pairs and the old ids that were refused, with
    why. `payload`, if given, replaces every old job's payload; `queues` is as for `replay`;
    `new_trace(old)` is each new job's traceparent. Each replay links both ways and writes
    its audit entry in the same transaction.
    """
    if not olds:
        return [], []
    connection = session.connection()
    news = {old.id: _new_job(old, payload, queues or {}, new_trace(old)) for old in olds}
    pairs = [(old_id, new["id"]) for old_id, new in news.items()]
    inserted = transitions.insert_replays(
        connection,
        [(o, new["id"], new["queue"], new["traceparent"]) for o, new in news.items()],
        payload,
    )
    refused = _explain_refused(session, [o for o in olds if news[o.id]["id"] not in inserted])
    links = [(old, new) for old, new in pairs if old not in refused]
    linked = transitions.link_replays(connection, links) if links else set()
    if len(linked) < len(links):
        # A concurrent replay linked some of these first. Their new jobs were never visible
        # to anyone, so they go, and those replays are refused.
        lost = [new for old, new in links if old not in linked]
        connection.execute(delete(JOBS).where(J.id.in_(lost)))
        refused |= {
            old: errors.InvalidTransition("the job was already replayed")
            for old, _ in links
            if old not in linked
        }
    job_changes.announce(connection, linked)  # the old jobs now name their replays
    for new in news.values():
        new["created_at"] = inserted.get(new["id"])
    replayed = [(o, news[o.id]) for o in olds if o.id not in refused]
    audit.record_many(
        session,
        actor=actor,
        action="replay",
        reason=reason,
        entries=[
            (
                old.id,
                old.tenant,
                {
                    "new_job_id": str(new["id"]),
                    "payload_overridden": payload is not None,
                    "via": via,
                },
            )
            for old, new in replayed
        ],
    )
    return replayed, [(o.id, refused[o.id]) for o in olds if o.id in refused]


def _new_job(
    old: Replayable, payload: dict[str, Any] | None, queues: Mapping[str, str], traceparent: str
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "tenant": old.tenant,
        "type": old.type,
        # Where the type runs now: COURIER_JOB_QUEUES may have moved it since the old job.
        "queue": queues.get(old.type, old.queue),
        "entity_id": old.entity_id,
        "payload": old.payload if payload is None else payload,
        "status": Status.QUEUED,
        "priority": old.priority,
        "attempts": 0,
        "max_attempts": old.max_attempts,
        "timeout_s": old.timeout_s,
        "correlation_id": old.correlation_id,
        "replay_of": old.id,
        "callback_url": old.callback_url,
        "traceparent": traceparent,
    }


def _explain_refused(
    session: Session, olds: Sequence[Replayable]
) -> dict[uuid.UUID, errors.StoreError]:
    # Say which active job holds each refused entity (one query for all of them).
    keys = {(o.tenant, o.type, o.entity_id) for o in olds if o.entity_id is not None}
    active: dict[tuple[str, str, str | None], uuid.UUID] = {}
    if keys:
        rows = session.execute(
            select(J.tenant, J.type, J.entity_id, J.id).where(
                one_of(J.status, states.ACTIVE), tuple_(J.tenant, J.type, J.entity_id).in_(keys)
            )
        )
        active = {(r.tenant, r.type, r.entity_id): r.id for r in rows}
    why: dict[uuid.UUID, errors.StoreError] = {}
    for old in olds:
        holder = active.get((old.tenant, old.type, old.entity_id))
        why[old.id] = (
            errors.DuplicateActiveJob(holder) if holder is not None else errors.EntityBusy()
        )
    return why
