"""Aggregates over the record for operators: counts, success rate, retries, attempt durations,
the ages of the oldest waiting and running work, and the attempts counted by decision."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, and_, bindparam, case, func, literal_column, select
from sqlalchemy.orm import Session

from store import circuits, states, transitions
from store.models import Attempt, AttemptTotal, Job
from store.sql import millis_since, now
from store.states import Status

#: Buckets of the attempt duration histogram, in seconds (Prometheus convention).
DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)


@dataclass(frozen=True)
class Summary:
    """What `GET /v1/stats` and `courier stats` report about the record."""

    jobs: dict[str, int]
    by_type: dict[str, dict[str, int]]
    success_rate: float | None
    retry_count: int
    dead_letters: int
    avg_duration_ms: float | None
    p95_duration_ms: float | None


def counts(session: Session) -> dict[tuple[str, str], int]:
    """Number of jobs per (type, status)."""
    rows = session.execute(
        select(Job.type, Job.status, func.count()).group_by(Job.type, Job.status)
    )
    return {(t, s): n for t, s, n in rows}


#: Cumulative attempt counts per bucket (seconds), the total count and the sum in seconds.
Histogram = tuple[list[tuple[float, int]], int, float]


def summary(session: Session) -> Summary:
    """Everything an operator's overview needs, in a few aggregate queries."""
    return summary_and_histogram(session)[0]


def summary_and_histogram(session: Session) -> tuple[Summary, Histogram]:
    """The overview and the attempt duration histogram, reading the attempts once."""
    by_pair = counts(session)
    jobs = dict.fromkeys(states.VALUES, 0)
    by_type: dict[str, dict[str, int]] = {}
    for (job_type, status), n in by_pair.items():
        jobs[status] = jobs.get(status, 0) + n
        by_type.setdefault(job_type, dict.fromkeys(states.VALUES, 0))[status] = n
    finished = jobs[Status.SUCCEEDED] + jobs[Status.FAILED] + jobs[Status.DEAD]
    retries, avg, p95, histogram = _attempt_figures(session)
    summary = Summary(
        jobs=jobs,
        by_type=by_type,
        success_rate=round(jobs[Status.SUCCEEDED] / finished, 4) if finished else None,
        retry_count=retries or 0,
        dead_letters=summary_dead_letters(session),
        avg_duration_ms=None if avg is None else round(float(avg), 1),
        p95_duration_ms=p95,
    )
    return summary, histogram


def summary_dead_letters(session: Session) -> int:
    """Dead jobs not yet replayed."""
    return session.scalar(select(func.count()).where(states.dead_letter(Job.__table__.c))) or 0


def _attempt_figures(session: Session) -> tuple[int, Any, float | None, Histogram]:
    """Retries, average and p95 duration (ms), and the histogram: one pass over the attempts
    (PostgreSQL computes the percentile in the same pass)."""
    duration = Attempt.duration_ms
    postgres = session.get_bind().dialect.name == "postgresql"
    columns: list[Any] = [
        func.count(case((Attempt.decision == "retry", 1))),
        func.avg(duration),
        func.count(duration),
        func.coalesce(func.sum(duration), 0),
        *(func.count(case((duration <= bound * 1000, 1))) for bound in DURATION_BUCKETS_S),
    ]
    if postgres:  # ordered-set aggregates leave out NULLs, as the others do
        columns.append(func.percentile_cont(0.95).within_group(duration))
    row = session.execute(select(*columns)).one()
    retries, avg, count, total = row[:4]
    cumulative = row[4 : 4 + len(DURATION_BUCKETS_S)]
    buckets = list(zip(DURATION_BUCKETS_S, cumulative, strict=True))
    if postgres:
        p95 = None if row[-1] is None else round(float(row[-1]), 1)
    else:
        p95 = _p95_in_python(session)
    return retries, avg, p95, (buckets, count, float(total) / 1000)


def _p95_in_python(session: Session) -> float | None:
    # SQLite has no percentile function; the embedded mode's tables are small.
    # The query leaves out NULLs; the column's type still allows them.
    durations = select(Attempt.duration_ms).where(Attempt.duration_ms.is_not(None))
    values = sorted(d for d in session.scalars(durations) if d is not None)
    if not values:
        return None
    return float(values[min(len(values) - 1, int(0.95 * len(values)))])


# --- ages and attempt totals: bounded by the work in flight, not by history -------------

#: The decisions `courier_attempts_total` counts: a failed attempt's (`states.Decision`),
#: and `succeeded` and `abandoned` (its worker vanished), as the transitions count them.
COUNTED_DECISIONS = (
    transitions.SUCCEEDED,
    *states.DECISION_VALUES,
    transitions.ABANDONED,
)


@dataclass(frozen=True)
class Ages:
    """How long the oldest work has waited or run, in seconds by the database's clock."""

    queue_oldest_s: dict[str, float]  # by queue: the oldest job ready to run
    dead_letter_oldest_s: float  # the oldest dead letter not replayed
    running_oldest_s: dict[str, float]  # by job type: the longest-running attempt


def ages(session: Session, *, queues: Iterable[str], types: Iterable[str]) -> Ages:
    """The ages of the oldest ready job of each queue, dead letter and running attempt of each
    type (0 where there is none); each from an index over work in flight alone."""
    return Ages(
        queue_oldest_s={queue: queue_oldest_seconds(session, queue) for queue in queues},
        dead_letter_oldest_s=dead_letter_oldest_seconds(session),
        running_oldest_s={**dict.fromkeys(types, 0.0), **running_oldest_seconds(session)},
    )


_READY_SINCE = func.coalesce(Job.next_attempt_at, Job.created_at)
# Spelled as the partial index ix_jobs_ready_since is, so that it answers: the minimum is
# then its first entry at or before now in the queue.
_OLDEST_READY = select(millis_since(func.min(_READY_SINCE))).where(
    Job.status == literal_column(f"'{Status.QUEUED}'"),
    Job.queue == bindparam("queue", type_=String),
    now() >= _READY_SINCE,
)


def queue_oldest_seconds(session: Session, queue: str) -> float:
    """Age of the queue's oldest job ready to run: queued (a retry waits as `retrying`, not
    counted) and due since its `run_at` or its creation; 0 when none is."""
    return _seconds(session.scalar(_OLDEST_READY, {"queue": queue}))


_OLDEST_DEAD = select(millis_since(func.min(Job.finished_at))).where(
    states.dead_letter(Job.__table__.c)
)


def dead_letter_oldest_seconds(session: Session) -> float:
    """Age of the oldest dead letter not replayed (since its job died); 0 when none is."""
    return _seconds(session.scalar(_OLDEST_DEAD))


# The job's started_at is its first attempt's; the running attempt's own start is what ages.
_RUNNING_OLDEST = (
    select(Job.type, millis_since(func.min(Attempt.started_at)))
    .select_from(
        Job.__table__.join(
            Attempt.__table__,
            and_(Attempt.job_id == Job.id, Attempt.number == Job.attempts),
        )
    )
    .where(Job.status == literal_column(f"'{Status.RUNNING}'"))
    .group_by(Job.type)
)


def running_oldest_seconds(session: Session) -> dict[str, float]:
    """Age of the longest-running attempt of each job type that has one running."""
    return {job_type: _seconds(ms) for job_type, ms in session.execute(_RUNNING_OLDEST)}


def _seconds(millis: int | None) -> float:
    return 0.0 if millis is None else max(0.0, millis / 1000)


_TOTALS = select(AttemptTotal.type, AttemptTotal.decision, func.sum(AttemptTotal.count)).group_by(
    AttemptTotal.type, AttemptTotal.decision
)


def attempt_totals(session: Session, *, types: Iterable[str]) -> dict[tuple[str, str], int]:
    """Finished attempts ever counted per (type, decision), every counted decision of each of
    `types` included (0 when none), so that a rate starts from the first attempt."""
    totals = {(t, d): 0 for t in types for d in COUNTED_DECISIONS}
    for job_type, decision, count in session.execute(_TOTALS):
        totals[(job_type, decision)] = int(count)
    return totals


def upstream_circuits(session: Session, upstreams: Iterable[str]) -> dict[tuple[str, str], int]:
    """`courier_upstream_circuit{upstream,state}`: for every upstream in `upstreams` and every
    one with a circuit, 1 for its current state and 0 for the others."""
    return {
        (shown.upstream, state): int(shown.state == state)
        for shown in circuits.states_of(session.connection(), upstreams)
        for state in circuits.STATES
    }
