"""Real PostgreSQL and RabbitMQ for tests: a fresh database and a fresh vhost per test."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pika
import psycopg
import pytest
from pika.adapters.blocking_connection import BlockingChannel
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


class RabbitTarget:
    """A RabbitMQ node as tests see it: AMQP for publishing, the management API for looking."""

    def __init__(self, amqp_base: str, api_url: str) -> None:
        self.amqp_base = amqp_base.rstrip("/")
        self.api_url = api_url.rstrip("/")

    def amqp_url(self, vhost: str) -> str:
        """The broker URL of a vhost."""
        return f"{self.amqp_base}/{quote(vhost, safe='')}"

    def api(self) -> httpx.Client:
        """A client for the management API."""
        base = httpx.URL(self.api_url)
        return httpx.Client(
            base_url=str(base.copy_with(username=None, password=None)),
            auth=(base.username or "guest", base.password or "guest"),
            timeout=10,
        )

    def create_vhost(self, prefix: str = "courier-test") -> str:
        """A fresh vhost that guest may use; returns its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        with self.api() as api:
            api.put(f"/api/vhosts/{quote(name, safe='')}").raise_for_status()
            api.put(
                f"/api/permissions/{quote(name, safe='')}/guest",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
        return name

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost and everything in it (best effort)."""
        with contextlib.suppress(httpx.HTTPError), self.api() as api:
            api.delete(f"/api/vhosts/{quote(name, safe='')}")

    def queue(self, vhost: str, name: str) -> dict | None:
        """The management API's view of a queue (its counts lag by a statistics interval)."""
        with self.api() as api:
            response = api.get(f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
            if response.status_code == 404:
                return None
            response.raise_for_status()
            return response.json()

    def peek(self, vhost: str, name: str) -> list[dict]:
        """A queue's ready messages, requeued so nothing changes (management API)."""
        with self.api() as api:
            response = api.post(
                f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}/get",
                json={"count": 10_000, "ackmode": "ack_requeue_true", "encoding": "auto"},
            )
            if response.status_code == 404:
                return []
            response.raise_for_status()
            return response.json()

    def ready_now(self, vhost: str, name: str) -> int:
        """Ready messages in a queue, asked of the queue itself over AMQP (no statistics lag)."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url(vhost)))
        try:
            channel = connection.channel()
            return channel.queue_declare(name, passive=True).method.message_count
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    @contextlib.contextmanager
    def channel(self, vhost: str) -> Iterator[BlockingChannel]:
        """A channel with publisher confirms on a connection of its own."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url(vhost)))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            yield channel
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    @staticmethod
    def send(
        channel: BlockingChannel,
        queue: str,
        body: bytes,
        *,
        priority: int | None = 0,
        headers: dict | None = None,
    ) -> None:
        """Publish raw bytes to a queue, persistent and confirmed, as any client could."""
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(delivery_mode=2, priority=priority, headers=headers),
            mandatory=True,
        )

    def publish(self, vhost: str, queue: str, body: bytes, **kwargs: Any) -> None:
        """Publish one message on a connection of its own."""
        with self.channel(vhost) as channel:
            self.send(channel, queue, body, **kwargs)


#: The machine's RabbitMQ, shared by every test run (each test has a vhost of its own).
SHARED_RABBITMQ = RabbitTarget(AMQP_BASE, RABBIT_API)


def create_vhost() -> str:
    """A fresh vhost on the shared RabbitMQ that guest may use; returns its name."""
    return SHARED_RABBITMQ.create_vhost()


def delete_vhost(name: str) -> None:
    """Delete a test vhost and everything in it."""
    SHARED_RABBITMQ.delete_vhost(name)


def amqp_url(vhost: str) -> str:
    """The broker URL of a vhost on the shared RabbitMQ."""
    return SHARED_RABBITMQ.amqp_url(vhost)


def queue_messages(vhost: str, queue: str) -> list[dict]:
    """Peek at a queue's messages (requeued, so nothing changes) through the management API."""
    return SHARED_RABBITMQ.peek(vhost, queue)
