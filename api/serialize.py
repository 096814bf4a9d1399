"""Rows to JSON-ready dicts (plain functions: this is the hot path of status polling)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from store import schedules
from store.models import Attempt, Job, Schedule


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def job(row: Job | Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """The contract's Job object, from a `Job` or a row of `queries.read_job`."""
    return {
        "id": str(row.id),
        "tenant": row.tenant,
        "type": row.type,
        "queue": row.queue,
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
        "schedule_id": None if row.schedule_id is None else str(row.schedule_id),
        "scheduled_for": timestamp(row.scheduled_for),
        "callback_url": row.callback_url,
        "waiting_for": row.waiting_for,
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


def schedule(row: Schedule, last_run: schedules.LastRun | None) -> dict[str, Any]:
    """The contract's Schedule object, with its last run as `schedules.last_runs` found it."""
    return {
        "id": str(row.id),
        "tenant": row.tenant,
        "name": row.name,
        "type": row.type,
        "entity_id": row.entity_id,
        "payload": row.payload,
        "priority": row.priority,
        "max_attempts": row.max_attempts,
        "cron": row.cron,
        "interval_s": row.interval_s,
        "timezone": row.timezone,
        "jitter_s": row.jitter_s,
        "overlap": row.overlap,
        "missed": row.missed,
        "paused": row.paused,
        "paused_reason": row.paused_reason,
        "next_runs": [timestamp(t) for t in schedules.next_runs(row)],
        "last_run": None
        if last_run is None
        else {
            "job_id": str(last_run.job_id),
            "scheduled_for": timestamp(last_run.scheduled_for),
            "status": last_run.status,
        },
        "skipped_runs": row.skipped_runs,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }
