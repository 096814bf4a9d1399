"""Fixtures for the fault suite: deployments of real processes, and private services to break.

`courier` runs on the shared PostgreSQL and RabbitMQ (a fresh database and vhost per test).
`courier_private_rabbitmq` and `courier_private_postgres` put the broker or the database on
a node of the session's own, which a test may stop, crash and restart without disturbing
anything else on the machine. Timings are shortened through the environment only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.faults.harness import Courier
from tests.support import services
from tests.support.private_services import PrivatePostgres, PrivateRabbitMQ, RabbitTarget
from tests.support.processes import free_port
from tests.support.upstream import ScriptableUpstream

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

SHARED_RABBITMQ = RabbitTarget(services.AMQP_BASE, services.RABBIT_API)


def _short_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]


def _deployment(
    request: pytest.FixtureRequest,
    *,
    database_url: str,
    broker: RabbitTarget,
    vhost: str,
    upstream: ScriptableUpstream,
) -> Courier:
    env = {
        **FAST,
        "COURIER_DATABASE_URL": database_url,
        "COURIER_BROKER_URL": broker.amqp_url(vhost),
        "COURIER_RABBITMQ_API_URL": broker.api_url,
        "COURIER_CRM_URL": upstream.crm_url,
        "COURIER_BILLING_URL": upstream.billing_url,
    }
    return Courier(
        name=_short_name(request),
        env=env,
        api_url=f"http://127.0.0.1:{free_port()}",
        upstream=upstream,
        broker=broker,
        vhost=vhost,
    )


@pytest.fixture
def courier(
    request: pytest.FixtureRequest, database_url: str, vhost: str, upstream: ScriptableUpstream
) -> Iterator[Courier]:
    """A deployment on the shared services; start the processes a test needs."""
    deployment = _deployment(
        request, database_url=database_url, broker=SHARED_RABBITMQ, vhost=vhost, upstream=upstream
    )
    yield deployment
    deployment.stop_all()


@pytest.fixture(scope="session")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of this session's own (started once, restarted by tests at will)."""
    try:
        node = PrivateRabbitMQ()
    except Exception as e:
        services.unavailable("a private RabbitMQ node (rabbitmq-server)", e)
    try:
        node.start()
    except Exception as e:
        node.close()
        services.unavailable("a private RabbitMQ node (rabbitmq-server)", e)
    yield node
    node.close()


@pytest.fixture
def courier_private_rabbitmq(
    request: pytest.FixtureRequest,
    database_url: str,
    private_rabbitmq: PrivateRabbitMQ,
    upstream: ScriptableUpstream,
) -> Iterator[Courier]:
    """A deployment whose broker is the private node: the test may stop or crash it."""
    if not private_rabbitmq.running:
        private_rabbitmq.start()
    vhost = private_rabbitmq.target.create_vhost()
    deployment = _deployment(
        request,
        database_url=database_url,
        broker=private_rabbitmq.target,
        vhost=vhost,
        upstream=upstream,
    )
    yield deployment
    deployment.stop_all()
    if not private_rabbitmq.running:
        private_rabbitmq.start()
    private_rabbitmq.target.delete_vhost(vhost)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this session's own (started once, restarted by tests at will)."""
    try:
        server = PrivatePostgres()
    except Exception as e:
        services.unavailable("a private PostgreSQL server (initdb, postgres)", e)
    try:
        server.start()
    except Exception as e:
        server.close()
        services.unavailable("a private PostgreSQL server (initdb, postgres)", e)
    yield server
    server.close()


@pytest.fixture
def courier_private_postgres(
    request: pytest.FixtureRequest,
    private_postgres: PrivatePostgres,
    vhost: str,
    upstream: ScriptableUpstream,
) -> Iterator[Courier]:
    """A deployment whose database is on the private server: the test may stop it."""
    if not private_postgres.running:
        private_postgres.start()
    name = private_postgres.create_database()
    deployment = _deployment(
        request,
        database_url=private_postgres.url(name),
        broker=SHARED_RABBITMQ,
        vhost=vhost,
        upstream=upstream,
    )
    migrated = deployment.run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    yield deployment
    deployment.stop_all()
    if not private_postgres.running:
        private_postgres.start()
    private_postgres.drop_database(name)
