"""Real PostgreSQL and RabbitMQ for tests: a fresh database and a fresh vhost per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg import sql

PG_ADMIN = os.environ.get("COURIER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("COURIER_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
RABBIT_API = os.environ.get("COURIER_TEST_RABBITMQ_API", "http://guest:guest@127.0.0.1:15672")
#: One template per test run, so that runs side by side on one server never share one.
TEMPLATE = f"courier_test_template_{os.getpid()}"


def unavailable(what: str, error: Exception) -> None:
    """Fail in CI, skip elsewhere, with the reason."""
    reason = f"{what} is not reachable ({type(error).__name__}: {error}); run `make services`"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def pg_url(database: str) -> str:
    """A SQLAlchemy URL for a database on the test server."""
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"


def admin() -> psycopg.Connection:
    """An autocommit connection for CREATE/DROP DATABASE."""
    return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)


def create_template() -> None:
    """(Re)create the migrated template database that every test database is cloned from."""
    from store import migrate
    from store.db import make_engine

    with admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    engine = make_engine(pg_url(TEMPLATE))
    migrate.upgrade(engine)
    engine.dispose()


def drop_template() -> None:
    """Drop this run's template database."""
    drop_database(TEMPLATE)


def clone_database() -> str:
    """A new database cloned from the template; returns its name."""
    name = f"courier_test_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    return name


def drop_database(name: str) -> None:
    """Drop a test database, disconnecting whoever is still on it."""
    with admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def rabbit_api() -> httpx.Client:
    """A client for the RabbitMQ management API."""
    base = httpx.URL(RABBIT_API)
    return httpx.Client(
        base_url=str(base.copy_with(username=None, password=None)),
        auth=(base.username or "guest", base.password or "guest"),
        timeout=10,
    )


def create_vhost() -> str:
    """A fresh vhost that guest may use; returns its name."""
    name = f"courier-test-{uuid.uuid4().hex[:12]}"
    with rabbit_api() as api:
        api.put(f"/api/vhosts/{quote(name, safe='')}").raise_for_status()
        api.put(
            f"/api/permissions/{quote(name, safe='')}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
    return name


def delete_vhost(name: str) -> None:
    """Delete a test vhost and everything in it."""
    with rabbit_api() as api:
        api.delete(f"/api/vhosts/{quote(name, safe='')}")


def amqp_url(vhost: str) -> str:
    """The broker URL of a vhost."""
    return f"{AMQP_BASE}/{quote(vhost, safe='')}"


def queue_messages(
    vhost: str, queue: str, *, api_client: Callable[[], httpx.Client] = rabbit_api
) -> list[dict]:
    """Peek at a queue's messages (requeued, so nothing changes) through the management API."""
    with api_client() as api:
        response = api.post(
            f"/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/get",
            json={"count": 10_000, "ackmode": "ack_requeue_true", "encoding": "auto"},
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return response.json()
