"""Bulk replay in the store: set-based chunks that keep every promise of a single replay."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from delivery import replays
from delivery.outbox import Outbox
from store import actions, bulk_replay, errors
from store.db import make_engine, make_sessionmaker
from store.models import AuditEntry, Job
from tests.support import services
from tests.support.polling import lock_waits, wait_for
from tests.support.records import add_dead, add_job

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request) -> sessionmaker[Session]:
    """Sessions on PostgreSQL and on SQLite (embedded mode), one test run each."""
    engine = request.getfixturevalue(
        "pg_engine" if request.param == "postgresql" else "sqlite_engine"
    )
    return make_sessionmaker(engine)


def bulk(sessions, selection=None, **kwargs):
    return replays.replay_dead(
        sessions,
        None,
        selection or bulk_replay.Selection(limit=10_000, every=True),
        actor="operator:ops",
        reason=kwargs.pop("reason", "bulk test"),
        **kwargs,
    )


def job(sessions, job_id) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def test_bulk_replay_links_both_ways_audits_each_and_leaves_history(db, monkeypatch):
    monkeypatch.setattr(bulk_replay, "CHUNK", 7)  # several chunks
    old_ids = add_dead(db, 20)
    progress = []
    result = bulk(db, on_progress=progress.append)
    assert result.skipped == []
    assert sorted(o for o, _ in result.replayed) == sorted(old_ids)
    assert sum(progress) == 20 and len(progress) == 3
    with db() as session:
        audit = {
            e.job_id: e
            for e in session.scalars(select(AuditEntry).where(AuditEntry.action == "replay"))
        }
    assert len(audit) == 20
    for old_id, new_id_ in result.replayed:
        old, new = job(db, old_id), job(db, new_id_)
        assert old.status == "dead" and old.attempts == 1 and old.replayed_by == new_id_
        assert old.error_type == "UpstreamUnavailable" and old.finished_at is not None
        assert new.replay_of == old_id and new.status == "queued" and new.attempts == 0
        assert (new.tenant, new.type, new.queue, new.entity_id) == (
            old.tenant,
            old.type,
            old.queue,
            old.entity_id,
        )
        assert (new.payload, new.priority, new.correlation_id) == (
            old.payload,
            old.priority,
            old.correlation_id,
        )
        # Left for the relay: no broker was given, so no message went out yet.
        assert new.published_at is None and new.next_attempt_at is None
        entry = audit[old_id]
        assert (entry.actor, entry.tenant, entry.reason) == ("operator:ops", "acme", "bulk test")
        assert entry.details == {
            "new_job_id": str(new_id_),
            "payload_overridden": False,
            "via": "bulk",
        }
    assert bulk(db).replayed == []  # nothing is dead and unreplayed any more


def test_a_job_refused_by_an_active_one_is_skipped_with_the_active_job_named(db):
    [blocked] = add_dead(db, 1)
    active = add_job(db, entity_id="c_0", status="queued")
    twins = [add_job(db, entity_id="c_twin") for _ in range(2)]  # newest is replayed first
    fine = add_job(db, entity_id="c_fine")
    result = bulk(db)
    assert {o for o, _ in result.replayed} == {fine, twins[1]}
    new_twin = dict(result.replayed)[twins[1]]
    assert sorted(result.skipped) == sorted(
        [
            (blocked, f"an active job for this entity already exists: {active}"),
            (twins[0], f"an active job for this entity already exists: {new_twin}"),
        ]
    )
    for skipped_id in (blocked, twins[0]):
        assert job(db, skipped_id).replayed_by is None
    with db() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 2
        assert session.scalar(select(func.count()).where(Job.replay_of.is_not(None))) == 2


def test_bulk_replay_keeps_to_its_tenant_filters_ids_and_limit(db):
    acme = add_dead(db, 3)
    globex = add_dead(db, 2, tenant="globex")
    result = bulk(db, bulk_replay.Selection(tenant="globex", limit=100))
    assert sorted(o for o, _ in result.replayed) == sorted(globex)
    by_id = bulk(db, bulk_replay.Selection(job_ids=[acme[0], globex[0]], limit=100))
    assert [o for o, _ in by_id.replayed] == [acme[0]]
    limited = bulk(db, bulk_replay.Selection(limit=1, every=True))
    assert [o for o, _ in limited.replayed] == [acme[2]]  # newest first


def test_single_replay_shares_the_path_and_still_refuses_a_second_replay(db):
    [old_id] = add_dead(db, 1)
    with db.begin() as session:
        old = session.get(Job, old_id)
        new = actions.replay(
            session,
            old,
            actor="operator:ops",
            new_trace=replays.new_trace,
            payload={"x": 1},
            via="ui",
        )
        assert old.replayed_by == new.id  # refreshed for the caller
    assert job(db, new.id).payload == {"x": 1}
    with db() as session:
        [entry] = session.scalars(select(AuditEntry)).all()
    assert entry.details == {"new_job_id": str(new.id), "payload_overridden": True, "via": "ui"}
    with db.begin() as session, pytest.raises(errors.InvalidTransition, match="already replayed"):
        actions.replay(
            session, session.get(Job, old_id), actor="operator:ops", new_trace=replays.new_trace
        )


def test_concurrent_bulk_replays_never_replay_a_job_twice(pg_engine, monkeypatch):
    sessions = make_sessionmaker(pg_engine)
    monkeypatch.setattr(bulk_replay, "CHUNK", 25)
    old_ids = add_dead(sessions, 300)
    start = threading.Barrier(3)
    results: list[replays.Result] = []

    def run() -> None:
        start.wait()
        results.append(bulk(sessions))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 3
    replayed = [pair for r in results for pair in r.replayed]
    assert sorted(o for o, _ in replayed) == sorted(old_ids)  # each exactly once
    assert all(r.skipped == [] for r in results)
    with sessions() as session:
        links = dict(
            session.execute(select(Job.replay_of, Job.id).where(Job.replay_of.is_not(None))).all()
        )
        assert len(links) == 300 and links == dict(replayed)
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 300


def test_a_bulk_replay_passes_over_rows_another_holds_and_they_stay_replayable(pg_engine):
    sessions = make_sessionmaker(pg_engine)
    old_ids = add_dead(sessions, 10)
    with sessions.begin() as holder:
        held = set(
            holder.scalars(select(Job.id).where(Job.id.in_(old_ids[:3])).with_for_update()).all()
        )
        first = bulk(sessions)  # does not wait for the holder
        assert {o for o, _ in first.replayed} == set(old_ids) - held
    second = bulk(sessions)
    assert {o for o, _ in second.replayed} == held


def test_a_replay_naming_jobs_waits_for_a_row_another_holds_and_replays_it(pg_engine):
    # As a worker's write to the job just after it died does: the job named must be
    # replayed once the holder commits, not passed over with a 202 that replayed nothing.
    sessions = make_sessionmaker(pg_engine)
    old_ids = add_dead(sessions, 3)
    results: list[replays.Result] = []
    selection = bulk_replay.Selection(job_ids=old_ids)
    with sessions.begin() as holder:
        holder.scalars(select(Job.id).where(Job.id == old_ids[0]).with_for_update()).all()
        replaying = threading.Thread(target=lambda: results.append(bulk(sessions, selection)))
        replaying.start()
        wait_for(lambda: lock_waits(pg_engine) == 1, timeout=10, what="the replay to wait")
    replaying.join(timeout=30)
    assert {o for o, _ in results[0].replayed} == set(old_ids)
    assert results[0].skipped == []


def test_two_replays_naming_the_same_jobs_replay_each_once(pg_engine):
    sessions = make_sessionmaker(pg_engine)
    old_ids = add_dead(sessions, 50)
    selection = bulk_replay.Selection(job_ids=old_ids)
    start = threading.Barrier(2)
    results: list[replays.Result] = []

    def run() -> None:
        start.wait()
        results.append(bulk(sessions, selection))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    replayed = [o for r in results for o, _ in r.replayed]
    assert sorted(replayed) == sorted(old_ids)  # each exactly once, by one or the other


def test_two_single_replays_racing_for_one_job_create_one_new_job(pg_engine):
    sessions = make_sessionmaker(pg_engine)
    old_id = add_job(sessions, entity_id=None)  # no entity: only the link fence stops the loser
    loser: list[BaseException | Job] = []

    def replay_later() -> None:
        try:
            with sessions.begin() as session:
                loser.append(
                    actions.replay(
                        session, session.get(Job, old_id), actor="b", new_trace=replays.new_trace
                    )
                )
        except BaseException as e:  # whatever it is, the assertions below show it
            loser.append(e)

    with sessions.begin() as session:
        winner = actions.replay(
            session, session.get(Job, old_id), actor="a", new_trace=replays.new_trace
        )
        thread = threading.Thread(target=replay_later)
        thread.start()
        wait_for(
            lambda: lock_waits(pg_engine) or not thread.is_alive(),
            what="the second replay to wait on the first",
        )
    thread.join(timeout=30)
    [outcome] = loser
    assert isinstance(outcome, errors.InvalidTransition)
    assert str(outcome) == "the job was already replayed"
    with sessions() as session:
        assert session.scalars(select(Job.id).where(Job.replay_of == old_id)).all() == [winner.id]
        assert session.get(Job, old_id).replayed_by == winner.id
        [entry] = session.scalars(select(AuditEntry)).all()
        assert entry.actor == "a"


def test_replays_the_broker_did_not_take_are_left_for_the_relay(pg_engine, caplog):
    sessions = make_sessionmaker(pg_engine)
    old_ids = add_dead(sessions, 5)
    unreachable = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/%2F", middleware=[])
    result = replays.replay_dead(
        sessions,
        Outbox(unreachable, pg_engine),
        bulk_replay.Selection(limit=100, every=True),
        actor="operator:ops",
        reason=None,
    )
    assert sorted(o for o, _ in result.replayed) == sorted(old_ids)
    for _, new_id_ in result.replayed:
        new = job(sessions, new_id_)
        # What the relay publishes: queued, due now, no confirmed message.
        assert (new.status, new.next_attempt_at, new.published_at) == ("queued", None, None)
    assert "left to the relay" in caplog.text


def test_a_bulk_replay_that_names_no_jobs_is_refused_in_the_store(db):
    add_dead(db, 2)
    with pytest.raises(errors.UnnamedReplay):
        bulk(db, bulk_replay.Selection(limit=100))
    with db() as session:
        assert session.scalar(select(func.count()).where(Job.replay_of.is_not(None))) == 0


def replay_api(stack, body):
    return stack.client.simulate_post(
        "/v1/dead-letters/replay", json=body, headers=stack.token("ops", "operator")
    )


def replayed_count(stack) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).where(Job.replay_of.is_not(None)))


@pytest.mark.parametrize(
    "body",
    [None, {}, {"limit": 5}, {"reason": "CRM is back"}, {"all": False}, {"dry_run": True}],
)
def test_a_bulk_replay_request_that_names_no_jobs_gets_422(stack, body):
    add_dead(stack.sessions, 2)
    add_dead(stack.sessions, 1, tenant="globex")
    response = replay_api(stack, body)
    assert response.status_code == 422, response.text
    assert '"all": true' in response.json["description"]
    assert replayed_count(stack) == 0


@pytest.mark.parametrize("value", ["true", 1, "yes"])
def test_all_must_be_a_json_true(stack, value):
    add_dead(stack.sessions, 1)
    assert replay_api(stack, {"all": value}).status_code == 422
    assert replayed_count(stack) == 0


def test_all_true_replays_every_tenants_dead_jobs(stack):
    old = add_dead(stack.sessions, 2) + add_dead(stack.sessions, 1, tenant="globex")
    response = replay_api(stack, {"all": True, "reason": "CRM is back"})
    assert response.status_code == 202, response.text
    assert sorted(r["job_id"] for r in response.json["replayed"]) == sorted(map(str, old))


def test_a_dry_run_answers_the_count_and_the_first_ids_and_changes_nothing(stack):
    old = add_dead(stack.sessions, 23) + add_dead(stack.sessions, 2, tenant="globex")
    newest_first = [str(i) for i in reversed(old)]
    everything = replay_api(stack, {"all": True, "dry_run": True})
    assert everything.status_code == 200, everything.text
    assert everything.json == {"dry_run": True, "count": 25, "job_ids": newest_first[:20]}
    limited = replay_api(stack, {"all": True, "limit": 3, "dry_run": True}).json
    assert (limited["count"], limited["job_ids"]) == (3, newest_first[:3])
    filtered = replay_api(stack, {"tenant": "globex", "dry_run": True}).json
    assert (filtered["count"], filtered["job_ids"]) == (2, newest_first[:2])
    by_id = replay_api(stack, {"job_ids": [str(old[0])], "dry_run": True}).json
    assert (by_id["count"], by_id["job_ids"]) == (1, [str(old[0])])
    assert replayed_count(stack) == 0
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
        assert session.scalar(select(func.count()).where(Job.replayed_by.is_not(None))) == 0
    # Nothing was published: the API's broker never even declared the queue.
    assert services.SHARED_RABBITMQ.queue(stack.vhost, "sync") is None


def test_the_openapi_document_shows_the_interlock_and_the_dry_run(stack):
    document = stack.client.simulate_get("/openapi.json").json
    request = document["components"]["schemas"]["DeadLetterReplayRequest"]["properties"]
    assert {"all", "dry_run"} <= set(request)
    answers = document["paths"]["/v1/dead-letters/replay"]["post"]["responses"]
    assert answers["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/BulkReplayPreview"
    )
