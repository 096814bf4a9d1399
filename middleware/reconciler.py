"""The reconciler: SQL is the record, and what the broker lost is published again from it.

It runs in every worker process; a turn per queue (`store.turns`) lets one process reconcile a
queue at a time (see `delivery.reconcile`).
"""

from __future__ import annotations

import dramatiq
from sqlalchemy import Engine

from delivery import reconcile
from middleware.periodic import Periodic

#: The shortest wait between rounds while a surplus waits to be seen again.
MIN_WAIT_S = 1.0


class Reconciler(Periodic):
    """Every `interval_s`, compares each declared queue with SQL and returns what the broker
    lost to the outbox, which the relay publishes again. A surplus seen is looked at again as
    soon as the settle time has passed."""

    def __init__(
        self,
        *,
        broker: dramatiq.Broker,
        engine: Engine,
        held: reconcile.HeldCounts,
        interval_s: float,
        settle_s: float,
    ) -> None:
        super().__init__()
        self.broker = broker
        self.engine = engine
        self.held = held
        self.interval_s = interval_s
        self.settle_s = settle_s
        self.surpluses = reconcile.Surpluses(settle_s)

    def tick(self) -> None:
        queues = self.broker.get_declared_queues()
        reconcile.reconcile(
            self.engine, queues, self.held, settle_s=self.settle_s, surpluses=self.surpluses
        )

    def next_wait_s(self) -> float:
        due = self.surpluses.next_round_in_s()
        return self.interval_s if due is None else min(self.interval_s, max(MIN_WAIT_S, due))
