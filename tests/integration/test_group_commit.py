"""Group commit and the transitions it runs: every claim and finish waiting in a process shares
one transaction, each row keeps its fence, and every time is the database's.

The statements of `store.transitions` are the same on PostgreSQL and SQLite, so every test
that needs neither row locks nor PostgreSQL's planner runs on both engines.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.exc import StatementError

from middleware import group_commit
from middleware.group_commit import GroupCommit
from store import errors, transitions
from store.models import Attempt, Job
from store.sql import now
from store.states import AttemptStatus, Decision, Status
from store.transitions import Claim, Outcome
from store.types import utcnow
from tests.support.polling import wait_for
from tests.support.records import insert_jobs

pytestmark = pytest.mark.integration

JOBS, ATTEMPTS = Job.__table__, Attempt.__table__
WORKER = "test:1"
LEASE_S = 30
#: How long past its time limit an attempt may run before it counts as hung.
GRACE_S = 60
SUCCEEDED = Outcome(job_status=Status.SUCCEEDED, result={"ok": True})
#: SQLite's clock is read per statement, PostgreSQL's once per transaction: times written by
#: two statements of one transaction agree exactly on PostgreSQL, within this on SQLite.
SAME_TIME = timedelta(milliseconds=200)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def db_engine(request: pytest.FixtureRequest) -> Engine:
    """Both engines run the same statements: each test of them runs on both."""
    return request.getfixturevalue("engine" if request.param == "postgresql" else "sqlite_engine")


@pytest.fixture
def any_writer(db_engine: Engine) -> Iterator[GroupCommit]:
    """A group commit with a connection of its own, as the Attempts middleware makes it."""
    writer = GroupCommit.on(
        db_engine.url.render_as_string(hide_password=False), worker=WORKER, lease_s=LEASE_S
    )
    yield writer
    writer.stop()


# --- helpers ----------------------------------------------------------------------------


def add_jobs(engine: Engine, count: int, **columns: Any) -> list[uuid.UUID]:
    """Insert `count` queued, published jobs (columns override the defaults)."""
    return insert_jobs(engine, count, **columns)


def set_columns(engine: Engine, job_id: uuid.UUID, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))


def job(engine: Engine, job_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(JOBS).where(JOBS.c.id == job_id)).one()


def attempts(engine: Engine, job_id: uuid.UUID) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id).order_by(ATTEMPTS.c.number)
        ).all()


def db_now(engine: Engine) -> datetime:
    """The database's clock."""
    with engine.connect() as conn:
        return conn.scalar(select(now()))


def claim_now(engine: Engine, *job_ids: uuid.UUID) -> dict[uuid.UUID, Claim]:
    with engine.begin() as db:
        return transitions.claim(db, job_ids, worker=WORKER, lease_s=LEASE_S)


def close_to(a: datetime, b: datetime, engine: Engine) -> bool:
    """Equal on PostgreSQL (one clock reading per transaction), close on SQLite."""
    return a == b if engine.dialect.name == "postgresql" else abs(a - b) <= SAME_TIME


@contextmanager
def writer_held(
    writer: GroupCommit, *, until_waiting: int, sizes: list[int] | None = None
) -> Iterator[None]:
    """Keep the writer busy with one batch until `until_waiting` requests queue up behind it.

    Those requests then go into one batch together, which is what these tests are about.
    The sizes of the batches the writer serves from then on are appended to `sizes`.
    """
    blocker = uuid.uuid4()  # names no job: its claim is refused
    entered, release = threading.Event(), threading.Event()
    sizes = [] if sizes is None else sizes
    serve = writer._in_transaction

    def held(batch: list[Any]) -> list[Any]:
        sizes.append(len(batch))
        if any(request.job_id == blocker for request in batch):
            entered.set()
            assert release.wait(30), "never released"
        return serve(batch)

    # Left in place: the writer may still be serving the batches queued behind.
    writer._in_transaction = held  # type: ignore[method-assign]
    blocked = threading.Thread(target=writer.claim, args=(blocker,))
    blocked.start()
    try:
        assert entered.wait(10), "the writer never took the blocking request"
        yield
        wait_for(lambda: writer._batcher.waiting() >= until_waiting, what="requests to queue up")
    finally:
        release.set()
        blocked.join(10)


def in_threads(work: Callable[[Any], Any], items: Any, *, held: Any = None) -> dict[Any, Any]:
    """Run `work(item)` for every item, each in a thread of its own; their results by item."""
    results: dict[Any, Any] = {}
    failures: list[BaseException] = []

    def run(item: Any) -> None:
        try:
            results[item] = work(item)
        except BaseException as e:  # reported below, not as a thread warning
            failures.append(e)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    with held or nullcontext():
        for t in threads:
            t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    return results


# --- the group commit -------------------------------------------------------------------


def test_concurrent_claims_and_finishes_each_land_once(any_writer, db_engine):
    ids = add_jobs(db_engine, 40)
    claims = in_threads(any_writer.claim, ids)
    assert all(claims[i] is not None and claims[i].number == 1 for i in ids)
    assert claims[ids[3]].correlation_id == "corr-3" and claims[ids[3]].payload == {}
    assert (claims[ids[3]].tenant, claims[ids[3]].type, claims[ids[3]].timeout_s) == (
        "t",
        "customer_sync",
        60,
    )
    applied = in_threads(lambda i: any_writer.finish(claims[i], SUCCEEDED), ids)
    assert all(applied.values())
    for job_id in ids:
        row = job(db_engine, job_id)
        assert (row.status, row.attempts, row.result) == ("succeeded", 1, {"ok": True})
        assert row.finished_at is not None and row.lease_expires_at is None
        [attempt] = attempts(db_engine, job_id)
        assert (attempt.status, attempt.worker, attempt.decision) == ("succeeded", WORKER, None)
        assert attempt.duration_ms >= 0
        assert close_to(attempt.started_at, claims[job_id].started_at, db_engine)


def test_claims_and_finishes_waiting_together_share_one_transaction(any_writer, db_engine):
    finishing = add_jobs(db_engine, 5)
    claims = {i: any_writer.claim(i) for i in finishing}
    claiming = add_jobs(db_engine, 5)
    requests = [("finish", i) for i in finishing] + [("claim", i) for i in claiming]

    def write(request: tuple[str, uuid.UUID]) -> Any:
        kind, job_id = request
        if kind == "claim":
            return any_writer.claim(job_id)
        return any_writer.finish(claims[job_id], SUCCEEDED)

    sizes: list[int] = []
    held = writer_held(any_writer, until_waiting=len(requests), sizes=sizes)
    results = in_threads(write, requests, held=held)
    assert sizes == [1, len(requests)]
    assert all(results[("finish", i)] == "succeeded" for i in finishing)
    assert all(results[("claim", i)].number == 1 for i in claiming)
    assert {job(db_engine, i).status for i in finishing} == {"succeeded"}
    assert {job(db_engine, i).status for i in claiming} == {"running"}


def test_a_job_named_by_several_messages_at_once_is_claimed_once(any_writer, db_engine):
    [job_id] = add_jobs(db_engine, 1)
    sizes: list[int] = []
    held = writer_held(any_writer, until_waiting=8, sizes=sizes)
    claims = in_threads(lambda _: any_writer.claim(job_id), range(8), held=held)
    assert sizes == [1, 8]  # all eight in one batch
    assert sum(claim is not None for claim in claims.values()) == 1
    assert job(db_engine, job_id).attempts == 1 and len(attempts(db_engine, job_id)) == 1


def test_a_finish_for_an_attempt_that_lost_its_lease_changes_nothing(any_writer, db_engine):
    [job_id] = add_jobs(db_engine, 1)
    claim = any_writer.claim(job_id)
    set_columns(db_engine, job_id, attempts=2)  # reaped and claimed again meanwhile
    assert any_writer.finish(claim, SUCCEEDED) is None
    assert job(db_engine, job_id).status == "running"
    assert attempts(db_engine, job_id)[0].status == "running"


def test_a_retry_asked_for_after_a_cancel_request_ends_cancelled(any_writer, db_engine):
    [job_id] = add_jobs(db_engine, 1)
    claim = any_writer.claim(job_id)
    with db_engine.begin() as db:
        assert transitions.cancel(db, [job_id]) == {job_id: "running"}
    retry = Outcome(
        job_status=Status.RETRYING, error_type="UpstreamUnavailable", error="503", retry_in_ms=1000
    )
    assert any_writer.finish(claim, retry) == "cancelled"
    row = job(db_engine, job_id)
    assert (row.status, row.next_attempt_at, row.lease_expires_at) == ("cancelled", None, None)
    assert row.finished_at is not None and row.published_at is not None
    [attempt] = attempts(db_engine, job_id)
    assert (attempt.status, attempt.decision, attempt.error_type, attempt.retry_in_ms) == (
        "failed",
        "skip",
        "UpstreamUnavailable",
        None,
    )


def test_a_retry_is_scheduled_by_the_database_and_left_for_the_relay(any_writer, db_engine):
    [job_id] = add_jobs(db_engine, 1)
    claim = any_writer.claim(job_id)
    retry = Outcome(job_status=Status.RETRYING, error="503", retry_in_ms=60_000)
    before = db_now(db_engine)
    assert any_writer.finish(claim, retry) == "retrying"
    after = db_now(db_engine)
    row = job(db_engine, job_id)
    assert (row.status, row.published_at, row.finished_at) == ("retrying", None, None)
    [attempt] = attempts(db_engine, job_id)
    assert (attempt.status, attempt.decision, attempt.retry_in_ms) == ("failed", "retry", 60_000)
    # Due a minute after the attempt ended, both by the database's clock.
    due_in = timedelta(milliseconds=60_000)
    assert before + due_in <= row.next_attempt_at <= after + due_in
    assert close_to(row.next_attempt_at, attempt.finished_at + due_in, db_engine)


def test_an_early_message_is_refused_and_handed_back_to_the_relay(any_writer, db_engine):
    [job_id] = add_jobs(db_engine, 1, next_attempt_at=utcnow() + timedelta(hours=1))
    assert any_writer.claim(job_id) is None
    row = job(db_engine, job_id)
    assert (row.status, row.attempts, row.published_at) == ("queued", 0, None)
    assert attempts(db_engine, job_id) == []


def test_a_message_for_a_cancelled_or_finished_job_is_refused(any_writer, db_engine):
    asked, retrying, finished = add_jobs(db_engine, 3)
    # Waiting with a cancel request: no transition leaves a job so, but a row written
    # otherwise would be refused by every copy of its message and never end.
    set_columns(db_engine, asked, cancel_requested_at=utcnow())
    set_columns(
        db_engine, retrying, status=Status.RETRYING, attempts=1, cancel_requested_at=utcnow()
    )
    set_columns(db_engine, finished, status=Status.SUCCEEDED, finished_at=utcnow())
    for job_id in (asked, retrying, finished):
        assert any_writer.claim(job_id) is None
        # Not handed back to the relay: nothing is due for them.
        assert job(db_engine, job_id).published_at is not None
        assert attempts(db_engine, job_id) == []
    for job_id in (asked, retrying):
        row = job(db_engine, job_id)
        assert (row.status, row.finished_at is not None) == ("cancelled", True)
    assert job(db_engine, finished).status == "succeeded"


def check_a_bad_row_fails_alone(
    writer: GroupCommit, engine: Engine, bad: Outcome, error: type[Exception]
) -> None:
    """Six finishes in one batch, the first with outcome `bad`: it alone fails, with `error`."""
    ids = add_jobs(engine, 6)
    claims = {i: writer.claim(i) for i in ids}
    outcomes = {i: SUCCEEDED for i in ids}
    outcomes[ids[0]] = bad

    def finish(job_id: uuid.UUID) -> Any:
        try:
            return writer.finish(claims[job_id], outcomes[job_id])
        except Exception as e:
            return e

    sizes: list[int] = []
    results = in_threads(finish, ids, held=writer_held(writer, until_waiting=6, sizes=sizes))
    assert sizes == [1, 6, 1, 1, 1, 1, 1, 1]  # the batch failed, then each request alone
    assert isinstance(results[ids[0]], error), results[ids[0]]
    assert all(results[i] == "succeeded" for i in ids[1:])
    assert job(engine, ids[0]).status == "running"
    assert {job(engine, i).status for i in ids[1:]} == {"succeeded"}


def test_a_row_that_cannot_be_written_fails_alone(any_writer, db_engine):
    # A job type's result that is no JSON value: refused before the database sees it.
    bad = Outcome(job_status=Status.SUCCEEDED, result={"at": datetime(2026, 1, 1)})
    check_a_bad_row_fails_alone(any_writer, db_engine, bad, StatementError)


def test_a_row_the_database_refuses_fails_alone(engine):
    # PostgreSQL refuses text longer than its column (SQLite stores it).
    writer = GroupCommit.on(
        engine.url.render_as_string(hide_password=False), worker=WORKER, lease_s=LEASE_S
    )
    bad = Outcome(job_status=Status.FAILED, error_type="E" * 200, error="too long a type")
    try:
        check_a_bad_row_fails_alone(writer, engine, bad, errors.InvalidValue)
    finally:
        writer.stop()


def test_text_postgresql_cannot_hold_is_recorded_with_replacement_characters(any_writer, db_engine):
    # PostgreSQL text holds no NUL and no lone surrogate; an upstream's body or a job type's
    # result may (a JSON "\ud800" decodes to one).
    failed, succeeded = add_jobs(db_engine, 2)
    claims = {i: any_writer.claim(i) for i in (failed, succeeded)}
    error = Outcome(job_status=Status.FAILED, error_type="UpstreamRejected", error="400: a\x00b")
    result = Outcome(job_status=Status.SUCCEEDED, result={"k\x00": ["v\x00", "\ud800", 1]})
    assert any_writer.finish(claims[failed], error) == "failed"
    assert any_writer.finish(claims[succeeded], result) == "succeeded"
    assert job(db_engine, failed).error == attempts(db_engine, failed)[0].error == "400: a\ufffdb"
    assert job(db_engine, succeeded).result == {"k\ufffd": ["v\ufffd", "\ufffd", 1]}


# --- claim and finish, as statements over a batch ---------------------------------------


def test_a_claim_over_a_batch_names_each_job_once_and_leases_it_by_the_database_clock(db_engine):
    due, later, running = add_jobs(db_engine, 3)
    set_columns(db_engine, later, next_attempt_at=utcnow() + timedelta(hours=1))
    set_columns(db_engine, running, status=Status.RUNNING, attempts=1)
    before = db_now(db_engine)
    claims = claim_now(db_engine, due, due, later, running, due)
    assert set(claims) == {due}
    claim = claims[due]
    assert (claim.number, claim.max_attempts, claim.correlation_id) == (1, 3, "corr-0")
    assert before <= claim.started_at <= db_now(db_engine)
    row = job(db_engine, due)
    assert (row.status, row.attempts, row.next_attempt_at) == ("running", 1, None)
    assert close_to(row.started_at, claim.started_at, db_engine)
    assert close_to(row.lease_expires_at, claim.started_at + timedelta(seconds=LEASE_S), db_engine)
    [attempt] = attempts(db_engine, due)
    assert (attempt.number, attempt.status, attempt.worker) == (1, "running", WORKER)
    assert job(db_engine, later).published_at is None  # handed back to the relay
    assert job(db_engine, running).published_at is not None  # a duplicate: nothing to do


def test_a_second_attempt_keeps_the_jobs_first_start(db_engine):
    [job_id] = add_jobs(db_engine, 1)
    first = claim_now(db_engine, job_id)[job_id]
    retry = Outcome(job_status=Status.RETRYING, error="503", retry_in_ms=0)
    with db_engine.begin() as db:
        assert transitions.finish(db, [(first, retry)]) == {job_id: "retrying"}
    second = claim_now(db_engine, job_id)[job_id]
    assert second.number == 2 and second.started_at > first.started_at
    assert close_to(job(db_engine, job_id).started_at, first.started_at, db_engine)
    assert [a.number for a in attempts(db_engine, job_id)] == [1, 2]


def test_a_finish_over_a_batch_records_each_outcome_behind_its_own_fence(db_engine):
    ids = add_jobs(db_engine, 6)
    claims = claim_now(db_engine, *ids)
    ok, skipped, dead, retried, cancelled, fenced = ids
    set_columns(db_engine, fenced, attempts=2)  # reaped and claimed again meanwhile
    outcomes = {
        ok: Outcome(job_status=Status.SUCCEEDED, result={"n": 1}),
        skipped: Outcome(job_status=Status.FAILED, error_type="UpstreamNotFound", error="404"),
        dead: Outcome(job_status=Status.DEAD, error_type="UpstreamUnavailable", error="503"),
        retried: Outcome(job_status=Status.RETRYING, error_type="Timeout", retry_in_ms=2500),
        cancelled: Outcome(job_status=Status.CANCELLED, error_type="Cancelled", error="asked"),
        fenced: SUCCEEDED,
    }
    with db_engine.begin() as db:
        at = db.scalar(select(now()))
        written = transitions.finish(db, [(claims[i], outcomes[i]) for i in ids])
    assert written == {i: outcomes[i].job_status for i in ids if i != fenced}
    expected = {
        ok: ("succeeded", "succeeded", None),
        skipped: ("failed", "failed", Decision.SKIP),
        dead: ("dead", "failed", Decision.DEAD),
        retried: ("retrying", "failed", Decision.RETRY),
        cancelled: ("cancelled", "failed", Decision.SKIP),
    }
    for job_id, (job_status, attempt_status, decision) in expected.items():
        row, [attempt] = job(db_engine, job_id), attempts(db_engine, job_id)
        assert (row.status, attempt.status, attempt.decision) == (
            job_status,
            attempt_status,
            decision,
        )
        assert (row.error_type, attempt.error_type) == (outcomes[job_id].error_type,) * 2
        assert row.lease_expires_at is None
        assert close_to(attempt.finished_at, at, db_engine)
        if job_status == "retrying":
            assert row.finished_at is None and row.published_at is None
            assert close_to(row.next_attempt_at, at + timedelta(milliseconds=2500), db_engine)
            assert attempt.retry_in_ms == 2500
        else:
            assert close_to(row.finished_at, at, db_engine) and row.next_attempt_at is None
            assert row.published_at is not None and attempt.retry_in_ms is None
    assert job(db_engine, ok).result == {"n": 1}
    assert (job(db_engine, fenced).status, attempts(db_engine, fenced)[0].status) == (
        "running",
        "running",
    )


# --- leases and the reaper --------------------------------------------------------------


def test_leases_are_renewed_by_the_database_clock_for_running_attempts_only(db_engine):
    running, finished = add_jobs(db_engine, 2)
    claims = claim_now(db_engine, running, finished)
    with db_engine.begin() as db:
        transitions.finish(db, [(claims[finished], SUCCEEDED)])
    before = job(db_engine, running).lease_expires_at
    stale = (running, claims[running].number + 1)
    with db_engine.begin() as db:
        at = db.scalar(select(now()))
        renewed = transitions.renew_leases(
            db, [(running, 1), (finished, 1), stale, (uuid.uuid4(), 1)], lease_s=300
        )
    assert renewed == 1
    lease = job(db_engine, running).lease_expires_at
    assert lease > before and close_to(lease, at + timedelta(seconds=300), db_engine)
    assert job(db_engine, finished).lease_expires_at is None
    with db_engine.begin() as db:
        assert transitions.renew_leases(db, [], lease_s=300) == 0


def test_a_lease_renewal_skips_a_row_another_transaction_holds(engine):
    held, free = add_jobs(engine, 2)
    claims = claim_now(engine, held, free)
    leases = {i: job(engine, i).lease_expires_at for i in claims}
    with engine.connect() as finishing:  # as the group commit holds a row it is finishing
        finishing.execute(select(JOBS.c.id).where(JOBS.c.id == held).with_for_update())
        with engine.begin() as db:
            # Waiting for the row would fail here, not hang the test.
            db.execute(text("SET LOCAL lock_timeout = '3s'"))
            assert transitions.renew_leases(db, [(held, 1), (free, 1)], lease_s=300) == 1
        finishing.rollback()
    assert job(engine, held).lease_expires_at == leases[held]
    assert job(engine, free).lease_expires_at > leases[free]


def expire(engine: Engine, job_id: uuid.UUID) -> None:
    set_columns(engine, job_id, lease_expires_at=utcnow() - timedelta(seconds=1))


def test_the_reaper_ends_expired_attempts_as_abandoned(db_engine):
    retried, spent, asked, alive = add_jobs(db_engine, 4)
    set_columns(db_engine, spent, max_attempts=1)
    claim_now(db_engine, retried, spent, asked, alive)
    set_columns(db_engine, asked, cancel_requested_at=utcnow())
    for job_id in (retried, spent, asked):
        expire(db_engine, job_id)
    with db_engine.begin() as db:
        at = db.scalar(select(now()))
        reaped = transitions.reap_expired(db, stuck_grace_s=GRACE_S)
    assert {(r.job_id, r.number, r.job_status) for r in reaped} == {
        (retried, 1, "retrying"),
        (spent, 1, "dead"),
        (asked, 1, "cancelled"),
    }
    decisions = {retried: Decision.RETRY, spent: Decision.DEAD, asked: Decision.SKIP}
    for job_id, decision in decisions.items():
        row, [attempt] = job(db_engine, job_id), attempts(db_engine, job_id)
        assert (row.error_type, row.lease_expires_at) == ("WorkerLost", None)
        assert (attempt.status, attempt.decision, attempt.error_type, attempt.duration_ms) == (
            AttemptStatus.ABANDONED,
            decision,
            "WorkerLost",
            None,
        )
        assert close_to(attempt.finished_at, at, db_engine)
    row = job(db_engine, retried)
    # Due again at once, for the relay to publish; crashes count as attempts.
    assert (row.attempts, row.finished_at, row.published_at) == (1, None, None)
    assert close_to(row.next_attempt_at, at, db_engine)
    assert attempts(db_engine, retried)[0].retry_in_ms == 0
    for job_id in (spent, asked):
        row = job(db_engine, job_id)
        assert close_to(row.finished_at, at, db_engine) and row.next_attempt_at is None
        assert attempts(db_engine, job_id)[0].retry_in_ms is None
    assert (job(db_engine, alive).status, attempts(db_engine, alive)[0].status) == (
        "running",
        "running",
    )
    # The retried job's next attempt is claimable at once.
    assert claim_now(db_engine, retried)[retried].number == 2


def test_the_reaper_abandons_an_attempt_past_its_time_limit_and_grace_though_its_lease_holds(
    db_engine,
):
    hung, within_grace, fresh = add_jobs(db_engine, 3, timeout_s=10)
    claim_now(db_engine, hung, within_grace, fresh)
    started = {hung: 10 + GRACE_S + 5, within_grace: 10 + GRACE_S - 5, fresh: 0}
    for job_id, seconds_ago in started.items():  # leases renewed just now, all three
        with db_engine.begin() as db:
            db.execute(
                update(ATTEMPTS)
                .where(ATTEMPTS.c.job_id == job_id)
                .values(started_at=db.scalar(select(now())) - timedelta(seconds=seconds_ago))
            )
    with db_engine.begin() as db:
        reaped = transitions.reap_expired(db, stuck_grace_s=GRACE_S)
    assert reaped == [transitions.Reaped(hung, 1, "retrying", "TimeLimitExceeded")]
    row, [attempt] = job(db_engine, hung), attempts(db_engine, hung)
    assert (row.status, row.error_type, row.published_at) == ("retrying", "TimeLimitExceeded", None)
    assert (attempt.status, attempt.decision, attempt.error_type) == (
        AttemptStatus.ABANDONED,
        Decision.RETRY,
        "TimeLimitExceeded",
    )
    assert "time limit" in attempt.error
    assert {job(db_engine, i).status for i in (within_grace, fresh)} == {"running"}


# PostgreSQL ran `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` as a nested-loop semi
# join that reran the locking subquery for every row, so the limit capped nothing; the ids
# are now selected in a CTE, run once.
@pytest.mark.parametrize(
    "db_engine",
    ["postgresql", "sqlite"],
    indirect=True,
)
def test_the_reaper_takes_at_most_its_limit_and_leaves_the_rest_for_next_time(db_engine):
    ids = add_jobs(db_engine, 5)
    claim_now(db_engine, *ids)
    for job_id in ids:
        expire(db_engine, job_id)
    with db_engine.begin() as db:
        first = transitions.reap_expired(db, stuck_grace_s=GRACE_S, limit=3)
    with db_engine.begin() as db:
        rest = transitions.reap_expired(db, stuck_grace_s=GRACE_S, limit=3)
    assert len(first) == 3 and len(rest) == 2
    assert {r.job_id for r in first} | {r.job_id for r in rest} == set(ids)
    with db_engine.begin() as db:
        assert transitions.reap_expired(db, stuck_grace_s=GRACE_S) == []


def test_a_reaper_skips_an_expired_row_another_transaction_holds(engine):
    held, free = add_jobs(engine, 2)
    claim_now(engine, held, free)
    expire(engine, held)
    expire(engine, free)
    with engine.connect() as finishing:  # its worker is writing the outcome right now
        finishing.execute(select(JOBS.c.id).where(JOBS.c.id == held).with_for_update())
        with engine.begin() as db:
            db.execute(text("SET LOCAL lock_timeout = '3s'"))
            reaped = transitions.reap_expired(db, stuck_grace_s=GRACE_S)
            assert [r.job_id for r in reaped] == [free]
        finishing.rollback()
    assert job(engine, held).status == "running"


# --- publishing, cancel, bury, dead letters ---------------------------------------------


def test_a_published_mark_holds_only_for_the_state_its_message_was_built_for(db_engine):
    waiting, claimed, retrying, finished = add_jobs(db_engine, 4, published_at=None)
    claim_now(db_engine, claimed)
    set_columns(db_engine, retrying, status=Status.RETRYING, attempts=1)
    set_columns(db_engine, finished, status=Status.SUCCEEDED)
    with db_engine.begin() as db:
        at = db.scalar(select(now()))
        transitions.mark_published(
            db,
            [
                (waiting, 0),
                (claimed, 0),  # claimed since: its state moved on
                (retrying, 0),  # a message for the first attempt: the retry still needs one
                (finished, 0),
            ],
        )
    assert close_to(job(db_engine, waiting).published_at, at, db_engine)
    for job_id in (claimed, retrying, finished):
        assert job(db_engine, job_id).published_at is None
    with db_engine.begin() as db:
        transitions.mark_published(db, [(retrying, 1)])
    assert job(db_engine, retrying).published_at is not None


def test_a_published_mark_skips_a_row_another_transaction_holds(engine):
    held, free = add_jobs(engine, 2, published_at=None)
    with engine.connect() as claiming:  # the group commit is claiming it
        claiming.execute(select(JOBS.c.id).where(JOBS.c.id == held).with_for_update())
        with engine.begin() as db:
            db.execute(text("SET LOCAL lock_timeout = '3s'"))
            transitions.mark_published(db, [(held, 0), (free, 0)])
        claiming.rollback()
    assert job(engine, held).published_at is None
    assert job(engine, free).published_at is not None


def test_a_cancel_over_a_batch_stops_waiting_jobs_and_asks_running_ones(db_engine):
    queued, retrying, running, finished = add_jobs(db_engine, 4)
    set_columns(db_engine, retrying, status=Status.RETRYING, attempts=1, next_attempt_at=utcnow())
    claim_now(db_engine, running)
    set_columns(db_engine, finished, status=Status.SUCCEEDED, finished_at=utcnow())
    with db_engine.begin() as db:
        at = db.scalar(select(now()))
        answered = transitions.cancel(db, [queued, retrying, running, finished, uuid.uuid4()])
    assert answered == {queued: "cancelled", retrying: "cancelled", running: "running"}
    for job_id in (queued, retrying):
        row = job(db_engine, job_id)
        assert close_to(row.finished_at, at, db_engine)
        assert close_to(row.cancel_requested_at, at, db_engine)
    row = job(db_engine, running)
    assert row.finished_at is None and close_to(row.cancel_requested_at, at, db_engine)
    assert job(db_engine, finished).cancel_requested_at is None
    # Asking again keeps the first request's time.
    with db_engine.begin() as db:
        assert transitions.cancel(db, [running]) == {running: "running"}
    assert job(db_engine, running).cancel_requested_at == row.cancel_requested_at
    # A waiting job cancelled is never claimed.
    assert claim_now(db_engine, queued, retrying) == {}
    with db_engine.begin() as db:
        assert transitions.cancel(db, []) == {}


def test_bury_marks_waiting_jobs_dead_without_an_attempt(db_engine):
    queued, retrying, running, succeeded = add_jobs(db_engine, 4)
    set_columns(db_engine, retrying, status=Status.RETRYING, attempts=1)
    claim_now(db_engine, running)
    set_columns(db_engine, succeeded, status=Status.SUCCEEDED)
    with db_engine.begin() as db:
        at = db.scalar(select(now()))
        buried = transitions.bury(
            db, [queued, retrying, running, succeeded], error_type="ActorNotFound", error="no"
        )
    assert buried == {queued, retrying}
    for job_id in (queued, retrying):
        row = job(db_engine, job_id)
        assert (row.status, row.error_type, row.error) == ("dead", "ActorNotFound", "no")
        assert close_to(row.finished_at, at, db_engine)
        assert close_to(row.dead_lettered_at, at, db_engine)  # its message went there unrun
    assert attempts(db_engine, queued) == []
    assert [job(db_engine, i).status for i in (running, succeeded)] == ["running", "succeeded"]
    with db_engine.begin() as db:
        assert transitions.bury(db, [], error_type="x", error="y") == set()


def test_only_dead_jobs_are_marked_dead_lettered(db_engine):
    dead, queued = add_jobs(db_engine, 2)
    set_columns(db_engine, dead, status=Status.DEAD)
    with db_engine.begin() as db:
        transitions.mark_dead_lettered(db, [dead, queued])
    assert job(db_engine, dead).dead_lettered_at is not None
    assert job(db_engine, queued).dead_lettered_at is None


# --- plans ------------------------------------------------------------------------------
#
# The plans are those of the statements each transition actually runs (recorded as it runs
# them), so that they follow the statements however `store.transitions` builds them.


def statements_run_by(engine: Engine, work: Callable[[Any], Any]) -> list[tuple[str, Any]]:
    """The statements and parameters `work(db)` sends, in a transaction rolled back after."""
    seen: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append((statement, parameters))

    with engine.connect() as db:
        event.listen(db, "before_cursor_execute", record)
        transaction = db.begin()
        try:
            work(db)
        finally:
            transaction.rollback()
    return [(sql, params) for sql, params in seen if not sql.lstrip().upper().startswith("SELECT")]


def generic_plan(engine: Engine, statement: str, parameters: dict[str, Any]) -> str:
    """The plan the writer's connection caches for `statement` (it forces generic plans)."""
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", placeholder, statement)
    types = ", ".join(_parameter_type(parameters[name]) for name in names)
    with engine.connect() as conn:
        for name, value in group_commit.WRITER_SETTINGS.items():
            conn.exec_driver_sql(f"SET {name} = {value}")
        conn.exec_driver_sql(f"PREPARE statement ({types}) AS {numbered}")
        try:
            nulls = ", ".join("NULL" for _ in names)
            rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE statement ({nulls})")
            return "\n".join(row[0] for row in rows)
        finally:
            conn.exec_driver_sql("DEALLOCATE statement")


def _parameter_type(value: Any) -> str:
    """Numbers as numbers; anything else is typed by its context (the statements cast)."""
    if isinstance(value, float):
        return "float8"
    if isinstance(value, int) and not isinstance(value, bool):
        return "int8"
    return "unknown"


def _claim_some(db: Any, ids: list[uuid.UUID]) -> Any:
    # One id more than there are jobs: the early-message hand-back runs too.
    return transitions.claim(db, [*ids, uuid.uuid4()], worker=WORKER, lease_s=LEASE_S)


TRANSITIONS: dict[str, Callable[[Any, list[uuid.UUID], dict[uuid.UUID, Claim]], Any]] = {
    "claim": lambda db, waiting, claims: _claim_some(db, waiting),
    "finish": lambda db, waiting, claims: transitions.finish(
        db, [(c, SUCCEEDED) for c in claims.values()]
    ),
    "renew_leases": lambda db, waiting, claims: transitions.renew_leases(
        db, [(c.job_id, c.number) for c in claims.values()], lease_s=LEASE_S
    ),
    "mark_published": lambda db, waiting, claims: transitions.mark_published(
        db, [(i, 0) for i in waiting]
    ),
}
TABLES = ["a backlog without statistics", "nearly empty, analyzed"]


def plans_of(engine: Engine, transition: str, table: str) -> list[str]:
    """The generic plans of the statements of one transition, over a batch of three."""
    # Without statistics, a plan that tests the status through an index reads the whole
    # backlog; planned on a nearly empty table, the cached plan would be a sequential scan
    # kept as the table grows. Either reads every row for every batch.
    ids = add_jobs(engine, 3000 if table == "a backlog without statistics" else 6)
    claims = claim_now(engine, *ids[:3])
    if table == "nearly empty, analyzed":
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE jobs")
            conn.exec_driver_sql("ANALYZE attempts")
            conn.commit()
    run = statements_run_by(engine, lambda db: TRANSITIONS[transition](db, ids[3:6], claims))
    assert run, f"{transition} ran no statement"
    return [generic_plan(engine, sql, params) for sql, params in run]


@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
@pytest.mark.parametrize("table", TABLES)
def test_rows_are_found_through_the_primary_key_whatever_the_statistics_say(
    engine, transition, table
):
    for plan in plans_of(engine, transition, table):
        scans = set(re.findall(r"(?:Index|Index Only|Bitmap Index) Scan (?:using |on )(\w+)", plan))
        assert scans <= {"pk_jobs", "pk_attempts"}, plan
        assert "Seq Scan on jobs" not in plan and "Seq Scan on attempts" not in plan, plan


# Joined to a batch alone (jsonb_array_elements, which the planner takes for 100 rows), the
# generic plan read the whole of pk_jobs or pk_attempts with only a join filter on the id:
# with 3000 queued jobs a claim of one took 6.7 ms. `Batch.has` gives the primary key an
# index condition (`id = ANY(ARRAY(SELECT id FROM <batch>))`).
@pytest.mark.parametrize("transition", sorted(TRANSITIONS))
@pytest.mark.parametrize("table", TABLES)
def test_rows_are_looked_up_by_primary_key_not_scanned(engine, transition, table):
    # Through the primary key is not enough: a full scan of the index reads every row.
    for plan in plans_of(engine, transition, table):
        assert scans_without_a_key(plan) == [], plan


def scans_without_a_key(plan: str) -> list[str]:
    """The plan's scans of jobs or attempts that have no index condition: they read it all."""
    nodes: list[tuple[str, list[str]]] = []
    for line in plan.splitlines():
        stripped = line.strip()
        if stripped.startswith("->") or not nodes:
            nodes.append((stripped.removeprefix("->").strip(), []))
        else:
            nodes[-1][1].append(stripped)
    return [
        header
        for header, details in nodes
        if re.search(r"Scan (?:using \w+ )?on (?:jobs|attempts)\b", header)
        and not any(d.startswith(("Index Cond:", "Recheck Cond:")) for d in details)
    ]
