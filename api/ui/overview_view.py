"""What the overview and workers pages show, built from the store's reads and the stats snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session, sessionmaker

from api import serialize
from api.ui import plot
from background.recent import Recent
from store import overview


@dataclass(frozen=True)
class QueueRow:
    """One queue's broker depths (None: unknown) and its oldest ready job's wait."""

    name: str
    ready: int | None
    unacked: int | None
    delayed: int | None
    dead: int | None
    oldest_ready: str | None


@dataclass(frozen=True)
class Process:
    """A worker process ("host:pid") and the attempts it runs now."""

    worker: str
    pid: str
    attempts: list[dict[str, Any]]


@dataclass(frozen=True)
class Host:
    """A worker host and its processes running attempts now."""

    name: str
    processes: list[Process]

    @property
    def running(self) -> int:
        """Attempts running on this host."""
        return sum(len(p.attempts) for p in self.processes)


@dataclass(frozen=True)
class LastHour:
    """The overview's reads whose cost grows with the work done: the last hour's finished
    jobs and the dead letters, read together at `at` (the database's clock)."""

    at: datetime
    throughput: overview.Throughput
    errors: list[overview.ErrorCount]


def last_hour(sessions: sessionmaker[Session], *, max_age_s: float) -> Recent[LastHour]:
    """The process's `LastHour`, read again at most once per `max_age_s` in the background.

    At 200,000 jobs an hour one read takes over half a second; shared like the stats
    snapshot, however many operators reload the overview it costs that once per interval.
    """

    def compute() -> LastHour:
        with sessions() as session:
            at = overview.database_now(session)
            return LastHour(
                at, overview.throughput(session, at=at), overview.dead_letters_by_error(session)
            )

    return Recent(compute, max_age_s=max_age_s, refresh_behind=True)


def throughput_chart(throughput: overview.Throughput) -> plot.Chart:
    """The per-minute chart of jobs finished, one line per outcome."""
    return plot.per_minute(throughput.minutes, throughput.counts)


def queue_rows(
    depths: Mapping[str, Mapping[str, int | None]], oldest: Mapping[str, float | None]
) -> list[QueueRow]:
    """A row per queue known to either source, by name."""
    rows = []
    for name in sorted({*depths, *oldest}):
        depth = depths.get(name, {})
        wait = oldest.get(name)
        rows.append(
            QueueRow(
                name=name,
                ready=depth.get("ready"),
                unacked=depth.get("unacked"),
                delayed=depth.get("delayed"),
                dead=depth.get("dead"),
                oldest_ready=None if wait is None else duration(wait),
            )
        )
    return rows


def error_rows(errors: Iterable[overview.ErrorCount]) -> list[dict[str, Any]]:
    """Dead letters per error type, each linking to the dead letters of that type."""
    return [
        {
            "error_type": e.error_type,
            "count": e.count,
            "url": "/ui/dead-letters"
            + ("" if e.error_type is None else "?" + urlencode({"error_type": e.error_type})),
        }
        for e in errors
    ]


def hosts(attempts: Iterable[overview.RunningAttempt], *, at: datetime) -> list[Host]:
    """Running attempts grouped by host, then process; hosts by name, processes by pid."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for a in attempts:
        host, _ = _host_and_pid(a.worker)
        grouped.setdefault(host, {}).setdefault(a.worker, []).append(_attempt(a, at=at))
    return [
        Host(
            name=host,
            processes=[
                Process(worker=w, pid=_host_and_pid(w)[1], attempts=rows)
                for w, rows in sorted(by_worker.items(), key=lambda kv: _pid_order(kv[0]))
            ],
        )
        for host, by_worker in sorted(grouped.items())
    ]


def _host_and_pid(worker: str) -> tuple[str, str]:
    host, _, pid = worker.rpartition(":")
    # Not "host:pid" (a worker named otherwise): the whole name is the host's.
    return (host, pid) if host else (worker, "")


def _attempt(a: overview.RunningAttempt, *, at: datetime) -> dict[str, Any]:
    return {
        "job_id": str(a.job_id),
        "number": a.number,
        "type": a.type,
        "tenant": a.tenant,
        "queue": a.queue,
        "started_at": serialize.timestamp(a.started_at),
        "running_for": duration(max((at - a.started_at).total_seconds(), 0.0)),
        "lease_expires_at": serialize.timestamp(a.lease_expires_at),
        "lease_expired": a.lease_expired,
    }


def _pid_order(worker: str) -> tuple[int, str]:
    pid = _host_and_pid(worker)[1]
    return (int(pid), worker) if pid.isdigit() else (-1, worker)


def duration(seconds: float) -> str:
    """A wait or run time for people: "42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h"."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
