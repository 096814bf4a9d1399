"""Heartbeats: renew the leases of the attempts this worker process is running."""

from __future__ import annotations

from dramatiq import Broker

from middleware.attempts import Attempts
from middleware.periodic import Periodic
from store import transitions


class Heartbeat(Periodic):
    """Every third of a lease, extends the lease of every attempt still running here."""

    def __init__(self, *, attempts: Attempts) -> None:
        super().__init__()
        self.attempts = attempts
        self.interval_s = max(attempts.lease_s / 3, 0.2)

    def before_worker_shutdown(self, broker: Broker, worker: object) -> None:
        # Attempts still running during a graceful shutdown keep their leases until they end.
        pass

    def after_worker_shutdown(self, broker: Broker, worker: object) -> None:
        self.stop()

    def tick(self) -> None:
        running = [(c.job_id, c.number) for c in self.attempts.running_claims()]
        if running:
            with self.attempts.engine.begin() as db:
                transitions.renew_leases(db, running, lease_s=self.attempts.lease_s)
