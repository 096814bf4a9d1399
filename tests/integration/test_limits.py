"""Concurrency limits: at most n running attempts share a key, across workers; a job over
its limit waits (queued, `waiting_for`) without consuming an attempt, and runs when a slot
frees."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import event, func, select

from bench import plans, seed
from store import transitions
from store.admission import Claiming, Park, decide
from store.limits import Limit, limits_rule
from store.models import JOBS, Job
from tests.support.polling import wait_for
from tests.support.records import insert_jobs
from tests.support.stack import embedded_client, embedded_token
from tests.support.times import LATER

pytestmark = pytest.mark.integration

UPSTREAMS_OF = {"customer_sync": ("crm", "billing"), "invoice_sync": ("crm", "billing")}


def slow_upstreams(upstream, delay_s: float) -> None:
    """Every customer's CRM read and Billing write takes `delay_s` (each under the
    upstream timeout)."""
    for method, path in (("GET", "/crm/customers/*"), ("PUT", "/billing/customers/*")):
        upstream.script(
            method, path, {"status": 200, "body": {"id": "c"}, "delay_s": delay_s}, repeat_last=True
        )


class Peaks:
    """The most jobs of a type seen running at once, sampled from SQL in the background."""

    def __init__(self, stack, job_type: str) -> None:
        self.stack, self.job_type, self.highest = stack, job_type, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        query = select(func.count()).where(JOBS.c.type == self.job_type, JOBS.c.status == "running")
        with self.stack.engine.connect() as db:
            while not self._stop.is_set():
                self.highest = max(self.highest, db.execute(query).scalar_one())
                db.rollback()
                time.sleep(0.01)


@contextmanager
def peaks(stack, job_type: str) -> Iterator[Peaks]:
    seen = Peaks(stack, job_type)
    seen._thread.start()
    try:
        yield seen
    finally:
        seen._stop.set()
        seen._thread.join(timeout=5)


def waiting(stack, job_id: str, key: str) -> Job | None:
    job = stack.job(job_id)
    return job if job.status == "queued" and job.waiting_for == key else None


def test_a_tenant_limit_of_two_never_lets_more_than_two_run_at_once_across_two_workers(
    stack, upstream
):
    slow_upstreams(upstream, 0.15)
    limit = (Limit("tenant", 2, type="customer_sync"),)
    stack.start_worker(threads=6, limits=limit)
    stack.start_worker(threads=6, limits=limit)
    with peaks(stack, "customer_sync") as seen:
        ids = stack.submit_all({"type": "customer_sync", "entity_id": f"c_{i}"} for i in range(10))
        some = wait_for(
            lambda: next((j for j in ids if waiting(stack, j, "tenant")), None),
            what="a job waiting for the tenant's slots",
        )
        assert stack.job(some).attempts == 0
        for job_id in ids:
            stack.wait_status(job_id, "succeeded", timeout=60)
    assert seen.highest == 2
    for job_id in ids:
        job = stack.job(job_id)
        assert (job.attempts, job.waiting_for) == (1, None)
        assert [a.status for a in stack.attempts(job_id)] == ["succeeded"]


def test_two_jobs_of_one_entity_never_run_at_once_and_the_second_waits_without_an_attempt(
    stack, upstream
):
    slow_upstreams(upstream, 0.75)
    stack.start_worker(threads=4, limits=(Limit("entity", 1, type="customer_sync"),))
    # One entity, two tenants: two active jobs for it despite each tenant's 409.
    first = stack.submit(type="customer_sync", entity_id="c_shared")
    stack.wait_status(first, "running")
    second = stack.submit(type="customer_sync", entity_id="c_shared", headers=stack.token("globex"))
    held = wait_for(lambda: waiting(stack, second, "entity"), what="the second job waiting")
    assert held.attempts == 0 and held.next_attempt_at is not None
    body = stack.client.simulate_get(f"/v1/jobs/{second}", headers=stack.token("globex")).json
    assert (body["status"], body["waiting_for"], body["attempts"]) == ("queued", "entity", 0)
    done_first = stack.wait_status(first, "succeeded")
    done_second = stack.wait_status(second, "succeeded", timeout=30)
    [run] = stack.attempts(second)
    assert run.started_at >= done_first.finished_at
    assert (done_second.attempts, done_second.waiting_for) == (1, None)


def test_a_cancelled_waiting_job_ends_cancelled_and_frees_no_slot_it_did_not_hold(stack, upstream):
    slow_upstreams(upstream, 1.5)
    stack.start_worker(threads=4, limits=(Limit("entity", 1, type="customer_sync"),))
    holder = stack.submit(type="customer_sync", entity_id="c_one")
    stack.wait_status(holder, "running")
    globex, initech = stack.token("globex"), stack.token("initech")
    cancelled = stack.submit(type="customer_sync", entity_id="c_one", headers=globex)
    wait_for(lambda: waiting(stack, cancelled, "entity"), what="a waiting job")
    response = stack.client.simulate_post(f"/v1/jobs/{cancelled}/cancel", headers=globex)
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    later = stack.submit(type="customer_sync", entity_id="c_one", headers=initech)
    wait_for(lambda: waiting(stack, later, "entity"), what="the next job still waiting")
    assert stack.job(holder).status == "running"
    done_holder = stack.wait_status(holder, "succeeded")
    stack.wait_status(later, "succeeded", timeout=30)
    assert stack.attempts(later)[0].started_at >= done_holder.finished_at
    gone = stack.job(cancelled)
    assert (gone.status, gone.attempts, gone.waiting_for) == ("cancelled", 0, None)
    assert not stack.attempts(cancelled)


def test_the_slot_of_a_worker_that_vanished_is_free_once_its_lease_expires(stack, upstream):
    holder = stack.submit(type="customer_sync", entity_id="c_lost")
    wait_for(lambda: stack.job(holder).published_at, what="the holder published")
    # A worker claims the job and vanishes: nobody renews its 4-second lease.
    with stack.engine.begin() as db:
        [claim] = transitions.claim(db, [uuid.UUID(holder)], worker="gone:1", lease_s=4).values()
    lease_ends = stack.job(holder).lease_expires_at
    stack.start_worker(threads=4, limits=(Limit("entity", 1, type="customer_sync"),))
    other = stack.submit(type="customer_sync", entity_id="c_lost", headers=stack.token("globex"))
    wait_for(lambda: waiting(stack, other, "entity"), what="the job waiting behind the holder")
    stack.wait_status(other, "succeeded", timeout=30)
    assert stack.attempts(other)[0].started_at >= lease_ends
    # The reaper ends the vanished attempt as abandoned; the job runs again.
    stack.wait_status(holder, "succeeded", timeout=30)
    assert stack.attempts(holder)[0].status == "abandoned"
    assert claim.number == 1


def test_a_scheduled_job_and_a_replay_respect_the_limit(stack, upstream):
    upstream.script("GET", "/crm/customers/c_busy", {"status": 503}, repeat_last=False)
    stack.start_worker(threads=4, limits=(Limit("entity", 1, type="customer_sync"),))
    dead = stack.submit(type="customer_sync", entity_id="c_busy", max_attempts=1)
    stack.wait_status(dead, "dead")
    slow_upstreams(upstream, 1.5)
    holder = stack.submit(type="customer_sync", entity_id="c_busy", headers=stack.token("globex"))
    stack.wait_status(holder, "running")
    soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scheduled = stack.submit(
        type="customer_sync", entity_id="c_busy", run_at=soon, headers=stack.token("initech")
    )
    operator = stack.token("ops", "operator")
    replayed = stack.client.simulate_post(
        f"/v1/jobs/{dead}/replay", json={"reason": "CRM is back"}, headers=operator
    )
    assert replayed.status_code == 202, replayed.text
    replay = replayed.json["id"]
    wait_for(lambda: waiting(stack, scheduled, "entity"), what="the scheduled job waiting")
    wait_for(lambda: waiting(stack, replay, "entity"), what="the replay waiting")
    with peaks(stack, "customer_sync") as seen:
        for job_id in (holder, scheduled, replay):
            stack.wait_status(job_id, "succeeded", timeout=40)
    assert seen.highest == 1
    assert stack.job(scheduled).attempts == stack.job(replay).attempts == 1


def make_due(engine, ids) -> None:
    """Jobs submitted for later made due now, unpublished: only a claim will take them."""
    with engine.begin() as db:
        db.execute(
            JOBS.update().where(JOBS.c.id.in_(ids)).values(run_at=None, next_attempt_at=None)
        )


def count_statements(engine) -> list[str]:
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_a_claim_of_a_type_without_limits_runs_no_extra_statement(stack, engine):
    ids = [
        uuid.UUID(stack.submit(type="customer_sync", entity_id=f"c_{i}", run_at=LATER))
        for i in range(2)
    ]
    make_due(engine, ids)
    rule = limits_rule(
        [Limit("entity", 1, type="directory_sync")], UPSTREAMS_OF | {"directory_sync": ()}
    )
    statements = count_statements(engine)
    with engine.begin() as db:
        claimed = transitions.claim(
            db, ids, worker="w:1", lease_s=30, rules=[rule], types={"customer_sync"}
        )
    assert set(claimed) == set(ids)
    assert len(statements) == 1  # the claim itself


def test_without_a_lock_sqlite_admits_one_job_per_entity_and_parks_the_other(sqlite_engine):
    rule = limits_rule([Limit("entity", 1, type="customer_sync")], UPSTREAMS_OF)
    jobs = [Claiming(uuid.uuid4(), tenant, "customer_sync", "c_1") for tenant in ("a", "b")]
    with sqlite_engine.begin() as db:
        parks = rule(db, jobs)
    assert parks == {jobs[1].job_id: Park("entity")}


def test_an_upstream_limit_counts_the_running_jobs_of_every_type_that_calls_it(sqlite_engine):
    rule = limits_rule([Limit("upstream", 2, upstream="crm")], UPSTREAMS_OF)
    jobs = [
        Claiming(uuid.uuid4(), "a", t, f"x_{i}")
        for i, t in enumerate(["customer_sync", "invoice_sync", "invoice_sync"])
    ]
    with sqlite_engine.begin() as db:
        assert rule(db, jobs) == {jobs[2].job_id: Park("upstream:crm")}
        assert decide(db, [j.job_id for j in jobs], [rule], types={"directory_sync"}) == {}


def test_on_sqlite_a_claim_parks_the_job_over_its_limit_and_claims_the_other(sqlite_engine):
    client = embedded_client(sqlite_engine)
    ids = []
    for tenant in ("acme", "globex"):
        body = {"type": "customer_sync", "entity_id": "c_1", "run_at": LATER}
        response = client.simulate_post(
            "/v1/jobs", json=body, headers=embedded_token(sqlite_engine, tenant)
        )
        assert response.status_code == 202, response.text
        ids.append(uuid.UUID(response.json["id"]))
    make_due(sqlite_engine, ids)
    rule = limits_rule([Limit("entity", 1, type="customer_sync")], UPSTREAMS_OF)
    with sqlite_engine.begin() as db:
        claimed = transitions.claim(db, ids, worker="w:1", lease_s=30, rules=[rule])
        assert set(claimed) == {ids[0]}
        parked = db.execute(select(JOBS).where(JOBS.c.id == ids[1])).one()
        due_in = db.execute(
            select(func.julianday(parked.next_attempt_at) - func.julianday("now"))
        ).scalar_one()
    assert (parked.status, parked.attempts, parked.waiting_for) == ("queued", 0, "entity")
    assert parked.published_at is None and 0 < due_in * 86400 <= 1.5


def test_a_rule_may_park_a_job_until_a_time_it_names(stack, engine):
    job_id = uuid.UUID(stack.submit(type="customer_sync", entity_id="c_1"))
    until = datetime.now(UTC) + timedelta(minutes=5)

    def circuit_open(db, jobs):
        return {job.job_id: Park("upstream:crm", until) for job in jobs}

    with engine.begin() as db:
        assert transitions.claim(db, [job_id], worker="w:1", lease_s=30, rules=[circuit_open]) == {}
    job = stack.job(job_id)
    assert (job.status, job.attempts, job.waiting_for) == ("queued", 0, "upstream:crm")
    assert job.published_at is None and abs(job.next_attempt_at - until) < timedelta(seconds=1)


@pytest.mark.parametrize(
    "limit",
    [
        Limit("entity", 1, type="customer_sync"),
        Limit("tenant", 1, type="customer_sync"),
        Limit("upstream", 1, type="customer_sync"),
        Limit("upstream", 1, upstream="crm"),
    ],
    ids=lambda limit: f"{limit.type}:{limit.waiting_for}",
)
def test_the_running_jobs_a_limit_counts_are_read_from_an_index_not_the_history(
    database_url, engine, limit
):
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        seed.finished_jobs(conn, first=1, count=50_000, tenants=4)
        conn.execute("ANALYZE jobs")
    with engine.begin() as db:
        transitions.claim(db, insert_jobs(engine, 20), worker="test:1", lease_s=30)
    rule = limits_rule([limit], UPSTREAMS_OF)
    claiming = [Claiming(uuid.uuid4(), "t0", "customer_sync", "c_1")]
    explained = [p for p in plans._explained(engine, lambda db: rule(db, claiming)) if "jobs" in p]
    assert explained, "no count of running jobs was sent"
    for plan in explained:
        assert "Seq Scan on jobs" not in plan and "Index" in plan, plan
