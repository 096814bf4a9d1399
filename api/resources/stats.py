"""/v1/stats for operators and /metrics for Prometheus, both computed from SQL when asked.

Metrics are read from the database at scrape time rather than counted in each process:
the numbers are then the same whichever gunicorn worker answers, include every worker
host, and survive restarts, with no multiprocess bookkeeping to get wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import ErrorOut, StatsOut
from api.spec import operation
from store import states, stats

QueueDepths = Callable[[], dict[str, dict[str, int | None]]]


class Stats:
    """Counts, success rate, retries, attempt durations and queue depths."""

    def __init__(self, sessions: sessionmaker[Session], queue_depths: QueueDepths) -> None:
        self._sessions = sessions
        self._queue_depths = queue_depths

    @operation(
        auth="operator", responses={200: StatsOut, 401: ErrorOut, 403: ErrorOut, 503: ErrorOut}
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Counts, success rate, retries, attempt durations and queue depths."""
        with self._sessions() as session:
            summary = stats.summary(session)
        resp.media = {
            "jobs": summary.jobs,
            "by_type": summary.by_type,
            "success_rate": summary.success_rate,
            "retry_count": summary.retry_count,
            "dead_letters": summary.dead_letters,
            "avg_duration_ms": summary.avg_duration_ms,
            "p95_duration_ms": summary.p95_duration_ms,
            "queues": self._queue_depths(),
        }


class Metrics:
    """Prometheus text exposition."""

    public = True

    def __init__(self, sessions: sessionmaker[Session], queue_depths: QueueDepths) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(sessions, queue_depths))

    @operation(auth=None, responses={200: None})
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Prometheus metrics (text exposition format)."""
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._registry)


class _Collector:
    def __init__(self, sessions: sessionmaker[Session], queue_depths: QueueDepths) -> None:
        self._sessions = sessions
        self._queue_depths = queue_depths

    def collect(self) -> Any:
        with self._sessions() as session:
            counts = stats.counts(session)
            summary_dead = stats.summary_dead_letters(session)
            buckets, count, total = stats.duration_histogram(session)
        jobs = GaugeMetricFamily(
            "courier_jobs", "Jobs by status and type.", labels=["status", "type"]
        )
        types = sorted({t for t, _ in counts})
        for job_type in types:
            for status in states.VALUES:
                jobs.add_metric([status, job_type], counts.get((job_type, status), 0))
        yield jobs
        yield GaugeMetricFamily(
            "courier_dead_letters", "Dead jobs not yet replayed.", value=summary_dead
        )
        histogram = HistogramMetricFamily(
            "courier_attempt_duration_seconds", "Duration of finished attempts.", unit=""
        )
        histogram.add_metric(
            [], [(_le(b), c) for b, c in buckets] + [("+Inf", count)], sum_value=total
        )
        yield histogram
        queue = GaugeMetricFamily(
            "courier_queue_messages",
            "Messages in the broker by queue and state (absent when unknown).",
            labels=["queue", "state"],
        )
        for name, depth in self._queue_depths().items():
            for state, value in depth.items():
                if value is not None:
                    queue.add_metric([name, state], value)
        yield queue


def _le(bound: float) -> str:
    return repr(float(bound))
