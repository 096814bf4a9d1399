"""Rows to JSON-ready dicts (plain functions: this is the hot path of status polling)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from store.models import Attempt, Job


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def job(row: Job | Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """The contract's Job object, from a `Job` or a row of `queries.read_job`."""
    return {
        "id": str(row.id),
        "tenant": row.tenant,
        "type": row.type,
        "entity_id": row.entity_id,
        "payload": row.payload,
        "status": row.status,
        "priority": row.priority,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "progress": row.progress,
        "result": row.result,
        "error_type": row.error_type,
        "error": row.error,
        "correlation_id": row.correlation_id,
        "replay_of": None if row.replay_of is None else str(row.replay_of),
        "replayed_by": None if row.replayed_by is None else str(row.replayed_by),
        "created_at": timestamp(row.created_at),
        "started_at": timestamp(row.started_at),
        "finished_at": timestamp(row.finished_at),
        "next_attempt_at": timestamp(row.next_attempt_at),
        "run_at": timestamp(row.run_at),
        "status_url": f"/v1/jobs/{row.id}",
    }


def attempt(row: Attempt | Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """The contract's Attempt object."""
    return {
        "number": row.number,
        "status": row.status,
        "decision": row.decision,
        "error_type": row.error_type,
        "error": row.error,
        "retry_in_ms": row.retry_in_ms,
        "started_at": timestamp(row.started_at),
        "finished_at": timestamp(row.finished_at),
        "duration_ms": row.duration_ms,
        "worker": row.worker,
    }
