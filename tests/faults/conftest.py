"""Fixtures for the fault suite: deployments of real processes, and private services to break.

`deployment` runs on the shared PostgreSQL and RabbitMQ (a fresh database and vhost per
test). `deployment_on_private_rabbitmq` and `deployment_on_private_postgres` put the broker
or the database on a node of the session's own, which a test may stop, crash and restart
without disturbing anything else on the machine; `deployment_on_replicated_postgres` puts
the database on a primary and standby of the test's own, named by a multi-host URL, to fail
over. Timings are shortened through the environment only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.faults.harness import FaultDeployment
from tests.faults.postgres_replicas import ReplicatedPostgres
from tests.faults.private_services import PrivatePostgres, PrivateRabbitMQ
from tests.support import services
from tests.support.deployment import label_for
from tests.support.services import SHARED_RABBITMQ, RabbitTarget
from tests.support.upstream import ScriptableUpstream

#: The private services the fixtures start.
S = TypeVar("S", PrivatePostgres, PrivateRabbitMQ, ReplicatedPostgres)

#: Short leases and intervals so crashes are noticed in seconds, not minutes.
FAST = {
    "COURIER_MIN_BACKOFF_MS": "100",
    "COURIER_MAX_BACKOFF_MS": "500",
    "COURIER_LEASE_S": "3",
    "COURIER_REAPER_INTERVAL_S": "0.5",
    "COURIER_RELAY_INTERVAL_S": "0.2",
    "COURIER_PROGRESS_INTERVAL_S": "0.2",
    "COURIER_UPSTREAM_TIMEOUT_S": "10",
    "COURIER_LOG_FORMAT": "json",
}


def _deployment(
    request: pytest.FixtureRequest,
    *,
    database_url: str,
    broker: RabbitTarget,
    vhost: str,
    upstream: ScriptableUpstream,
) -> FaultDeployment:
    return FaultDeployment.create(
        f"faults-{label_for(request.node.name)}",
        database_url=database_url,
        broker=broker,
        vhost=vhost,
        upstream=upstream,
        settings=FAST,
    )


def _started(make: Callable[[], S], what: str) -> S:
    """A private service made and started; the test is skipped (failed in CI) if it cannot be."""
    try:
        service = make()
    except Exception as e:
        services.unavailable(what, e)
    try:
        service.start()
    except Exception as e:
        service.close()
        services.unavailable(what, e)
    return service


def _migrated(
    request: pytest.FixtureRequest, *, database_url: str, vhost: str, upstream: ScriptableUpstream
) -> FaultDeployment:
    """A deployment on a private database, migrated, with the shared RabbitMQ."""
    d = _deployment(
        request, database_url=database_url, broker=SHARED_RABBITMQ, vhost=vhost, upstream=upstream
    )
    d.migrate()
    return d


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, database_url: str, vhost: str, upstream: ScriptableUpstream
) -> Iterator[FaultDeployment]:
    """A deployment on the shared services; start the processes a test needs."""
    d = _deployment(
        request, database_url=database_url, broker=SHARED_RABBITMQ, vhost=vhost, upstream=upstream
    )
    yield d
    # The test is over and its database and vhost are dropped next: nothing needs a graceful
    # shutdown, and frozen processes would not have one.
    d.kill_all()


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of this session's own (started once, restarted by tests at will)."""
    node = _started(PrivateRabbitMQ, "a private RabbitMQ node (rabbitmq-server)")
    yield node
    node.close()


@pytest.fixture
def deployment_on_private_rabbitmq(
    request: pytest.FixtureRequest,
    database_url: str,
    private_rabbitmq: PrivateRabbitMQ,
    upstream: ScriptableUpstream,
) -> Iterator[FaultDeployment]:
    """A deployment whose broker is the private node: the test may stop or crash it."""
    if not private_rabbitmq.running:
        private_rabbitmq.start()
    vhost = private_rabbitmq.target.create_vhost("courier-fault")
    d = _deployment(
        request,
        database_url=database_url,
        broker=private_rabbitmq.target,
        vhost=vhost,
        upstream=upstream,
    )
    yield d
    d.kill_all()
    if not private_rabbitmq.running:
        private_rabbitmq.start()
    private_rabbitmq.target.delete_vhost(vhost)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this session's own (started once, restarted by tests at will)."""
    server = _started(PrivatePostgres, "a private PostgreSQL server (initdb, postgres)")
    yield server
    server.close()


@pytest.fixture
def deployment_on_private_postgres(
    request: pytest.FixtureRequest,
    private_postgres: PrivatePostgres,
    vhost: str,
    upstream: ScriptableUpstream,
) -> Iterator[FaultDeployment]:
    """A deployment whose database is on the private server: the test may stop it."""
    if not private_postgres.running:
        private_postgres.start()
    name = private_postgres.create_database()
    d = _migrated(request, database_url=private_postgres.url(name), vhost=vhost, upstream=upstream)
    yield d
    d.kill_all()
    if not private_postgres.running:
        private_postgres.start()
    private_postgres.drop_database(name)


@pytest.fixture
def replicated_postgres() -> Iterator[ReplicatedPostgres]:
    """A primary and a synchronous standby of this test's own (a failover spends them)."""
    what = "a private PostgreSQL primary and standby (initdb, pg_basebackup, postgres)"
    pair = _started(ReplicatedPostgres, what)
    yield pair
    pair.close()


@pytest.fixture
def deployment_on_replicated_postgres(
    request: pytest.FixtureRequest,
    replicated_postgres: ReplicatedPostgres,
    vhost: str,
    upstream: ScriptableUpstream,
) -> Iterator[FaultDeployment]:
    """A deployment whose database URL lists the primary and the standby (primary first)."""
    name = replicated_postgres.primary.create_database()
    url = replicated_postgres.url(name)
    d = _migrated(request, database_url=url, vhost=vhost, upstream=upstream)
    yield d
    d.kill_all()
