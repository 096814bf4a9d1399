"""The outbox relay: publishes due jobs and pending dead letters from SQL to the broker.

It runs in every worker process; rows are locked with SKIP LOCKED so relays share the work.
A message published twice is harmless: the claim lets only one run.
"""

from __future__ import annotations

import logging

from dramatiq import Broker
from dramatiq.errors import BrokerConnectionError
from sqlalchemy.orm import Session, sessionmaker

from middleware.periodic import Periodic
from store import dead_letter_queue, ledger, outbox, publisher

log = logging.getLogger(__name__)


class Relay(Periodic):
    """Publishes what SQL says is due and not yet in the broker."""

    def __init__(
        self,
        *,
        broker: Broker,
        sessions: sessionmaker[Session],
        interval_s: float,
        batch: int = 500,
    ) -> None:
        super().__init__()
        self.broker = broker
        self.sessions = sessions
        self.interval_s = interval_s
        self.batch = batch

    def tick(self) -> None:
        while self.publish_due() == self.batch:
            pass
        self.publish_dead_letters()

    def publish_due(self) -> int:
        """Publish one batch of due jobs; returns how many were published."""
        with self.sessions.begin() as session:
            due = outbox.lock_due(session, limit=self.batch)
            try:
                publisher.send(self.broker, [outbox.message_for(p) for p in due])
            except BrokerConnectionError:
                log.warning("broker unavailable; %d due job(s) wait for it", len(due))
                return 0
            outbox.mark_published(session, due)
        if due:
            log.info("relay published %d jobs", len(due))
        return len(due)

    def publish_dead_letters(self) -> None:
        """Put copies of dead jobs that are missing from the dead-letter queue there."""
        with self.sessions.begin() as session:
            for pending, attempts, error_type in outbox.lock_undead_lettered(session, limit=100):
                message = outbox.message_for(pending)
                headers = dead_letter_queue.headers_for(str(pending.job_id), error_type, attempts)
                dead_letter_queue.publish(self.broker, message, headers)
                ledger.mark_dead_lettered(session, pending.job_id)
