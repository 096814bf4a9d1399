"""The reconciler's SQL and one round of it, on both engines: what it counts as waiting in the
broker, and that it republishes exactly the surplus, oldest first, once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, select

from delivery import reconcile, relay
from delivery.outbox import Outbox
from store import reconciliation, transitions, turns
from store.models import Job
from store.states import Status
from store.types import utcnow
from tests.support.records import insert_jobs

pytestmark = pytest.mark.integration

JOBS = Job.__table__
SETTLE_S = 30


@pytest.fixture
def stub() -> StubBroker:
    broker = StubBroker(middleware=[])
    broker.declare_queue("sync")
    return broker


def add_jobs(engine: Engine, count: int, *, age_s: float, **columns: Any) -> list[uuid.UUID]:
    """Queued jobs of queue `sync` published `age_s` ago (published_at ascending with the list)."""
    at = utcnow()
    spread = {"published_at": lambda i: at - timedelta(seconds=age_s - i * 0.001)}
    return insert_jobs(engine, count, at=at - timedelta(seconds=age_s + 1), **{**spread, **columns})


def published_at(engine: Engine) -> dict[uuid.UUID, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(JOBS.c.id, JOBS.c.published_at)).all())


def queued_ids(broker: StubBroker) -> list[uuid.UUID]:
    queue = broker.queues["sync"]
    return [uuid.UUID(Message.decode(queue.get_nowait()).args[0]) for _ in range(queue.qsize())]


def one_round(engine: Engine, held: int | None) -> dict[str, int]:
    """A round of queue `sync` with the broker holding `held` messages (None: unknown), a
    surplus counting as soon as it is seen (`tests/unit/test_surpluses.py` has the wait)."""
    return reconcile.reconcile(
        engine,
        ["sync"],
        lambda queues: dict.fromkeys(queues, held),
        settle_s=SETTLE_S,
        surpluses=reconcile.Surpluses(0),
    )


def test_counts_only_published_unclaimed_jobs_older_than_the_settle_time(db_engine):
    add_jobs(db_engine, 3, age_s=60)
    add_jobs(db_engine, 2, age_s=5)  # too recent to be in the broker's statistics
    add_jobs(db_engine, 1, age_s=60, published_at=None)  # the relay's, not the reconciler's
    add_jobs(db_engine, 1, age_s=60, queue="low")
    add_jobs(db_engine, 1, age_s=60, status=Status.SUCCEEDED)
    running = add_jobs(db_engine, 2, age_s=60)
    with db_engine.begin() as db:
        transitions.claim(db, running, worker="test:1", lease_s=30)
    with db_engine.connect() as db:
        assert reconciliation.count_settled(db, "sync", settle_s=SETTLE_S) == 3
        # Just claimed: their deliveries may postdate the broker's count.
        assert reconciliation.count_running(db, "sync", settle_s=SETTLE_S) == 0
        assert reconciliation.count_running(db, "sync", settle_s=-60) == 2


def test_a_round_republishes_the_surplus_oldest_first_and_marks_it_published_again(db_engine, stub):
    ids = add_jobs(db_engine, 10, age_s=60)
    before = published_at(db_engine)
    out = Outbox(stub, db_engine)

    republished = one_round(db_engine, 7)

    assert republished == {"sync": 3}
    assert stub.queues["sync"].qsize() == 0  # the round only hands them back to the relay
    assert relay.publish_due(db_engine, out, limit=100) == 3
    assert sorted(queued_ids(stub)) == sorted(ids[:3])
    after = published_at(db_engine)
    assert all(after[i] > before[i] + timedelta(seconds=50) for i in ids[:3])
    assert all(after[i] == before[i] for i in ids[3:])
    # The next round reads the same stale count, but the republished jobs are recent now.
    again = one_round(db_engine, 7)
    assert again == {"sync": 0}


def test_a_round_republishes_nothing_when_the_broker_holds_every_waiting_message(db_engine, stub):
    add_jobs(db_engine, 10, age_s=60)
    running = add_jobs(db_engine, 2, age_s=60)
    with db_engine.begin() as db:
        transitions.claim(db, running, worker="test:1", lease_s=30)
    # 10 waiting + 2 held by running attempts; the recently claimed ones do not count.
    assert one_round(db_engine, 12) == {"sync": 0}
    assert one_round(db_engine, 10) == {"sync": 0}
    assert relay.publish_due(db_engine, Outbox(stub, db_engine), limit=100) == 0  # none given back


def test_a_round_with_an_unknown_broker_count_republishes_nothing(db_engine, stub):
    add_jobs(db_engine, 5, age_s=60)
    assert one_round(db_engine, None) == {}
    assert relay.publish_due(db_engine, Outbox(stub, db_engine), limit=100) == 0  # none given back


def test_a_queue_locked_by_another_process_is_left_to_it(engine, stub):
    add_jobs(engine, 5, age_s=60)
    with turns.turn(engine, "reconcile:sync") as other:
        assert other is not None
        assert one_round(engine, 0) == {"sync": 0}
    assert one_round(engine, 0) == {"sync": 5}
