"""Changed jobs are announced to the API's waiters: by `announce`, and by the transitions a
worker makes for every job, within their own statement."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text

from store import job_changes, transitions
from store.admission import Park
from store.states import Status
from store.transitions import Outcome
from store.types import utcnow
from tests.support.polling import wait_for
from tests.support.records import insert_jobs

pytestmark = pytest.mark.integration

#: More jobs than one notification's payload holds, so that they need two.
COUNT = job_changes.IDS_PER_NOTICE + 84


@pytest.fixture
def listener(engine: Engine) -> Iterator[psycopg.Connection]:
    url = engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"LISTEN {job_changes.CHANNEL}")
        yield connection


def heard_at_commit(
    engine: Engine,
    listener: psycopg.Connection,
    change: Callable[[Connection], Any],
    *,
    notices: int,
) -> tuple[Any, list[str]]:
    """What `change` returned, and the payloads of the `notices` notifications heard once
    its transaction committed (and of any more within half a second); none may come before."""
    with engine.begin() as db:
        changed = change(db)
        assert not list(listener.notifies(timeout=0.2)), "heard before the commit"
    heard = list(listener.notifies(timeout=5, stop_after=notices)) if notices else []
    heard += listener.notifies(timeout=0.5)
    return changed, [n.payload for n in heard]


def ids_in(payloads: list[str]) -> list[str]:
    assert all(len(p.encode()) < 8000 for p in payloads), "past PostgreSQL's payload limit"
    return sorted(i for p in payloads for i in p.split(","))


def test_a_thousand_changed_ids_go_out_in_five_notifications_under_the_payload_limit(
    engine, listener
):
    ids = [uuid.uuid4() for _ in range(1000)]
    with engine.begin() as db:
        job_changes.announce(db, ids + ids[:10])  # a job named twice is announced once
    notices = list(listener.notifies(timeout=5, stop_after=5))
    assert len(notices) == 5
    assert all(len(n.payload.encode()) < 8000 for n in notices)
    heard = [i for n in notices for i in n.payload.split(",")]
    assert sorted(heard) == sorted(map(str, ids))


def test_claims_and_finishes_announce_every_job_under_the_payload_limit(engine, listener):
    ids = insert_jobs(engine, COUNT)
    claims, payloads = heard_at_commit(
        engine,
        listener,
        lambda db: transitions.claim(db, ids, worker="test:1", lease_s=30),
        notices=2,
    )
    assert len(claims) == COUNT
    assert len(payloads) == 2 and ids_in(payloads) == sorted(map(str, ids))

    done = Outcome(job_status=Status.SUCCEEDED)
    finished, payloads = heard_at_commit(
        engine,
        listener,
        lambda db: transitions.finish(db, [(c, done) for c in claims.values()]),
        notices=2,
    )
    assert set(finished.values()) == {"succeeded"}
    assert ids_in(payloads) == sorted(map(str, ids))


def test_a_reaped_job_is_announced(engine, listener):
    [job_id] = insert_jobs(engine, 1)
    _, payloads = heard_at_commit(
        engine,
        listener,
        lambda db: transitions.claim(db, [job_id], worker="gone:1", lease_s=0.05),
        notices=1,
    )
    assert payloads == [str(job_id)]
    wait_for(lambda: lease_expired(engine, job_id), what="the lease to expire")

    reaped, payloads = heard_at_commit(
        engine, listener, lambda db: transitions.reap_expired(db, stuck_grace_s=60), notices=1
    )
    assert [(r.job_id, r.job_status) for r in reaped] == [(job_id, "retrying")]
    assert payloads == [str(job_id)]


def lease_expired(engine: Engine, job_id: uuid.UUID) -> bool:
    with engine.connect() as db:
        query = text("SELECT lease_expires_at < now() FROM jobs WHERE id = :id")
        return bool(db.execute(query, {"id": job_id}).scalar_one())


def test_a_refused_job_the_claim_cancels_is_announced(engine, listener):
    now = utcnow()
    # The first has a cancel request; the second is not due yet, so its early message is
    # handed back to the relay, which changes nothing a waiter sees.
    asked, early = insert_jobs(
        engine,
        2,
        cancel_requested_at=lambda i: now if i == 0 else None,
        next_attempt_at=lambda i: None if i == 0 else now + timedelta(hours=1),
    )
    claimed, payloads = heard_at_commit(
        engine,
        listener,
        lambda db: transitions.claim(db, [asked, early], worker="test:1", lease_s=30),
        notices=1,
    )
    assert claimed == {} and payloads == [str(asked)]


def test_a_job_the_claim_parks_is_announced(engine, listener):
    held, admitted = insert_jobs(engine, 2)

    def hold_first(db, jobs):
        return {job.job_id: Park("entity") for job in jobs if job.job_id == held}

    claimed, payloads = heard_at_commit(
        engine,
        listener,
        lambda db: transitions.claim(
            db, [held, admitted], worker="test:1", lease_s=30, rules=[hold_first]
        ),
        notices=1,
    )
    # The claim of the other is announced by its own statement, the park by its own.
    assert set(claimed) == {admitted}
    assert ids_in(payloads) == sorted([str(held), str(admitted)])


def test_a_statement_that_changes_no_job_announces_nothing(engine, listener):
    unknown = uuid.uuid4()
    claimed, payloads = heard_at_commit(
        engine,
        listener,
        lambda db: transitions.claim(db, [unknown], worker="test:1", lease_s=30),
        notices=0,
    )
    assert claimed == {} and payloads == []
