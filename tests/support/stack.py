"""An in-process Courier on real PostgreSQL and RabbitMQ: API through falcon's TestClient, workers
through `dramatiq.Worker`, both wired exactly as the entry points wire them.

For the real `courier` processes, see `tests.support.deployment`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import dramatiq
import pika
from falcon import testing
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from courier.broker import (
    WorkerStack,
    publishing_broker,
    start_in_process_worker,
    worker_stack,
)
from courier.settings import Settings
from courier.wsgi import app_for
from store import tokens
from store.db import make_sessionmaker
from store.models import Attempt, Job
from tests.support import services
from tests.support.harness import Harness
from tests.support.polling import wait_for
from tests.support.times import LATER


@dataclass
class Stack(Harness):
    """The pieces of a running Courier, plus helpers to drive and inspect it."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    api_broker: dramatiq.Broker
    client: testing.TestClient
    workers: list[tuple[WorkerStack, dramatiq.Worker]] = field(default_factory=list)

    def token(self, tenant: str = "acme", role: str = "client") -> dict[str, str]:
        """Authorization headers for a new token."""
        with self.sessions.begin() as session:
            secret = tokens.create(session, tenant=tenant, role=role, name=f"test {role}")
        return {"Authorization": f"Bearer {secret}"}

    def post(self, path: str, body: Any, headers: Mapping[str, str]) -> tuple[int, str]:
        response = self.client.simulate_post(path, json=body, headers=dict(headers))
        return response.status_code, response.text

    def start_worker(
        self, *, threads: int = 4, queues: set[str] | None = None, **changes: Any
    ) -> WorkerStack:
        """Start an in-process worker (its own broker connection and middleware) consuming
        `queues` (default: all); `changes` are settings."""
        settings = self.settings.replace(**changes) if changes else self.settings
        stack = worker_stack(settings, self.engine)
        worker = start_in_process_worker(stack, threads=threads, queues=queues)
        self.workers.append((stack, worker))
        return stack

    def stop_workers(self) -> None:
        """Stop every worker started here."""
        for stack, worker in self.workers:
            worker.stop(timeout=10_000)
            stack.upstreams.close()
            stack.broker.close()
        self.workers.clear()

    def job(self, job_id: str | uuid.UUID) -> Job:
        """The job's row as it is now."""
        with self.sessions() as session:
            return session.get_one(Job, uuid.UUID(str(job_id)))

    def attempts(self, job_id: str | uuid.UUID) -> list[Attempt]:
        """The job's attempt rows in order."""
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Attempt)
                    .where(Attempt.job_id == uuid.UUID(str(job_id)))
                    .order_by(Attempt.number)
                )
            )

    def status_of(self, job: Job) -> str:
        return job.status

    @property
    def vhost(self) -> str:
        """The RabbitMQ vhost of this stack (on the shared node)."""
        return unquote(self.settings.broker_url.rsplit("/", 1)[1])

    def wait_acknowledged(self, count: int, queue: str = "sync", timeout: float = 20.0) -> None:
        """Wait until `queue` has had `count` deliveries acknowledged in all (rejected or
        dead-lettered ones do not count) and holds nothing ready or unacknowledged.

        RabbitMQ's management API says so; its figures lag by up to a statistics interval.
        """
        seen: list[dict | None] = [None]

        def acknowledged() -> bool:
            seen[0] = info = services.SHARED_RABBITMQ.queue(self.vhost, queue)
            return (
                info is not None
                and info.get("message_stats", {}).get("ack", 0) >= count
                and info.get("messages_ready") == info.get("messages_unacknowledged") == 0
            )

        def what() -> str:
            info = seen[0] or {}
            figures = {k: info.get(k) for k in ("messages_ready", "messages_unacknowledged")}
            acked = info.get("message_stats", {}).get("ack", 0)
            return f"{count} acknowledged on {queue} (seen {acked} acknowledged, {figures})"

        wait_for(acknowledged, timeout=timeout, interval=0.2, what=what)

    def ready(self, queue: str) -> int:
        """Ready messages in `queue` now, over AMQP (0 while nothing has declared it)."""
        try:
            return services.SHARED_RABBITMQ.ready_now(self.vhost, queue)
        except pika.exceptions.ChannelClosedByBroker:
            return 0

    def message_counts(self, queue: str = "sync") -> dict[str, int]:
        """Ready messages in the queue, its delay queue and its dead-letter queue, asked of the
        queues themselves over AMQP (exact, no statistics lag; unacknowledged ones not counted)."""
        target = services.SHARED_RABBITMQ
        return {q: target.ready_now(self.vhost, q) for q in (queue, f"{queue}.DQ", f"{queue}.XQ")}

    def close(self) -> None:
        """Stop workers and release connections."""
        self.stop_workers()
        self.api_broker.close()
        self.engine.dispose()


def build(settings: Settings, engine: Engine, sessions: sessionmaker[Session]) -> Stack:
    """A stack whose API publishes to the settings' broker."""
    api_broker = publishing_broker(settings)
    app = app_for(settings, broker=api_broker, sessions=sessions)
    return Stack(settings, engine, sessions, api_broker, testing.TestClient(app))


def embedded_client(engine: Engine) -> testing.TestClient:
    """The API on a store of `courier dev`'s kind (SQLite), with a broker that keeps messages."""
    from dramatiq.brokers.stub import StubBroker

    settings = Settings(database_url=str(engine.url), broker_url="memory://")
    return testing.TestClient(
        app_for(settings, broker=StubBroker(), sessions=make_sessionmaker(engine))
    )


def embedded_token(engine: Engine, tenant: str = "acme") -> dict[str, str]:
    """Authorization headers of a new client token in the store of `embedded_client`."""
    with make_sessionmaker(engine).begin() as session:
        secret = tokens.create(session, tenant=tenant, role="client", name="test client")
    return {"Authorization": f"Bearer {secret}"}


def submit_waiting(client: testing.TestClient, headers: Mapping[str, str], entity_id: str) -> str:
    """Submit a customer_sync scheduled far ahead, so it stays queued; returns its id."""
    body = {"type": "customer_sync", "entity_id": entity_id, "run_at": LATER}
    response = client.simulate_post("/v1/jobs", json=body, headers=dict(headers))
    assert response.status_code == 202, response.text
    return response.json["id"]
