"""The reconciler: SQL is the record, and what the broker lost is published again from it.

It runs in every worker process; a lock per queue in SQL lets one process reconcile a
queue at a time (see `delivery.reconcile`).
"""

from __future__ import annotations

from sqlalchemy import Engine

from delivery import reconcile
from delivery.outbox import Outbox
from middleware.periodic import Periodic


class Reconciler(Periodic):
    """Every `interval_s`, compares each declared queue with SQL and republishes what it lost."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        engine: Engine,
        held: reconcile.HeldCounts,
        interval_s: float,
        settle_s: float,
    ) -> None:
        super().__init__()
        self.outbox = outbox
        self.engine = engine
        self.held = held
        self.interval_s = interval_s
        self.settle_s = settle_s

    def tick(self) -> None:
        queues = self.outbox.broker.get_declared_queues()
        reconcile.reconcile(self.engine, self.outbox, queues, self.held, settle_s=self.settle_s)
