"""Aggregates over the record for operators: counts, success rate, retries, attempt durations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from store import states
from store.models import Attempt, Job
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
