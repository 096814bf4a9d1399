"""/healthz and /readyz: is the process up, and can it reach its database and broker."""

from __future__ import annotations

import dramatiq
import falcon
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import HealthOut, ReadyOut
from api.spec import operation


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
        self._broker = broker

    @operation(auth=None, responses={200: ReadyOut, 503: ReadyOut})
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Readiness: 200 when the database and the broker answer, else 503 naming which."""
        checks = {"database": self._database(), "broker": self._broker_ok()}
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

    def _broker_ok(self) -> bool:
        if not isinstance(self._broker, RabbitmqBroker):
            return True  # the in-process broker is up while the process is
        try:
            # A fresh connection: the broker's cached one may be dead without knowing it yet.
            connection = pika.BlockingConnection(self._broker.parameters)
            connection.close()
            return True
        except Exception:
            return False
