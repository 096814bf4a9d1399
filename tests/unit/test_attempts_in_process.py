"""The Attempts middleware and the group commit in one process: Dramatiq's StubBroker, a
`dramatiq.Worker` and a migrated SQLite database, wired by `worker_stack` as `courier dev`
wires them. No PostgreSQL, no RabbitMQ: this tier runs in a few seconds.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, insert, select

from actors.registry import Upstreams, job_type
from courier.broker import WorkerStack, start_in_process_worker, worker_stack
from courier.settings import Settings
from delivery.outbox import Outbox, message_for
from middleware import errors
from middleware.current_job import RunningJob
from store import transitions
from store.ids import new_id
from store.models import Attempt, Job
from store.outbox import JobMessage
from store.states import TERMINAL
from store.types import utcnow
from tests.support.polling import wait_for

JOBS, ATTEMPTS = Job.__table__, Attempt.__table__
MAX_ATTEMPTS = 3
MIN_BACKOFF_MS = 150
#: SQLite reads its clock per statement: the job's due time and its attempt's end are
#: written by two statements of one transaction, this far apart at most (a busy machine).
STATEMENTS_APART = timedelta(milliseconds=100)
#: Generous for a run on a busy machine; a green run takes a fraction of it.
DEADLINE_S = 15.0

# --- job types of this module -----------------------------------------------------------

#: Runs of each job's code, by job id.
runs: Counter[str] = Counter()
#: Set by a job's code once it runs; set by a test to let it go on.
started: defaultdict[str, threading.Event] = defaultdict(threading.Event)
released: defaultdict[str, threading.Event] = defaultdict(threading.Event)


@job_type("in_process_ok")
def in_process_ok(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    runs[job.job_id] += 1
    return {"echo": job.payload.get("n")}


@job_type("in_process_unavailable")
def in_process_unavailable(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    runs[job.job_id] += 1
    raise errors.UpstreamUnavailable("503 from the test upstream")


@job_type("in_process_rejected")
def in_process_rejected(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    runs[job.job_id] += 1
    raise errors.UpstreamRejected("422 from the test upstream")


@job_type("in_process_until_cancelled")
def in_process_until_cancelled(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    """Works in small units until a checkpoint says stop (or the test gives up)."""
    runs[job.job_id] += 1
    started[job.job_id].set()
    for _ in range(int(DEADLINE_S / 0.01)):
        job.checkpoint()
        if released[job.job_id].wait(0.01):
            break
    return {"stopped": False}


@job_type("in_process_fails_once_released")
def in_process_fails_once_released(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    """Waits for the test, then fails with an error that asks for a retry."""
    runs[job.job_id] += 1
    started[job.job_id].set()
    released[job.job_id].wait(DEADLINE_S)
    raise errors.UpstreamUnavailable("503 after the cancel request")


#: The attempts of each job that got past their checkpoint to their "upstream write".
writes: defaultdict[str, list[int]] = defaultdict(list)


@job_type("in_process_writes_after_a_checkpoint")
def in_process_writes_after_a_checkpoint(job: RunningJob, upstreams: Upstreams) -> None:
    """The first attempt waits for the test (a slow upstream read); each then checkpoints
    and writes."""
    if job.claim.number == 1:
        started[job.job_id].set()
        released[job.job_id].wait(DEADLINE_S)
    job.checkpoint()
    writes[job.job_id].append(job.claim.number)


# --- the in-process Courier -------------------------------------------------------------


@dataclass
class InProcess:
    """A worker stack on the StubBroker and SQLite, and helpers to drive and inspect it."""

    engine: Engine
    stack: WorkerStack
    worker: dramatiq.Worker

    @property
    def broker(self) -> StubBroker:
        assert isinstance(self.stack.broker, StubBroker)
        return self.stack.broker

    def add(self, job_type: str, **columns: Any) -> uuid.UUID:
        """Insert a queued job of `job_type` (not published yet)."""
        job_id = new_id()
        row = {
            "id": job_id,
            "tenant": "t",
            "type": job_type,
            "queue": "sync",
            "entity_id": str(job_id),
            "payload": {},
            "status": "queued",
            "priority": 0,
            "attempts": 0,
            "max_attempts": MAX_ATTEMPTS,
            "timeout_s": 60,
            "correlation_id": f"corr-{job_id}",
            "created_at": utcnow(),
            **columns,
        }
        with self.engine.begin() as db:
            db.execute(insert(JOBS), [row])
        return job_id

    def message(self, job_id: uuid.UUID) -> dramatiq.Message[Any]:
        """The message the outbox would send for the job as it is now."""
        return message_for(JobMessage.of(self.job(job_id)))

    def publish(self, *job_ids: uuid.UUID) -> None:
        """Send the jobs' messages and mark them published, as the API does."""
        Outbox(self.broker, self.engine).publish([JobMessage.of(self.job(i)) for i in job_ids])

    def submit(self, job_type: str, **columns: Any) -> uuid.UUID:
        job_id = self.add(job_type, **columns)
        self.publish(job_id)
        return job_id

    def job(self, job_id: uuid.UUID) -> Any:
        with self.engine.connect() as db:
            return db.execute(select(JOBS).where(JOBS.c.id == job_id)).one()

    def attempts(self, job_id: uuid.UUID) -> list[Any]:
        with self.engine.connect() as db:
            return db.execute(
                select(ATTEMPTS).where(ATTEMPTS.c.job_id == job_id).order_by(ATTEMPTS.c.number)
            ).all()

    def wait_status(self, job_id: uuid.UUID, *statuses: str) -> Any:
        wait_for(
            lambda: self.job(job_id).status in statuses,
            timeout=DEADLINE_S,
            what=f"job {job_id} to be {'/'.join(statuses)} (is {self.job(job_id).status})",
        )
        return self.job(job_id)

    def wait_finished(self, job_id: uuid.UUID) -> Any:
        """Wait until the job is terminal, then until the broker and workers are idle."""
        row = self.wait_status(job_id, *TERMINAL)
        self.settle()
        return row

    def settle(self) -> None:
        """Every message taken off the queue is processed, acked or skipped."""
        self.broker.join("sync", timeout=int(DEADLINE_S * 1000), fail_fast=False)
        self.worker.join()

    def dead_letters(self) -> list[str]:
        """Job ids of the copies in the dead-letter queue of `sync`."""
        return [str(m.args[0]) for m in self.broker.dead_letters_by_queue["sync"]]


@pytest.fixture
def courier(sqlite_engine: Engine) -> Iterator[InProcess]:
    settings = Settings(
        database_url=sqlite_engine.url.render_as_string(hide_password=False),
        broker_url="memory://",
        rabbitmq_api_url=None,
        max_attempts=MAX_ATTEMPTS,
        min_backoff_ms=MIN_BACKOFF_MS,
        max_backoff_ms=2 * MIN_BACKOFF_MS,
        lease_s=30,
        reaper_interval_s=0.5,
        relay_interval_s=0.05,
        progress_interval_s=0.05,
        log_format="console",
    )
    stack = worker_stack(settings, sqlite_engine, broker=StubBroker(middleware=[]))
    worker = start_in_process_worker(stack, threads=4)
    try:
        yield InProcess(sqlite_engine, stack, worker)
    finally:
        for event in released.values():  # no job's code is left waiting
            event.set()
        worker.stop(timeout=10_000)
        stack.upstreams.close()
        stack.broker.close()
        runs.clear()
        started.clear()
        released.clear()
        writes.clear()


# --- the tests --------------------------------------------------------------------------


def test_a_job_that_succeeds_is_recorded_with_its_result(courier):
    job_id = courier.submit("in_process_ok", payload={"n": 7})
    row = courier.wait_finished(job_id)
    assert (row.status, row.attempts, row.result) == ("succeeded", 1, {"echo": 7})
    assert row.finished_at is not None and row.lease_expires_at is None
    [attempt] = courier.attempts(job_id)
    assert (attempt.status, attempt.decision, attempt.error_type) == ("succeeded", None, None)
    assert attempt.duration_ms >= 0 and attempt.worker
    assert runs[str(job_id)] == 1
    assert courier.dead_letters() == []


def test_many_jobs_share_the_group_commit_and_each_runs_once(courier):
    ids = [courier.add("in_process_ok", payload={"n": n}) for n in range(30)]
    courier.publish(*ids)
    for job_id in ids:
        courier.wait_status(job_id, *TERMINAL)
    courier.settle()
    for n, job_id in enumerate(ids):
        row = courier.job(job_id)
        assert (row.status, row.attempts, row.result) == ("succeeded", 1, {"echo": n})
        assert [a.status for a in courier.attempts(job_id)] == ["succeeded"]
    assert runs == Counter({str(i): 1 for i in ids})


def test_a_retryable_error_is_retried_with_backoff_until_the_job_is_dead(courier):
    job_id = courier.submit("in_process_unavailable")
    row = courier.wait_finished(job_id)
    assert (row.status, row.attempts, row.error_type) == (
        "dead",
        MAX_ATTEMPTS,
        "UpstreamUnavailable",
    )
    attempts = courier.attempts(job_id)
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.status for a in attempts] == ["failed"] * 3
    assert [a.decision for a in attempts] == ["retry", "retry", "dead"]
    # Each retry waited its backoff, by the database's clock.
    for before, after in itertools.pairwise(attempts):
        assert MIN_BACKOFF_MS <= before.retry_in_ms <= 2 * MIN_BACKOFF_MS
        backoff = timedelta(milliseconds=before.retry_in_ms)
        assert after.started_at >= before.finished_at + backoff - STATEMENTS_APART
    assert attempts[-1].retry_in_ms is None
    assert runs[str(job_id)] == MAX_ATTEMPTS
    # The worker that buried it put its copy in the dead-letter queue and said so in SQL.
    wait_for(lambda: courier.job(job_id).dead_lettered_at is not None, timeout=DEADLINE_S)
    assert courier.dead_letters() == [str(job_id)]


def test_a_permanent_error_skips_the_job_after_one_attempt(courier):
    job_id = courier.submit("in_process_rejected")
    row = courier.wait_finished(job_id)
    assert (row.status, row.attempts, row.error_type) == ("failed", 1, "UpstreamRejected")
    assert row.error == "422 from the test upstream"
    [attempt] = courier.attempts(job_id)
    assert (attempt.status, attempt.decision, attempt.retry_in_ms) == ("failed", "skip", None)
    assert courier.dead_letters() == [] and row.dead_lettered_at is None


def test_a_job_cancelled_while_running_stops_at_its_next_checkpoint(courier):
    job_id = courier.add("in_process_until_cancelled")
    began = started[str(job_id)]  # made here, before the job's thread looks it up
    courier.publish(job_id)
    assert began.wait(DEADLINE_S)
    with courier.engine.begin() as db:
        assert transitions.cancel(db, [job_id]) == {job_id: "running"}
    row = courier.wait_finished(job_id)
    assert (row.status, row.error_type) == ("cancelled", "Cancelled")
    assert row.finished_at is not None and row.cancel_requested_at is not None
    [attempt] = courier.attempts(job_id)
    assert (attempt.status, attempt.decision) == ("failed", "skip")
    assert courier.dead_letters() == []


def test_an_attempt_reaped_while_it_ran_stops_at_its_next_checkpoint_before_writing(courier):
    job_id = courier.add("in_process_writes_after_a_checkpoint")
    began, go_on = started[str(job_id)], released[str(job_id)]  # before the job's thread
    courier.publish(job_id)
    assert began.wait(DEADLINE_S)
    # Its worker went quiet past the lease (cut off, frozen): the reaper retries the job.
    with courier.engine.begin() as db:
        db.execute(
            JOBS.update()
            .where(JOBS.c.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(hours=1))
        )
        [reaped] = transitions.reap_expired(db, stuck_grace_s=60)
    assert (reaped.number, reaped.job_status) == (1, "retrying")
    wait_for(lambda: writes[str(job_id)] == [2], timeout=DEADLINE_S, what="attempt 2 to write")
    go_on.set()  # attempt 1 comes back from its upstream read
    row = courier.wait_finished(job_id)
    assert writes[str(job_id)] == [2]
    assert (row.status, row.attempts) == ("succeeded", 2)
    assert [(a.number, a.status, a.error_type) for a in courier.attempts(job_id)] == [
        (1, "abandoned", "WorkerLost"),
        (2, "succeeded", None),
    ]


def test_a_retry_asked_for_after_a_cancel_request_ends_cancelled(courier):
    job_id = courier.add("in_process_fails_once_released")
    began, go_on = started[str(job_id)], released[str(job_id)]  # before the job's thread
    courier.publish(job_id)
    assert began.wait(DEADLINE_S)
    with courier.engine.begin() as db:
        transitions.cancel(db, [job_id])
    go_on.set()  # now it fails with an error that asks for a retry
    row = courier.wait_finished(job_id)
    assert (row.status, row.attempts, row.next_attempt_at) == ("cancelled", 1, None)
    [attempt] = courier.attempts(job_id)
    assert (attempt.status, attempt.decision, attempt.error_type, attempt.retry_in_ms) == (
        "failed",
        "skip",
        "UpstreamUnavailable",
        None,
    )
    assert runs[str(job_id)] == 1


def test_duplicate_messages_for_one_job_run_it_once(courier):
    job_id = courier.add("in_process_ok")
    message = courier.message(job_id)
    for _ in range(3):  # the same message three times, as a redelivery or a second relay
        courier.broker.enqueue(message.copy(message_id=str(uuid.uuid4())))
    row = courier.wait_finished(job_id)
    assert (row.status, row.attempts) == ("succeeded", 1)
    assert len(courier.attempts(job_id)) == 1 and runs[str(job_id)] == 1
    # A late copy after the job finished changes nothing either.
    courier.broker.enqueue(message.copy(message_id=str(uuid.uuid4())))
    courier.settle()
    assert courier.job(job_id) == row and runs[str(job_id)] == 1


def test_a_message_for_a_job_not_due_yet_is_handed_back_to_the_relay(courier):
    job_id = courier.add("in_process_ok", published_at=utcnow(), next_attempt_at=_in_an_hour())
    courier.broker.enqueue(courier.message(job_id))
    courier.settle()
    row = courier.job(job_id)
    assert (row.status, row.attempts, row.published_at) == ("queued", 0, None)
    assert runs[str(job_id)] == 0


def test_messages_that_name_no_job_are_dropped(courier):
    ok = courier.submit("in_process_ok")
    strangers = [
        dramatiq.Message(
            queue_name="sync", actor_name="in_process_ok", args=args, kwargs={}, options={}
        )
        for args in ((str(uuid.uuid4()),), ("not a job id",), ())
    ]
    for message in strangers:
        courier.broker.enqueue(message)
    courier.wait_finished(ok)
    courier.settle()
    assert runs == Counter({str(ok): 1})
    assert courier.dead_letters() == []


def test_a_message_for_a_type_no_worker_knows_buries_its_job(courier):
    job_id = courier.add("in_process_unknown_type", published_at=utcnow())
    courier.broker.enqueue(courier.message(job_id))
    row = courier.wait_finished(job_id)
    assert (row.status, row.attempts, row.error_type) == ("dead", 0, "ActorNotFound")
    assert row.dead_lettered_at is not None  # Dramatiq's nack put the message there
    assert courier.attempts(job_id) == []
    assert courier.dead_letters() == [str(job_id)]


def _in_an_hour() -> datetime:
    return utcnow() + timedelta(hours=1)
