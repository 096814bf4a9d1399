"""/v1/stats for operators and /metrics for Prometheus, both answered from one shared snapshot.

The figures are read from the database rather than counted in each process: they are then
the same whichever gunicorn worker answers, include every worker host, and survive
restarts, with no multiprocess bookkeeping to get wrong. Aggregating the whole record costs
more as history grows, so each process computes them at most once per `max_age_s`, in a
background thread once it has a first snapshot, and every scrape (whichever endpoint,
however many at once) answers from the latest: the numbers may be that many seconds old
(plus one computation), and scrapes cost the same at any table size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import falcon
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import ErrorOut, StatsOut
from api.spec import operation
from background.recent import Recent
from store import schedule_lag, states, stats

QueueDepths = Callable[[], dict[str, dict[str, int | None]]]


@dataclass(frozen=True)
class Figures:
    """One snapshot of everything /v1/stats and /metrics report."""

    summary: stats.Summary
    histogram: stats.Histogram
    queues: dict[str, dict[str, int | None]]
    ages: stats.Ages
    attempt_totals: dict[tuple[str, str], int]
    # Seconds each live schedule ("<tenant>/<name>") is late in starting.
    schedule_lags: dict[str, float]
    # (upstream, state) -> 1 for each upstream's circuit's current state, 0 for the others.
    circuits: dict[tuple[str, str], int] = field(default_factory=dict)


def shared_figures(
    sessions: sessionmaker[Session],
    queue_depths: QueueDepths,
    *,
    max_age_s: float,
    queues: Mapping[str, str] | None = None,
    upstreams: Sequence[str] = (),
) -> Recent[Figures]:
    """The process's snapshot, recomputed at most once per `max_age_s` in the background;
    `queues` maps the job types known to their queues (each reported even when idle), and
    each of `upstreams` has its circuit reported."""
    types = sorted(queues or {})
    queue_names = sorted(set((queues or {}).values()))

    def compute() -> Figures:
        with sessions() as session:
            summary, histogram = stats.summary_and_histogram(session)
            ages = stats.ages(session, queues=queue_names, types=types)
            totals = stats.attempt_totals(session, types=types)
            lags = schedule_lag.lags(session)
            circuits = stats.upstream_circuits(session, upstreams)
        return Figures(summary, histogram, queue_depths(), ages, totals, lags, circuits)

    # Refreshed behind the scrapes: at a million jobs one computation takes most of a second,
    # which no scrape should wait for. Unless nobody asked for a while: behind one address
    # (gunicorn's workers) a scrape may reach a process idle for minutes, whose figures,
    # older than the last scrape's, would make every counter look reset.
    return Recent(compute, max_age_s=max_age_s, refresh_behind=True, stale_after_s=2 * max_age_s)


class Stats:
    """Counts, success rate, retries, attempt durations and queue depths."""

    def __init__(self, figures: Recent[Figures]) -> None:
        self._figures = figures

    @operation(
        auth="operator", responses={200: StatsOut, 401: ErrorOut, 403: ErrorOut, 503: ErrorOut}
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Counts, success rate, retries, attempt durations and queue depths."""
        figures = self._figures.get()
        summary = figures.summary
        resp.media = {
            "jobs": summary.jobs,
            "by_type": summary.by_type,
            "success_rate": summary.success_rate,
            "retry_count": summary.retry_count,
            "dead_letters": summary.dead_letters,
            "avg_duration_ms": summary.avg_duration_ms,
            "p95_duration_ms": summary.p95_duration_ms,
            "queues": figures.queues,
        }


class Metrics:
    """Prometheus text exposition."""

    public = True

    def __init__(self, figures: Recent[Figures]) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(figures))
        self._registry.register(_AgesAndTotals(figures))

    @operation(auth=None, responses={200: None})
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Prometheus metrics (text exposition format)."""
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._registry)


class _Collector:
    def __init__(self, figures: Recent[Figures]) -> None:
        self._figures = figures

    def collect(self) -> Any:
        figures = self._figures.get()
        by_type = figures.summary.by_type
        buckets, count, total = figures.histogram
        jobs = GaugeMetricFamily(
            "courier_jobs", "Jobs by status and type.", labels=["status", "type"]
        )
        for job_type, by_status in sorted(by_type.items()):
            for status in states.VALUES:
                jobs.add_metric([status, job_type], by_status.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "courier_dead_letters",
            "Dead jobs not yet replayed.",
            value=figures.summary.dead_letters,
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
        for name, depth in figures.queues.items():
            for state, value in depth.items():
                if value is not None:
                    queue.add_metric([name, state], value)
        yield queue
        lag = GaugeMetricFamily(
            "courier_schedule_lag_seconds",
            "How late each live schedule's latest due occurrence is in starting (0: on time).",
            labels=["schedule"],
        )
        for schedule, seconds in sorted(figures.schedule_lags.items()):
            lag.add_metric([schedule], seconds)
        yield lag
        circuit = GaugeMetricFamily(
            "courier_upstream_circuit",
            "Each upstream's circuit: 1 for its current state, 0 for the others.",
            labels=["upstream", "state"],
        )
        for (upstream, state), value in sorted(figures.circuits.items()):
            circuit.add_metric([upstream, state], value)
        yield circuit


def _le(bound: float) -> str:
    return repr(float(bound))


class _AgesAndTotals(Collector):
    """The ages of the oldest waiting and running work, and the attempts by decision: what
    the shipped alert rules watch."""

    def __init__(self, figures: Recent[Figures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Any]:
        figures = self._figures.get()
        yield from _ages(figures.ages)
        yield _attempts_total(figures.attempt_totals)


def _ages(ages: stats.Ages) -> Iterator[GaugeMetricFamily]:
    yield _gauge_by(
        "courier_queue_oldest_seconds",
        "Age of the queue's oldest job ready to run (queued and due; not retrying).",
        "queue",
        ages.queue_oldest_s,
    )
    yield GaugeMetricFamily(
        "courier_dead_letter_oldest_seconds",
        "Age of the oldest dead letter not replayed, since its job died.",
        value=ages.dead_letter_oldest_s,
    )
    yield _gauge_by(
        "courier_running_oldest_seconds",
        "How long the longest-running attempt of the job type has run.",
        "type",
        ages.running_oldest_s,
    )


def _gauge_by(name: str, documentation: str, label: str, values: dict[str, float]) -> Any:
    gauge = GaugeMetricFamily(name, documentation, labels=[label])
    for value_of, value in sorted(values.items()):
        gauge.add_metric([value_of], value)
    return gauge


def _attempts_total(totals: dict[tuple[str, str], int]) -> CounterMetricFamily:
    counter = CounterMetricFamily(
        "courier_attempts",
        "Finished attempts by job type and decision (succeeded, retry, skip, dead, abandoned).",
        labels=["type", "decision"],
    )
    for (job_type, decision), count in sorted(totals.items()):
        counter.add_metric([job_type, decision], count)
    return counter
