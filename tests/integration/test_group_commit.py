"""Group commit: many threads' claims and finishes share transactions, each row keeps its fence."""

from __future__ import annotations

import dataclasses
import re
import threading
from contextlib import contextmanager, nullcontext
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError
from store.group_commit import GroupCommit, writer_for
from store.ledger import Outcome

from store import group_commit, ledger
from store.db import make_sessionmaker
from store.ids import new_id
from store.models import Attempt, Job
from store.types import utcnow
from tests.support.polling import lock_waits, wait_for

pytestmark = pytest.mark.integration

SUCCEEDED = Outcome(job_status="succeeded", result={"ok": True})


@pytest.fixture(params=["group commit on postgresql", "one transaction each on sqlite"])
def db_engine(request):
    """Both ledger writers keep the same promises: each test of them runs on both."""
    return request.getfixturevalue("engine" if "postgresql" in request.param else "sqlite_engine")


@pytest.fixture
def db_sessions(db_engine):
    return make_sessionmaker(db_engine)


@pytest.fixture
def any_writer(db_sessions):
    writer = writer_for(db_sessions, worker="test:1", lease_s=30)
    yield writer
    writer.stop()


@pytest.fixture
def writer(engine):
    writer = GroupCommit(engine, worker="test:1", lease_s=30)
    yield writer
    writer.stop()


def add_jobs(engine, count, **columns):
    now = utcnow()
    rows = [
        {
            "id": (job_id := new_id()),
            "tenant": "t",
            "type": "customer_sync",
            "queue": "sync",
            "entity_id": str(job_id),
            "payload": {},
            "status": "queued",
            "priority": 0,
            "attempts": 0,
            "max_attempts": 3,
            "timeout_s": 60,
            "correlation_id": f"corr-{i}",
            "created_at": now,
            "published_at": now,
            **columns,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Job.__table__), rows)
    return [row["id"] for row in rows]


def job(sessions, job_id):
    with sessions() as session:
        return session.get(Job, job_id)


def attempts(sessions, job_id):
    with sessions() as session:
        return session.scalars(select(Attempt).where(Attempt.job_id == job_id)).all()


@contextmanager
def writer_held(writer, engine, waiting):
    """Keep the writer busy on a locked row until `waiting` requests queue up behind it.

    Those requests then go into one batch together, which is what these tests are about.
    """
    [locked] = add_jobs(engine, 1)
    with engine.connect() as conn:
        conn.execute(select(Job.id).where(Job.id == locked).with_for_update())
        blocked = threading.Thread(target=writer.claim, args=(locked,))
        blocked.start()
        wait_for(lambda: lock_waits(engine), what="the writer to wait for the locked row")
        yield
        wait_for(lambda: writer._batcher.waiting() >= waiting, what="requests to queue up")
        conn.rollback()
    blocked.join()


def in_threads(work, items, *, held=None):
    results, errors = {}, []

    def run(item):
        try:
            results[item] = work(item)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    with held or nullcontext():
        for t in threads:
            t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def test_concurrent_claims_and_finishes_each_land_once(any_writer, db_engine, db_sessions):
    ids = add_jobs(db_engine, 40)
    claims = in_threads(any_writer.claim, ids)
    assert all(claims[i] is not None and claims[i].number == 1 for i in ids)
    assert claims[ids[3]].correlation_id == "corr-3" and claims[ids[3]].payload == {}
    applied = in_threads(lambda i: any_writer.finish(claims[i], SUCCEEDED), ids)
    assert all(applied.values())
    for job_id in ids:
        row = job(db_sessions, job_id)
        assert (row.status, row.attempts, row.result) == ("succeeded", 1, {"ok": True})
        assert row.finished_at is not None and row.lease_expires_at is None
        [attempt] = attempts(db_sessions, job_id)
        assert (attempt.status, attempt.worker, attempt.duration_ms >= 0) == (
            "succeeded",
            "test:1",
            True,
        )


def test_a_job_named_by_several_messages_at_once_is_claimed_once(writer, engine, sessions):
    [job_id] = add_jobs(engine, 1)
    claims = in_threads(
        lambda _: writer.claim(job_id), range(8), held=writer_held(writer, engine, 8)
    )
    assert sum(claim is not None for claim in claims.values()) == 1
    assert job(sessions, job_id).attempts == 1 and len(attempts(sessions, job_id)) == 1


def test_a_finish_for_an_attempt_that_lost_its_lease_changes_nothing(
    any_writer, db_engine, db_sessions
):
    [job_id] = add_jobs(db_engine, 1)
    claim = any_writer.claim(job_id)
    with db_engine.begin() as conn:  # reaped and claimed again meanwhile
        conn.execute(update(Job.__table__).where(Job.id == job_id).values(attempts=2))
    assert any_writer.finish(claim, SUCCEEDED) is False
    assert job(db_sessions, job_id).status == "running"
    assert attempts(db_sessions, job_id)[0].status == "running"


def test_a_retry_asked_for_after_a_cancel_request_ends_cancelled(
    any_writer, db_engine, db_sessions
):
    [job_id] = add_jobs(db_engine, 1)
    claim = any_writer.claim(job_id)
    with db_engine.begin() as conn:
        conn.execute(
            update(Job.__table__).where(Job.id == job_id).values(cancel_requested_at=utcnow())
        )
    retry = Outcome(
        job_status="retrying",
        decision="retry",
        error_type="UpstreamUnavailable",
        error="503",
        retry_in_ms=1000,
    )
    assert any_writer.finish(claim, retry) is True
    row = job(db_sessions, job_id)
    assert (row.status, row.next_attempt_at) == ("cancelled", None)
    assert row.finished_at is not None
    [attempt] = attempts(db_sessions, job_id)
    assert (attempt.status, attempt.decision, attempt.error_type) == (
        "failed",
        "skip",
        "UpstreamUnavailable",
    )


def test_a_retry_is_scheduled_and_left_for_the_relay(any_writer, db_engine, db_sessions):
    [job_id] = add_jobs(db_engine, 1)
    claim = any_writer.claim(job_id)
    retry = Outcome(job_status="retrying", decision="retry", error="503", retry_in_ms=60_000)
    before = utcnow()
    assert any_writer.finish(claim, retry) is True
    row = job(db_sessions, job_id)
    assert (row.status, row.published_at, row.finished_at) == ("retrying", None, None)
    assert before + timedelta(seconds=59) < row.next_attempt_at < utcnow() + timedelta(seconds=61)
    assert attempts(db_sessions, job_id)[0].retry_in_ms == 60_000


def test_an_early_message_is_refused_and_handed_back_to_the_relay(
    any_writer, db_engine, db_sessions
):
    [job_id] = add_jobs(db_engine, 1, next_attempt_at=utcnow() + timedelta(hours=1))
    assert any_writer.claim(job_id) is None
    row = job(db_sessions, job_id)
    assert (row.status, row.attempts, row.published_at) == ("queued", 0, None)


def test_a_row_the_database_refuses_fails_alone(writer, engine, sessions):
    ids = add_jobs(engine, 6)
    claims = {i: writer.claim(i) for i in ids}
    bad = Outcome(job_status="succeeded", result={"text": "NUL \x00 inside"})
    outcomes = {i: (bad if i == ids[0] else SUCCEEDED) for i in ids}

    def finish(job_id):
        try:
            return writer.finish(claims[job_id], outcomes[job_id])
        except DBAPIError as e:
            return e

    results = in_threads(finish, ids, held=writer_held(writer, engine, len(ids)))
    assert isinstance(results[ids[0]], DBAPIError)
    assert all(results[i] is True for i in ids[1:])
    assert job(sessions, ids[0]).status == "running"
    assert {job(sessions, i).status for i in ids[1:]} == {"succeeded"}


PARAMETER_TYPES = {
    "ids": "uuid[]",
    "now": "timestamptz",
    "lease_expires_at": "timestamptz",
    "worker": "text",
    "numbers": "int[]",
    "statuses": "text[]",
    "decisions": "text[]",
    "error_types": "text[]",
    "errors": "text[]",
    "retry_in_ms": "bigint[]",
    "results": "jsonb[]",
    "durations": "bigint[]",
}


def generic_plan(conn, sql):
    """The plan the writer's connection caches for `sql` (it forces generic plans)."""
    names = []

    def placeholder(match):
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", placeholder, sql)
    types = ", ".join(PARAMETER_TYPES[name] for name in names)
    for name, value in group_commit.WRITER_SETTINGS.items():
        conn.exec_driver_sql(f"SET {name} = {value}")
    conn.exec_driver_sql(f"PREPARE statement ({types}) AS {numbered}")
    nulls = ", ".join("NULL" for _ in names)
    return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE statement ({nulls})"))


@pytest.mark.parametrize("statement", ["_CLAIM", "_FINISH"])
@pytest.mark.parametrize("table", ["a backlog without statistics", "nearly empty, analyzed"])
def test_rows_are_found_by_primary_key_whatever_the_statistics_say(engine, statement, table):
    # Without statistics, a plan that tests the status through an index reads the whole
    # backlog; planned on a nearly empty table, the cached plan would be a sequential scan
    # kept as the table grows. Either reads every row for every batch.
    if table == "a backlog without statistics":
        add_jobs(engine, 3000)
    else:
        add_jobs(engine, 3)
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE jobs")
            conn.exec_driver_sql("ANALYZE attempts")
            conn.commit()
    with engine.connect() as conn:
        plan = generic_plan(conn, getattr(group_commit, statement))
    scans = set(re.findall(r"(?:Index|Index Only|Bitmap Index) Scan (?:using |on )(\w+)", plan))
    assert scans <= {"pk_jobs", "pk_attempts"}, plan
    assert "Seq Scan on jobs" not in plan, plan


def test_leases_are_renewed_for_running_attempts_only(any_writer, db_engine, db_sessions):
    running, finished = add_jobs(db_engine, 2)
    claims = {job_id: any_writer.claim(job_id) for job_id in (running, finished)}
    assert any_writer.finish(claims[finished], SUCCEEDED)
    stale = dataclasses.replace(claims[running], number=claims[running].number + 1)
    before = job(db_sessions, running).lease_expires_at
    with db_sessions.begin() as session:
        renewed = ledger.renew_leases(session, [*claims.values(), stale], lease_s=300)
    assert renewed == 1
    assert job(db_sessions, running).lease_expires_at > before + timedelta(seconds=200)
    assert job(db_sessions, finished).lease_expires_at is None


def test_a_lease_renewal_skips_a_row_another_transaction_holds(writer, engine, sessions):
    held, free = add_jobs(engine, 2)
    claims = [writer.claim(held), writer.claim(free)]
    leases = {c.job_id: job(sessions, c.job_id).lease_expires_at for c in claims}
    with engine.connect() as finishing:  # as the group commit holds a row it is finishing
        finishing.execute(select(Job.id).where(Job.id == held).with_for_update())
        with sessions.begin() as session:
            # Waiting for the row would fail here, not hang the test.
            session.execute(text("SET LOCAL lock_timeout = '3s'"))
            assert ledger.renew_leases(session, claims, lease_s=300) == 1
        finishing.rollback()
    assert job(sessions, held).lease_expires_at == leases[held]
    assert job(sessions, free).lease_expires_at > leases[free]
