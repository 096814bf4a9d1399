"""A cancel that arrives while a running attempt fails: the job ends cancelled, whatever the
failure asked for, and however the cancel and the finish interleave in the database."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, insert, select

from store import transitions
from store.ids import new_id
from store.models import Attempt, Job
from store.states import Status
from store.transitions import Claim, Outcome
from store.types import utcnow
from tests.faults.harness import slow
from tests.support.polling import lock_waits, wait_for

pytestmark = pytest.mark.faults

JOBS, ATTEMPTS = Job.__table__, Attempt.__table__

#: What a failing attempt may ask for its job; a cancel request beats the retryable ones.
FAILURES = {
    "retry": Outcome(
        job_status=Status.RETRYING, error_type="UpstreamUnavailable", error="503", retry_in_ms=50
    ),
    "dead letter": Outcome(
        job_status=Status.DEAD, error_type="UpstreamUnavailable", error="503 on the last attempt"
    ),
    "skip": Outcome(job_status=Status.FAILED, error_type="UpstreamNotFound", error="404"),
}


def test_a_job_cancelled_while_its_attempt_fails_ends_cancelled_on_any_attempt(stack, upstream):
    # The CRM holds each call until the cancel has been recorded, then fails it with a 503.
    for entity in ("c_first_try", "c_last_try"):
        upstream.script("GET", f"/crm/customers/{entity}", slow(3, status=503), repeat_last=True)
    stack.start_worker(upstream_timeout_s=30)
    first = stack.submit(type="customer_sync", entity_id="c_first_try", max_attempts=3)
    last = stack.submit(type="customer_sync", entity_id="c_last_try", max_attempts=1)
    for job_id, entity in ((first, "c_first_try"), (last, "c_last_try")):
        wait_for(
            lambda entity=entity: upstream.calls(path=f"/crm/customers/{entity}"),
            timeout=20,
            what=f"the attempt of {entity} to be waiting on the CRM",
        )
        answer = stack.client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=stack.headers)
        # Recorded while the attempt still ran: the interleaving this test is about.
        assert (answer.status_code, answer.json["status"]) == (200, "running")

    for job_id in (first, last):
        job = stack.wait_status(job_id, "succeeded", "failed", "dead", "cancelled", timeout=20)
        assert (job.status, job.error_type, job.attempts) == ("cancelled", "UpstreamUnavailable", 1)
        [attempt] = stack.attempts(job_id)
        assert (attempt.status, attempt.decision, attempt.error_type) == (
            "failed",
            "skip",
            "UpstreamUnavailable",
        )
        assert job.cancel_requested_at < attempt.finished_at
    # Nothing ran again, and a cancelled job has no dead letter.
    assert len(upstream.calls(path="/crm/customers/c_first_try")) == 1
    assert stack.message_counts()["sync.XQ"] == 0
    assert stack.job(last).dead_lettered_at is None


# --- the same race, the two transactions driven by hand ------------------------------------


def add_running_job(engine: Engine, *, max_attempts: int = 3) -> Claim:
    """A queued, published job, claimed: its first attempt runs."""
    job_id = new_id()
    with engine.begin() as db:
        db.execute(
            insert(JOBS).values(
                id=job_id,
                tenant="t",
                type="customer_sync",
                queue="sync",
                entity_id=str(job_id),
                payload={},
                status=Status.QUEUED,
                priority=0,
                attempts=0,
                max_attempts=max_attempts,
                timeout_s=60,
                correlation_id="corr",
                created_at=utcnow(),
                published_at=utcnow(),
            )
        )
        return transitions.claim(db, [job_id], worker="test:1", lease_s=30)[job_id]


def first_holds_the_row_then_second(
    engine: Engine, first: Callable[[Connection], object], second: Callable[[Connection], object]
) -> None:
    """Run `first` in a transaction left open until `second`, in another one, waits for the
    job's row lock; then commit `first` and let `second` go on."""
    errors: list[BaseException] = []

    def run_second() -> None:
        try:
            with engine.begin() as db:
                second(db)
        except BaseException as e:  # reported below
            errors.append(e)

    with engine.connect() as db:
        with db.begin():
            first(db)
            thread = threading.Thread(target=run_second)
            thread.start()
            wait_for(lambda: lock_waits(engine) >= 1, timeout=10, what="the second to wait")
        thread.join(10)
    assert not thread.is_alive() and errors == []


def status(engine: Engine, job_id: uuid.UUID) -> tuple[str, object]:
    with engine.connect() as db:
        row = db.execute(
            select(JOBS.c.status, JOBS.c.cancel_requested_at).where(JOBS.c.id == job_id)
        ).one()
    return row.status, row.cancel_requested_at


@pytest.mark.parametrize("asked", sorted(FAILURES))
@pytest.mark.parametrize("first", ["cancel", "finish"])
def test_a_cancel_and_a_failing_finish_racing_for_the_row_end_cancelled(engine, first, asked):
    claim = add_running_job(engine, max_attempts=1 if asked == "dead letter" else 3)
    written: dict[uuid.UUID, str] = {}
    steps = {
        "cancel": lambda db: transitions.cancel(db, [claim.job_id]),
        "finish": lambda db: written.update(transitions.finish(db, [(claim, FAILURES[asked])])),
    }
    then = "finish" if first == "cancel" else "cancel"
    first_holds_the_row_then_second(engine, steps[first], steps[then])
    final, requested = status(engine, claim.job_id)
    if asked == "skip" or (first == "finish" and asked == "dead letter"):
        # A skip is the job's own verdict; a job already dead has nothing left to stop.
        expected = str(FAILURES[asked].job_status)
        assert (written, final) == ({claim.job_id: expected}, expected)
        assert (requested is None) == (first == "finish")
    else:  # the cancel request beat the failure, or stopped the waiting retry at once
        assert final == "cancelled"
        assert written == {claim.job_id: "cancelled" if first == "cancel" else "retrying"}


@pytest.mark.parametrize("kept", ["succeeded", "failed"])
def test_a_success_or_a_skip_written_after_a_cancel_request_is_kept(engine, kept):
    # The work was done, or can never be: the record says so.
    claim = add_running_job(engine)
    outcome = Outcome(job_status=Status.SUCCEEDED, result={"ok": True})
    if kept == "failed":
        outcome = FAILURES["skip"]
    with engine.begin() as db:
        transitions.cancel(db, [claim.job_id])
        assert transitions.finish(db, [(claim, outcome)]) == {claim.job_id: kept}
