"""Fairness between tenants: each has a share of a queue in the broker, the relay tops every
tenant up to it in turn, and one tenant's backlog does not hold up another's new jobs."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, func, select, update

from courier.settings import Settings
from delivery import relay
from delivery.outbox import Outbox
from store import fairness, states
from store.models import Job
from store.types import utcnow
from tests.support.polling import wait_for
from tests.support.records import insert_jobs
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

J = Job.__table__.c
SHARE = 50


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(fair_share=SHARE)


@pytest.fixture
def stub() -> StubBroker:
    broker = StubBroker(middleware=[])
    broker.declare_queue("sync")
    return broker


def held_back(engine: Engine, count: int, tenant: str, **columns: object) -> list[uuid.UUID]:
    """`count` queued jobs of `tenant` in the outbox, due at once and past the API's grace."""
    past = utcnow() - timedelta(seconds=10)
    return insert_jobs(engine, count, at=past, tenant=tenant, published_at=None, **columns)


def queued_ids(broker: StubBroker) -> list[uuid.UUID]:
    queue = broker.queues["sync"]
    return [uuid.UUID(Message.decode(queue.get_nowait()).args[0]) for _ in range(queue.qsize())]


def test_a_relay_round_tops_each_tenant_up_to_its_share_and_serves_the_small_one_too(
    db_engine, stub
):
    held_back(db_engine, 300, "big")
    small = held_back(db_engine, 3, "small")
    out = Outbox(stub, db_engine)

    assert relay.publish_due(db_engine, out, limit=500, share=SHARE) == SHARE + 3
    sent = queued_ids(stub)
    assert set(small) <= set(sent)
    assert relay.publish_due(db_engine, out, limit=500, share=SHARE) == 0  # big is at its share
    with db_engine.connect() as db:
        assert fairness.in_broker(db, "sync", "big", cap=1000) == SHARE
        assert fairness.in_broker(db, "sync", "small", cap=1000) == 3


def test_the_relay_sends_a_tenant_more_as_its_messages_are_claimed(db_engine, stub):
    held_back(db_engine, 300, "big")
    out = Outbox(stub, db_engine)
    assert relay.publish_due(db_engine, out, limit=500, share=SHARE) == SHARE
    claimed = queued_ids(stub)[:20]
    with db_engine.begin() as db:
        db.execute(update(Job).where(J.id.in_(claimed)).values(status=states.Status.RUNNING))

    assert relay.publish_due(db_engine, out, limit=500, share=SHARE) == 20


def test_a_round_splits_its_batch_between_tenants_that_all_have_room(db_engine, stub):
    for tenant in ("a", "b", "c", "d"):
        held_back(db_engine, 100, tenant)
    out = Outbox(stub, db_engine)

    assert relay.publish_due(db_engine, out, limit=40, share=SHARE) == 40
    with db_engine.connect() as db:
        counts = [fairness.in_broker(db, "sync", t, cap=1000) for t in ("a", "b", "c", "d")]
    assert counts == [10, 10, 10, 10]


def test_jobs_due_later_are_neither_published_nor_in_the_way_of_due_ones(db_engine, stub):
    later = utcnow() + timedelta(hours=1)
    held_back(db_engine, 30, "t", next_attempt_at=later)
    due = held_back(db_engine, 5, "t", next_attempt_at=utcnow() - timedelta(seconds=1))
    out = Outbox(stub, db_engine)

    assert relay.publish_due(db_engine, out, limit=500, share=SHARE) == 5
    assert sorted(queued_ids(stub)) == sorted(due)


def test_tenants_whose_jobs_are_due_only_later_take_nothing_from_a_round(db_engine, stub):
    later = utcnow() + timedelta(hours=1)
    for t in range(20):
        held_back(db_engine, 1, f"later-{t}", next_attempt_at=later)
    held_back(db_engine, 300, "big")
    out = Outbox(stub, db_engine)

    assert relay.publish_due(db_engine, out, limit=40, share=SHARE) == 40


def test_the_api_publishes_a_tenant_up_to_its_share_and_another_tenant_at_once(stack: Stack):
    big, small = stack.token("big"), stack.token("small")
    body = {"jobs": [{"type": "customer_sync", "entity_id": f"c{i}"} for i in range(SHARE * 2)]}
    status, _ = stack.post("/v1/jobs/batch", body, big)
    assert status == 207
    status, _ = stack.post("/v1/jobs", {"type": "customer_sync", "entity_id": "s"}, small)
    assert status == 202

    def in_broker() -> dict[str, int]:
        with stack.engine.connect() as db:
            return {t: fairness.in_broker(db, "sync", t, cap=1000) for t in ("big", "small")}

    wait_for(lambda: in_broker() == {"big": SHARE, "small": 1}, what=lambda: str(in_broker()))
    assert stack.ready("sync") == SHARE + 1


def test_the_api_sends_a_tenants_highest_priorities_first_when_only_some_fit(stack: Stack):
    headers = stack.token("big")
    jobs = [
        {"type": "customer_sync", "entity_id": f"c{i}", "priority": 9 if i >= SHARE else 0}
        for i in range(SHARE + 10)
    ]
    assert stack.post("/v1/jobs/batch", {"jobs": jobs}, headers)[0] == 207

    def published_priorities() -> list[int]:
        with stack.engine.connect() as db:
            query = select(J.priority).where(J.published_at.is_not(None))
            return sorted(db.execute(query).scalars())

    wait_for(lambda: len(published_priorities()) == SHARE, what="the share published")
    assert published_priorities().count(9) == 10


def test_a_new_tenants_jobs_start_long_before_another_tenants_backlog_drains(stack: Stack):
    backlog = 3000
    held_back(stack.engine, backlog, "big")
    stack.start_worker(threads=8)

    def finished(tenant: str) -> int:
        with stack.engine.connect() as db:
            query = select(func.count()).where(
                J.tenant == tenant, J.status == states.Status.SUCCEEDED
            )
            return int(db.execute(query).scalar_one())

    wait_for(lambda: finished("big") >= 50, timeout=60, what="the backlog under way")
    headers = stack.token("small")
    ids = []
    for i in range(5):
        status, text = stack.post(
            "/v1/jobs", {"type": "customer_sync", "entity_id": f"s{i}"}, headers
        )
        assert status == 202, text
        ids.append(text)

    wait_for(lambda: finished("small") == 5, timeout=30, what="the small tenant's jobs")
    big_done = finished("big")
    assert big_done < backlog / 2, f"{big_done} of the backlog ran first"
    with stack.sessions() as session:
        waits = [
            (job.started_at - job.created_at).total_seconds()
            for job in session.scalars(select(Job).where(J.tenant == "small"))
        ]
    assert max(waits) < 5, waits
