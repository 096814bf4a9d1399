"""The outbox relay: publishes due jobs and missing dead letters from SQL to the broker.

It runs in every worker process; relays take turns (one process at a time), and a
message published twice is harmless: the claim lets only one run.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine

from delivery import relay
from delivery.outbox import Outbox
from middleware.periodic import Periodic
from store import fairness

#: The shortest wait between rounds, while the broker drains what the relay sends fast (see
#: `Relay.next_wait_s`).
HURRY_S = 0.05


class Relay(Periodic):
    """Publishes what SQL says is due and not yet in the broker.

    A tenant's backlog beyond its share reaches the broker only through the relay, so the
    relay's pace bounds how fast that backlog drains: at most a share per round. Rounds
    therefore come as often as the workers drain a quarter of a share, every `HURRY_S` at
    most and every interval at least, so a fast drain never waits for the relay and a slow
    one costs no extra rounds.
    """

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
        self._last_round = time.monotonic()
        self._rate = 0.0
        self._dead_letters_due = 0.0

    def tick(self) -> None:
        published = 0
        while (sent := self.publish_due()) == self.batch:
            published += sent
        published += sent
        began, self._last_round = self._last_round, time.monotonic()
        self._rate = published / max(self._last_round - began, HURRY_S)
        if self._last_round >= self._dead_letters_due:
            relay.copy_missing_dead_letters(self.engine, self.outbox)
            self._dead_letters_due = self._last_round + self.interval_s

    def next_wait_s(self) -> float:
        """About the time the workers take to drain a quarter of a share at the rate they
        took the last round's messages, within `HURRY_S` and the interval.

        The rate is what the last round published over the time since the round before: a
        round tops the broker up to the shares, so it publishes what was taken meanwhile.
        """
        if self._rate <= 0:
            return self.interval_s
        return min(self.interval_s, max(HURRY_S, self.share / 4 / self._rate))

    def publish_due(self) -> int:
        """Publish one batch of due jobs; returns how many were published."""
        return relay.publish_due(self.engine, self.outbox, limit=self.batch, share=self.share)
