"""/healthz and /readyz: is the process up, and can it reach its database and broker."""

from __future__ import annotations

import copy

import dramatiq
import falcon
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import HealthOut, ReadyOut
from api.spec import operation
from background.recent import Recent

#: How long one broker probe may take in all (connect and AMQP handshake, every node):
#: /readyz answers within a second even when the broker's address swallows every packet.
PROBE_BUDGET_S = 0.6
#: How long a probe's answer stands: however often /readyz is asked, a process opens at
#: most one probe connection per this interval.
PROBE_MAX_AGE_S = 2.0


class Health:
    """200 while the process is up."""

    public = True

    @operation(auth=None, responses={200: HealthOut})
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Liveness: 200 while the process is up."""
        resp.media = {"status": "ok"}


class Ready:
    """200 when the database and the broker answer, else 503 naming what failed."""

    public = True

    def __init__(self, sessions: sessionmaker[Session], broker: dramatiq.Broker) -> None:
        self._sessions = sessions
        self._broker = Recent(BrokerProbe(broker), max_age_s=PROBE_MAX_AGE_S)

    @operation(auth=None, responses={200: ReadyOut, 503: ReadyOut})
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Readiness: 200 when the database and the broker answer, else 503 naming which."""
        checks = {"database": self._database(), "broker": self._broker.get()}
        failed = [name for name, ok in checks.items() if not ok]
        resp.status = falcon.HTTP_503 if failed else falcon.HTTP_200
        resp.media = {
            "title": "Not ready" if failed else "Ready",
            "description": f"unavailable: {', '.join(failed)}"
            if failed
            else "all dependencies answer",
            "checks": {name: "ok" if ok else "unavailable" for name, ok in checks.items()},
        }

    def _database(self) -> bool:
        try:
            with self._sessions() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception:
            return False


class BrokerProbe:
    """Whether the broker accepts an AMQP connection within `PROBE_BUDGET_S`.

    A fresh connection, because the publishing broker's cached one may be dead without
    knowing it yet; with timeouts short enough that an unreachable node fails fast rather
    than after pika's defaults (10 s to connect, 15 s for the handshake).
    """

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._parameters = None
        if isinstance(broker, RabbitmqBroker):
            given = broker.parameters
            nodes = list(given) if isinstance(given, list | tuple) else [given]
            self._parameters = [_short(node, PROBE_BUDGET_S / len(nodes)) for node in nodes]

    def __call__(self) -> bool:
        if self._parameters is None:
            return True  # the in-process broker is up while the process is
        try:
            pika.BlockingConnection(self._parameters).close()
            return True
        except Exception:
            return False


def _short(node: pika.connection.Parameters, budget_s: float) -> pika.connection.Parameters:
    node = copy.copy(node)
    node.connection_attempts = 1
    node.retry_delay = 0
    node.socket_timeout = budget_s / 2
    node.stack_timeout = budget_s
    return node
