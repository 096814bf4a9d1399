"""Fixtures shared by the test tiers: real services, fresh per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from courier.settings import Settings
from store import migrate
from store.db import make_engine, make_sessionmaker
from tests.support import job_types, services
from tests.support.stack import Stack, build
from tests.support.upstream import ScriptableUpstream

assert job_types  # registered before any app or worker is built

#: Under pytest-xdist (`make test`: `--dist loadgroup`) the tests of one group run on one
#: worker, one after another. A private server is a session fixture, so grouping its tests
#: starts it on one worker instead of on each.
GROUPS_BY_FIXTURE = {
    "private_rabbitmq": "private-rabbitmq",
    "private_postgres": "private-postgres",
}


def xdist_groups(item: pytest.Item) -> set[str]:
    """The groups a test belongs to: its private servers', and `timing` for a test whose
    wall-clock bounds hold on two cores only without another such test beside it."""
    fixtures = getattr(item, "fixturenames", ())
    groups = {g for f, g in GROUPS_BY_FIXTURE.items() if f in fixtures}
    if item.get_closest_marker("timing"):
        groups.add("timing")
    return groups


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        groups = xdist_groups(item)
        assert len(groups) <= 1, f"{item.nodeid} is in more than one group: {sorted(groups)}"
        for group in groups:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[None]:
    """The migrated template database, made once per run."""
    try:
        services.create_template()
    except Exception as e:  # any reason the server cannot be used
        services.unavailable("PostgreSQL", e)
    yield
    services.drop_template()


@pytest.fixture(scope="session")
def rabbitmq_available() -> None:
    """RabbitMQ with its management API (used to make vhosts)."""
    try:
        services.delete_vhost(services.create_vhost())
    except Exception as e:
        services.unavailable("RabbitMQ (with rabbitmq_management)", e)


@pytest.fixture
def database_url(postgres_template: None) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test."""
    name = services.clone_database()
    yield services.pg_url(name)
    services.drop_database(name)


@pytest.fixture
def vhost(rabbitmq_available: None) -> Iterator[str]:
    """A fresh RabbitMQ vhost for this test."""
    name = services.create_vhost()
    yield name
    services.delete_vhost(name)


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[ScriptableUpstream]:
    """The scriptable upstream, shared by the run and reset for each test."""
    server = ScriptableUpstream.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: ScriptableUpstream) -> ScriptableUpstream:
    """The upstream with no scripts and no recorded calls."""
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def job_queues() -> tuple[tuple[str, str], ...]:
    """The COURIER_JOB_QUEUES of a test's settings: none; a module overrides this fixture to
    move job types to other queues."""
    return ()


@pytest.fixture
def settings(
    database_url: str,
    vhost: str,
    upstream: ScriptableUpstream,
    job_queues: tuple[tuple[str, str], ...],
) -> Settings:
    """Settings for a test: its own database and vhost, fast retries, short leases."""
    return Settings(
        database_url=database_url,
        broker_url=services.amqp_url(vhost),
        rabbitmq_api_url=services.RABBIT_API,
        crm_url=upstream.crm_url,
        billing_url=upstream.billing_url,
        upstream_timeout_s=2,
        min_backoff_ms=50,
        max_backoff_ms=200,
        lease_s=3,
        reaper_interval_s=0.5,
        relay_interval_s=0.1,
        progress_interval_s=0.05,
        log_format="console",
        job_queues=job_queues,
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the test database."""
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions on the test database."""
    return make_sessionmaker(engine)


@pytest.fixture
def stack(settings: Settings, engine: Engine, sessions: sessionmaker[Session]) -> Iterator[Stack]:
    """The API on real PostgreSQL and RabbitMQ; start workers with `stack.start_worker()`."""
    s = build(settings, engine, sessions)
    yield s
    s.close()


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    """A migrated SQLite database (the embedded mode's store) for one test."""
    engine = make_engine(f"sqlite:///{tmp_path / 'courier.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def db_engine(request: pytest.FixtureRequest) -> Engine:
    """The store on each engine in turn: PostgreSQL, then the embedded mode's SQLite."""
    return request.getfixturevalue("engine" if request.param == "postgresql" else "sqlite_engine")
