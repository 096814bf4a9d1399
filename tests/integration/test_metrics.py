"""The metrics the alert rules watch: attempts counted by the transitions that end them, and the
ages of the oldest ready job, dead letter and running attempt, read from indexes over the work
in flight, so a scrape costs the same whatever the history."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from store import stats, transitions
from store.models import ATTEMPT_TOTALS, ATTEMPTS, JOBS
from store.sql import now_plus
from store.states import Status
from store.transitions import Claim, Outcome
from store.types import utcnow
from tests.support.polling import wait_for
from tests.support.records import insert_jobs
from tests.support.stack import build

pytestmark = pytest.mark.integration

J = JOBS.c
WORKER = "test:1"
#: The database's ages are read a moment after they are set up.
SLACK_S = 30
#: SQLite's clock counts whole milliseconds: an age read within one of its setting is short.
CLOCK_TICK_S = 0.001


def aged(age_s: float, since_s: float) -> bool:
    """Whether `age_s` is what a row made `since_s` ago reads a moment later."""
    return since_s - CLOCK_TICK_S <= age_s < since_s + SLACK_S


@pytest.fixture(params=["postgresql", "sqlite"])
def db_engine(request: pytest.FixtureRequest) -> Engine:
    """The totals are kept by the same statements on both engines."""
    return request.getfixturevalue("engine" if request.param == "postgresql" else "sqlite_engine")


def claimed(engine: Engine, count: int, **columns: Any) -> list[Claim]:
    ids = insert_jobs(engine, count, **columns)
    with engine.begin() as db:
        claims = transitions.claim(db, ids, worker=WORKER, lease_s=30)
    return [claims[i] for i in ids]


def finish(engine: Engine, *finishes: tuple[Claim, Outcome]) -> dict[uuid.UUID, str]:
    with engine.begin() as db:
        return transitions.finish(db, list(finishes))


def totals(engine: Engine, types: tuple[str, ...] = ()) -> dict[tuple[str, str], int]:
    with Session(engine) as session:
        return {k: v for k, v in stats.attempt_totals(session, types=types).items() if v}


def ages(engine: Engine, **kwargs: Any) -> stats.Ages:
    with Session(engine) as session:
        return stats.ages(session, **{"queues": ("sync",), "types": (), **kwargs})


def set_columns(engine: Engine, ids: list[uuid.UUID], **values: Any) -> None:
    with engine.begin() as db:
        db.execute(update(JOBS).where(J.id.in_(ids)).values(**values))


RETRY = Outcome(job_status=Status.RETRYING, error_type="UpstreamUnavailable", retry_in_ms=0)
DEAD = Outcome(job_status=Status.DEAD, error_type="UpstreamUnavailable")
SKIP = Outcome(job_status=Status.FAILED, error_type="UpstreamNotFound")
SUCCESS = Outcome(job_status=Status.SUCCEEDED, result={})


# --- courier_attempts_total ---------------------------------------------------------------


def test_every_finished_attempt_is_counted_once_by_type_and_decision(db_engine):
    a, b, c, d = claimed(db_engine, 4)
    (e,) = claimed(db_engine, 1, type="invoice_sync")
    assert finish(db_engine, (a, SUCCESS), (b, SUCCESS), (c, RETRY), (d, SKIP), (e, DEAD))
    # A second finish of the same attempt is fenced off, and counts nothing.
    assert finish(db_engine, (a, SUCCESS)) == {}
    assert totals(db_engine) == {
        ("customer_sync", "succeeded"): 2,
        ("customer_sync", "retry"): 1,
        ("customer_sync", "skip"): 1,
        ("invoice_sync", "dead"): 1,
    }


def test_a_cancel_that_beats_a_retry_counts_as_the_skip_its_attempt_records(db_engine):
    (job,) = claimed(db_engine, 1)
    with db_engine.begin() as db:
        transitions.cancel(db, [job.job_id])
    assert finish(db_engine, (job, RETRY)) == {job.job_id: Status.CANCELLED}
    with db_engine.connect() as db:
        decision = db.scalar(select(ATTEMPTS.c.decision).where(ATTEMPTS.c.job_id == job.job_id))
    assert decision == "skip"
    assert totals(db_engine) == {("customer_sync", "skip"): 1}


def test_a_reaped_attempt_counts_as_abandoned_whether_its_job_is_retried_or_buried(db_engine):
    retried, buried = claimed(db_engine, 2, max_attempts=2)
    set_columns(db_engine, [buried.job_id], max_attempts=1)
    with db_engine.begin() as db:
        db.execute(update(JOBS).values(lease_expires_at=now_plus(-1)))
    with db_engine.begin() as db:
        reaped = transitions.reap_expired(db, stuck_grace_s=60)
    assert {r.job_id: r.job_status for r in reaped} == {
        retried.job_id: Status.RETRYING,
        buried.job_id: Status.DEAD,
    }
    assert totals(db_engine) == {("customer_sync", "abandoned"): 2}


def test_counts_add_up_over_batches_and_over_every_shard(db_engine):
    with db_engine.begin() as db:
        # What another process (another shard) counted before.
        db.execute(
            insert(ATTEMPT_TOTALS),
            [
                {"type": "customer_sync", "decision": "succeeded", "shard": s, "count": 5}
                for s in {
                    (transitions._shard() + 1) % transitions.TOTAL_SHARDS,
                    transitions._shard(),
                }
            ],
        )
    for _ in range(3):
        batch = claimed(db_engine, 4)
        finish(db_engine, *((c, SUCCESS) for c in batch))
    assert totals(db_engine) == {("customer_sync", "succeeded"): 5 + 5 + 12}
    with db_engine.connect() as db:
        rows = db.execute(select(ATTEMPT_TOTALS.c.shard, ATTEMPT_TOTALS.c.count)).all()
    assert sorted(count for _, count in rows) == [5, 17]


def test_every_known_type_reports_every_decision_from_zero(db_engine):
    with Session(db_engine) as session:
        found = stats.attempt_totals(session, types=("customer_sync",))
    assert found == {
        ("customer_sync", d): 0 for d in ("succeeded", "retry", "skip", "dead", "abandoned")
    }


# --- ages -----------------------------------------------------------------------------------


def test_the_oldest_ready_job_is_the_oldest_queued_and_due_one_of_its_queue(db_engine):
    minutes_ago = lambda m: utcnow() - timedelta(minutes=m)  # noqa: E731
    insert_jobs(db_engine, 1, at=minutes_ago(10))
    insert_jobs(db_engine, 1, at=minutes_ago(3), queue="low")
    # Not ready: a retry waits as retrying however old, a scheduled job until its run_at.
    insert_jobs(db_engine, 1, at=minutes_ago(60), status=Status.RETRYING)
    insert_jobs(db_engine, 1, at=minutes_ago(60), next_attempt_at=utcnow() + timedelta(hours=1))
    # Ready since its run_at, not since it was submitted.
    insert_jobs(db_engine, 1, at=minutes_ago(120), next_attempt_at=minutes_ago(20), queue="low")
    insert_jobs(db_engine, 1, at=minutes_ago(90), status=Status.SUCCEEDED)
    found = ages(db_engine, queues=("sync", "low", "idle")).queue_oldest_s
    assert aged(found["sync"], 600)
    assert aged(found["low"], 1200)
    assert found["idle"] == 0


def test_the_oldest_dead_letter_leaves_out_replayed_ones(db_engine):
    assert ages(db_engine).dead_letter_oldest_s == 0
    [old, newer] = insert_jobs(db_engine, 2, status=Status.DEAD)
    [replacement] = insert_jobs(db_engine, 1)
    set_columns(db_engine, [old], finished_at=utcnow() - timedelta(days=2), replayed_by=replacement)
    set_columns(db_engine, [newer], finished_at=utcnow() - timedelta(hours=1))
    assert aged(ages(db_engine).dead_letter_oldest_s, 3600)


def test_a_running_attempt_ages_from_its_own_start_not_its_jobs_first(db_engine):
    (first,) = claimed(db_engine, 1)
    finish(db_engine, (first, RETRY))
    with db_engine.begin() as db:
        (second,) = transitions.claim(db, [first.job_id], worker=WORKER, lease_s=30).values()
        db.execute(
            update(ATTEMPTS)
            .where(ATTEMPTS.c.job_id == first.job_id, ATTEMPTS.c.number == second.number)
            .values(started_at=utcnow() - timedelta(minutes=20))
        )
        db.execute(update(JOBS).values(started_at=utcnow() - timedelta(days=1)))
    claimed(db_engine, 1, type="invoice_sync")
    found = ages(db_engine, types=("customer_sync", "invoice_sync", "directory_sync"))
    assert aged(found.running_oldest_s["customer_sync"], 1200)
    assert aged(found.running_oldest_s["invoice_sync"], 0)
    assert found.running_oldest_s["directory_sync"] == 0


# --- /metrics ---------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_serve_the_attempts_and_ages_of_jobs_run_by_a_worker(stack, upstream):
    upstream.script("GET", "/crm/customers/c_2", {"status": 404})
    stack.start_worker()
    ok = stack.submit(type="customer_sync", entity_id="c_1")
    missing = stack.submit(type="customer_sync", entity_id="c_2")
    stack.wait_status(ok, "succeeded")
    stack.wait_status(missing, "failed")
    found = samples(stack.client.simulate_get("/metrics").text)
    attempts = lambda t, d: found[("courier_attempts_total", (("decision", d), ("type", t)))]  # noqa: E731
    assert attempts("customer_sync", "succeeded") == 1
    assert attempts("customer_sync", "skip") == 1
    assert attempts("invoice_sync", "dead") == 0
    assert found[("courier_queue_oldest_seconds", (("queue", "sync"),))] == 0
    assert found[("courier_dead_letter_oldest_seconds", ())] == 0
    assert found[("courier_running_oldest_seconds", (("type", "directory_sync"),))] == 0


def test_a_process_not_scraped_for_a_while_answers_fresh_counts_not_its_old_snapshot(
    settings, engine, sessions
):
    fresh = build(settings.replace(stats_max_age_s=0.5), engine, sessions)
    try:
        assert counted(fresh.client.simulate_get("/metrics").text) == 0
        (job,) = claimed(engine, 1)
        finish(engine, (job, SUCCESS))
        # Idle past twice the max age: the next scrape waits for new figures.
        deadline = time.monotonic() + 1.2
        wait_for(lambda: time.monotonic() >= deadline, timeout=5, what="the snapshot to go stale")
        assert counted(fresh.client.simulate_get("/metrics").text) == 1
    finally:
        fresh.close()


def counted(text: str) -> float:
    return samples(text)[
        ("courier_attempts_total", (("decision", "succeeded"), ("type", "customer_sync")))
    ]
