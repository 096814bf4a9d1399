"""A worker host whose network link is cut mid-job: its jobs move to another host, and what
it writes when the link comes back changes nothing.

Two hosts are network namespaces (`tests.faults.worker_hosts`), each running `courier
worker`; PostgreSQL, RabbitMQ and the upstream are the test's own, on the bridge that joins
the hosts, and the API runs in the root namespace.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest

from store import turns
from store.db import SERVER_KEEPALIVES, SILENT_CLIENT_S
from tests.faults import worker_hosts
from tests.faults.conftest import FAST
from tests.faults.harness import FaultDeployment, slow, worker_pid
from tests.faults.private_services import PrivatePostgres, PrivateRabbitMQ
from tests.support import services
from tests.support.deployment import label_for
from tests.support.polling import wait_for
from tests.support.processes import Process
from tests.support.upstream import ScriptableUpstream

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

LEASE_S = float(FAST["COURIER_LEASE_S"])
REAPER_INTERVAL_S = float(FAST["COURIER_REAPER_INTERVAL_S"])
RELAY_INTERVAL_S = float(FAST["COURIER_RELAY_INTERVAL_S"])
#: For the claim on host B, and threads waiting their turn on two loaded cores.
MARGIN_S = 2.0
JOBS = 3
#: How long the CRM takes to answer host A: past B's start, the cut and B's run, so A's
#: answers arrive once its link is back. The upstream timeout outlasts it.
CRM_DELAY_S = 25
SETTINGS = {**FAST, "COURIER_UPSTREAM_TIMEOUT_S": "60"}


def prefetching(jobs: int) -> dict[str, str]:
    """Host A is handed no message beyond the `jobs` it runs (the prefetch is per consumer):
    cut off with room to spare, it would be handed retries too, and hold them until RabbitMQ
    gives up on its connection (not within 150 s with the default heartbeat; 10 s with
    `?heartbeat=5` in the broker URL)."""
    return {"dramatiq_queue_prefetch": str(jobs)}


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[FaultDeployment, list]]:
    """A deployment whose database, broker and upstream listen on a bridge, and two hosts
    on it; everything is removed at the end, even when the test fails."""
    worker_hosts.require()
    with contextlib.ExitStack() as cleanup:
        network = cleanup.enter_context(worker_hosts.Network())
        try:
            postgres = PrivatePostgres(host=network.address)
            cleanup.callback(postgres.close)
            postgres.start()
            rabbitmq = PrivateRabbitMQ(host=network.address)
            cleanup.callback(rabbitmq.close)
            rabbitmq.start()
        except FileNotFoundError as e:
            services.unavailable("a private PostgreSQL and RabbitMQ", e)
        upstream = ScriptableUpstream.start(network.address)
        cleanup.callback(upstream.stop)
        deployment = FaultDeployment.create(
            f"hosts-{label_for(request.node.name)}",
            database_url=postgres.url(postgres.create_database()),
            broker=rabbitmq.target,
            vhost=rabbitmq.target.create_vhost("courier-hosts"),
            upstream=upstream,
            settings=SETTINGS,
        )
        cleanup.callback(deployment.kill_all)
        deployment.migrate()
        yield deployment, [network.add_host("a"), network.add_host("b")]


def test_a_host_cut_off_mid_job_loses_its_jobs_to_another_host_and_its_late_writes_change_nothing(
    cluster,
):
    deployment, (host_a, host_b) = cluster
    upstream = deployment.upstream
    entities = [f"c_cut_{i}" for i in range(JOBS)]
    for entity in entities:
        # Once: the retry on host B gets the demo's answer at once.
        upstream.script("GET", f"/crm/customers/{entity}", slow(CRM_DELAY_S))
    deployment.start_api()
    a = deployment.start_worker(
        "host-a", processes=1, threads=JOBS, env=prefetching(JOBS), wrapper=host_a.wrapper
    )
    ids = deployment.submit_all({"type": "customer_sync", "entity_id": e} for e in entities)

    def waiting_on_the_crm_on_a() -> bool:
        running = deployment.running_attempts()
        return (
            len(running) == JOBS
            and all(worker_pid(r["worker"]) in a.worker_pids() for r in running)
            and len(upstream.calls(method="GET")) == JOBS
        )

    wait_for(waiting_on_the_crm_on_a, timeout=30, what="every job waiting on the CRM on host A")
    b = deployment.start_worker("host-b", processes=1, threads=JOBS, wrapper=host_b.wrapper)
    assert set(a.worker_pids()) <= set(host_a.pids())
    assert set(b.worker_pids()) <= set(host_b.pids())

    a_log_at_cut = len(a.output())
    with host_a.cut_off():
        with deployment.sql() as conn:
            (cut_at,) = conn.execute("SELECT clock_timestamp()").fetchone()
            a_had_the_relay = _turn_holder(conn, "relay") == host_a.address
        for job_id in ids:
            deployment.wait_status(job_id, "succeeded", timeout=LEASE_S + 30)
        decided = {job_id: deployment.job(job_id) for job_id in ids}
        moved = {job_id: deployment.attempts(job_id) for job_id in ids}
    a_log_at_restore = len(a.output())

    # On host B within a lease, a reaper round and a relay round of the cut; and if the cut
    # caught host A in a relay round, once its session has sat idle for a turn's limit.
    bound = LEASE_S + REAPER_INTERVAL_S + RELAY_INTERVAL_S + MARGIN_S
    if a_had_the_relay:
        bound = max(bound, turns.IDLE_LIMIT_S + RELAY_INTERVAL_S + MARGIN_S)
    print(f"host A {'had' if a_had_the_relay else 'did not have'} the relay's turn at the cut")
    to_b = {job_id: _seconds(cut_at, rows[1]["started_at"]) for job_id, rows in moved.items()}
    reaped = {job_id: _seconds(cut_at, rows[0]["finished_at"]) for job_id, rows in moved.items()}
    print(f"cut at {cut_at:%H:%M:%S.%f} (database clock), restored once B had run every job")
    print(f"cut -> reaped: {sorted(reaped.values())}; cut -> running on B: {sorted(to_b.values())}")
    assert max(to_b.values()) <= bound, (to_b, bound)
    for first, second in moved.values():
        assert (first["status"], first["error_type"]) == ("abandoned", "WorkerLost")
        assert worker_pid(first["worker"]) in a.worker_pids()
        assert second["status"] == "succeeded"
        assert worker_pid(second["worker"]) in b.worker_pids()

    # Back on the network, A's attempts stop at their checkpoint, before writing Billing,
    # and the fence refuses their finishes.
    def fenced_on_a() -> list[str]:
        late = a.output()[a_log_at_restore:]
        return [line for line in late.splitlines() if '"outcome": "fenced"' in line]

    wait_for(
        lambda: len(fenced_on_a()) == JOBS,
        timeout=CRM_DELAY_S + 30,
        what=lambda: f"host A's late finishes to be fenced: {fenced_on_a()}",
    )
    print("host A while cut off:\n" + a.output()[a_log_at_cut:a_log_at_restore])
    print("host A after its link came back:\n" + a.output()[a_log_at_restore:])
    assert all("LeaseLost" in line for line in fenced_on_a()), fenced_on_a()
    report = deployment.settle_and_check(ids, timeout=60, effects_exactly_once=True)
    assert report.statuses == {"succeeded": JOBS}
    for job_id in ids:
        assert report.jobs[job_id] == decided[job_id]
        assert report.attempts[job_id] == moved[job_id]
        assert report.effects[job_id] == 1  # B's write only
    assert len(upstream.calls(method="GET")) == 2 * JOBS


#: A client on host A that holds a job's row locked in an open transaction, through
#: Courier's own engine, as a group commit or heartbeat caught mid-transaction by the cut.
HOLD_A_ROW = """
import sys, time
from sqlalchemy import text
from store.db import make_engine
with make_engine(sys.argv[1]).begin() as db:
    db.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": sys.argv[2]})
    print("locked", flush=True)
    time.sleep(3600)
"""
#: How long the database may take to end a silent client's session (`store.db`): its
#: limit, plus the keepalive probe that finds it over.
SILENT_SESSION_S = SILENT_CLIENT_S + int(SERVER_KEEPALIVES["tcp_keepalives_interval"])


def test_a_transaction_left_open_by_the_cut_holds_its_jobs_back_no_longer_than_the_keepalives(
    cluster,
):
    deployment, (host_a, host_b) = cluster
    upstream = deployment.upstream
    upstream.script("GET", "/crm/customers/c_locked", slow(CRM_DELAY_S))  # once
    deployment.start_api()
    a = deployment.start_worker(
        "host-a", processes=1, threads=1, env=prefetching(1), wrapper=host_a.wrapper
    )
    [job_id] = deployment.submit_all([{"type": "customer_sync", "entity_id": "c_locked"}])
    wait_for(
        lambda: deployment.job(job_id)["status"] == "running" and upstream.calls(method="GET"),
        timeout=30,
        what="the job to be waiting on the CRM on host A",
    )
    b = deployment.start_worker("host-b", processes=1, threads=1, wrapper=host_b.wrapper)
    url = deployment.env["COURIER_DATABASE_URL"]
    holder = Process(
        f"{deployment.name}-holder",
        [*host_a.wrapper, sys.executable, "-c", HOLD_A_ROW, url, job_id],
        {},
    )
    deployment.processes.append(holder)  # killed with the rest, even on failure
    wait_for(lambda: holder.lines("locked"), timeout=30, what=lambda: holder.output()[-2000:])

    with host_a.cut_off():
        with deployment.sql() as conn:
            (cut_at,) = conn.execute("SELECT clock_timestamp()").fetchone()
        deployment.wait_status(job_id, "succeeded", timeout=SILENT_SESSION_S + 30)
    first, second = deployment.attempts(job_id)

    reaped, to_b = _seconds(cut_at, first["finished_at"]), _seconds(cut_at, second["started_at"])
    print(f"cut -> reaped: {reaped}; cut -> running on B: {to_b}")
    # Held back by the lock until the database ended the silent session, then at once.
    assert reaped > SILENT_CLIENT_S - 1, reaped
    assert to_b <= SILENT_SESSION_S + REAPER_INTERVAL_S + RELAY_INTERVAL_S + MARGIN_S, to_b
    assert (first["status"], first["error_type"]) == ("abandoned", "WorkerLost")
    assert worker_pid(second["worker"]) in b.worker_pids()

    wait_for(
        lambda: a.log_lines('"outcome": "fenced"'),
        timeout=CRM_DELAY_S + 30,
        what="host A's late finish to be fenced",
    )
    report = deployment.settle_and_check([job_id], timeout=60, effects_exactly_once=True)
    assert [r["status"] for r in report.attempts[job_id]] == ["abandoned", "succeeded"]
    assert report.effects[job_id] == 1


def _seconds(since: datetime, until: datetime) -> float:
    return round((until - since).total_seconds(), 3)


def _turn_holder(conn: psycopg.Connection, name: str) -> str | None:
    """The client address of the session that has the turn `name` now, if any."""
    row = conn.execute(
        "SELECT host(a.client_addr) FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s",
        (turns.lock_key(name),),
    ).fetchone()
    return None if row is None else row[0]
