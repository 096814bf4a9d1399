"""Heartbeats: renew the leases of the attempts this worker process is running."""

from __future__ import annotations

from dramatiq import Broker

from middleware.ledger import Ledger
from middleware.periodic import Periodic
from store import ledger as store_ledger


class Heartbeat(Periodic):
    """Every third of a lease, extends the lease of every attempt still running here."""

    def __init__(self, *, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger
        self.interval_s = max(ledger.lease_s / 3, 0.2)

    def before_worker_shutdown(self, broker: Broker, worker: object) -> None:
        # Attempts still running during a graceful shutdown keep their leases until they end.
        pass

    def after_worker_shutdown(self, broker: Broker, worker: object) -> None:
        self.stop()

    def tick(self) -> None:
        claims = self.ledger.running_claims()
        if claims:
            with self.ledger.sessions.begin() as session:
                store_ledger.renew_leases(session, claims, lease_s=self.ledger.lease_s)
