"""Claims the database refuses without being down: PostgreSQL turned read-only, as a primary
demoted by a failover is, or the workers' role lacking a privilege. No job runs unclaimed,
no message is acked away, the workers wait quietly, and once writes are back every job runs
exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.faults.harness import FaultDeployment
from tests.support.polling import holds_for, wait_for

pytestmark = pytest.mark.faults

JOBS = 6
THREADS = 4
#: Long enough for the management API's figures to describe the held messages.
REFUSED_S = 6


def set_read_only(deployment: FaultDeployment, on: bool) -> None:
    """Make the deployment's database refuse writes in new sessions (or take them again)."""
    with deployment.sql() as conn:
        # A session started while the database was read-only is read-only itself.
        conn.execute("SET default_transaction_read_only = off")
        name = conn.execute("SELECT current_database()").fetchone()[0]
        setting = "SET default_transaction_read_only = on" if on else "RESET ALL"
        conn.execute(f'ALTER DATABASE "{name}" {setting}')
        if on:  # sessions already open keep writing: end them, as a failover does
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def check_refused_claims_are_held(
    deployment: FaultDeployment,
    upstream,
    *,
    refuse: Callable[[], None],
    allow: Callable[[], None],
    worker_env: dict[str, str] | None = None,
) -> None:
    """Submit jobs, `refuse` writes, start a worker: nothing may be claimed, run or acked.
    Then `allow` writes: every job must run exactly once."""
    deployment.start_api()
    ids = deployment.submit_all(
        {"type": "customer_sync", "entity_id": f"c_refused_{i}"} for i in range(JOBS)
    )
    refuse()
    group = deployment.start_worker(processes=1, threads=THREADS, env=worker_env)

    def queue() -> dict:
        return deployment.broker.queue(deployment.vhost, "sync") or {}

    def held() -> bool:
        acked = queue().get("message_stats", {}).get("ack", 0)
        return acked == 0 and queue().get("messages", 0) == JOBS

    def untouched() -> bool:
        return (
            deployment.count("status = 'queued' AND attempts = 0") == JOBS
            and not upstream.calls()
            and held()
        )

    wait_for(lambda: queue().get("consumers", 0) >= 1, timeout=20, what="the worker to consume")
    holds_for(untouched, REFUSED_S, what="jobs unclaimed, unrun and their messages held")
    # One line per held message, not one per try, and one for the relay that cannot lock
    # anything to publish meanwhile: no hot loop, in the log either.
    assert len(group.log_lines("claim not written")) == THREADS
    assert len(group.log_lines("Relay failed")) <= 1
    assert not group.log_lines("no job is running in this thread")

    allow()
    report = deployment.settle_and_check(ids, timeout=60, effects_exactly_once=True)
    assert report.statuses == {"succeeded": JOBS}
    assert all(job["attempts"] == 1 for job in report.jobs.values())
    assert len(group.log_lines("claim written after")) == THREADS
    assert group.restarts() == 0


def test_claims_refused_by_a_read_only_database_hold_their_messages_until_writes_are_back(
    deployment, upstream
):
    check_refused_claims_are_held(
        deployment,
        upstream,
        refuse=lambda: set_read_only(deployment, True),
        allow=lambda: set_read_only(deployment, False),
    )


def test_claims_refused_for_a_missing_privilege_hold_their_messages_until_it_is_granted(
    deployment_on_private_postgres, upstream
):
    # Roles belong to the whole server: this one is made on the session's private server.
    deployment = deployment_on_private_postgres
    role = f"courier_worker_{uuid.uuid4().hex[:8]}"
    with deployment.sql() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
    url = deployment.env["COURIER_DATABASE_URL"].replace("//postgres@", f"//{role}@")

    def privilege(statement: str) -> Callable[[], None]:
        def change() -> None:
            with deployment.sql() as conn:
                conn.execute(statement)

        return change

    check_refused_claims_are_held(
        deployment,
        upstream,
        refuse=privilege(f"REVOKE UPDATE ON jobs FROM {role}"),
        allow=privilege(f"GRANT UPDATE ON jobs TO {role}"),
        worker_env={"COURIER_DATABASE_URL": url},
    )
