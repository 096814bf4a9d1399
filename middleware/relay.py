"""The outbox relay: publishes due jobs and missing dead letters from SQL to the broker.

It runs in every worker process; relays take turns (one process at a time), and a
message published twice is harmless: the claim lets only one run.
"""

from __future__ import annotations

from sqlalchemy import Engine

from delivery import relay
from delivery.outbox import Outbox
from middleware.periodic import Periodic
from store import fairness


class Relay(Periodic):
    """Publishes what SQL says is due and not yet in the broker."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        engine: Engine,
        interval_s: float,
        batch: int = 500,
        share: int = fairness.DEFAULT_SHARE,
    ) -> None:
        super().__init__()
        self.outbox = outbox
        self.engine = engine
        self.interval_s = interval_s
        self.batch = batch
        self.share = share

    def tick(self) -> None:
        while self.publish_due() == self.batch:
            pass
        relay.copy_missing_dead_letters(self.engine, self.outbox)

    def publish_due(self) -> int:
        """Publish one batch of due jobs; returns how many were published."""
        return relay.publish_due(self.engine, self.outbox, limit=self.batch, share=self.share)
