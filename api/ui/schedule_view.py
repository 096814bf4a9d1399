"""What the dashboard shows of a schedule: its settings, its last run and its next runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from api import serialize
from store import schedules
from store.models import Schedule


def of(schedule: Schedule, run: schedules.LastRun | None, *, next_count: int) -> dict[str, Any]:
    """The schedule as its pages show it, with its last run and its next `next_count` runs."""
    zone = ZoneInfo(schedule.timezone)
    return {
        "id": str(schedule.id),
        "tenant": schedule.tenant,
        "name": schedule.name,
        "type": schedule.type,
        "entity_id": schedule.entity_id,
        "cadence": schedule.cron or f"every {schedule.interval_s} s",
        "timezone": schedule.timezone,
        "jitter_s": schedule.jitter_s,
        "overlap": schedule.overlap,
        "missed": schedule.missed,
        "priority": schedule.priority,
        "max_attempts": schedule.max_attempts,
        "paused": schedule.paused,
        "paused_reason": schedule.paused_reason,
        "skipped_runs": schedule.skipped_runs,
        # Each run in UTC and in the wall-clock time of the schedule's zone, as cron reads it.
        "next_runs": [
            (_to_the_second(t), t.astimezone(zone).strftime("%a %Y-%m-%d %H:%M:%S %Z"))
            for t in schedules.next_runs(schedule, next_count)
        ],
        "last_run": None
        if run is None
        else {
            "job_id": str(run.job_id),
            "scheduled_for": _to_the_second(run.scheduled_for),
            "status": run.status,
        },
        "created_at": serialize.timestamp(schedule.created_at),
        "updated_at": serialize.timestamp(schedule.updated_at),
    }


def _to_the_second(moment: datetime) -> str | None:
    # Jitter gives runs microseconds that only make them harder to read.
    return serialize.timestamp(moment.replace(microsecond=0))
