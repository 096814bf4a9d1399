"""The relay's two rounds: publish due jobs, and copy missing dead letters, from SQL.

No transaction is open while the broker is asked: RabbitMQ may keep a publisher waiting
(a memory or disk alarm), and rows locked meanwhile would hold up the workers' claims.
The relays of many processes take turns instead (`store.turns`).
"""

from __future__ import annotations

import logging

from dramatiq.errors import BrokerConnectionError
from sqlalchemy import Engine

from delivery import dead_letters
from delivery.outbox import Outbox, message_for
from store import fairness, outbox, transitions, turns

log = logging.getLogger(__name__)


def publish_due(
    engine: Engine, out: Outbox, *, limit: int, share: int = fairness.DEFAULT_SHARE
) -> int:
    """Publish one batch of due jobs, each tenant up to its `share` of a queue in the broker;
    returns how many were published."""
    with turns.turn(engine, "relay") as db:
        if db is None:
            return 0
        with db.begin():
            due = outbox.read_due(db, limit=limit, share=share)
        published = out.publish(due)
    if published:
        log.info("relay published %d jobs", published)
    return published


def copy_missing_dead_letters(engine: Engine, out: Outbox, *, limit: int = 100) -> int:
    """Put copies of dead jobs that are missing from their dead-letter queues there."""
    with turns.turn(engine, "relay") as db:
        if db is None:
            return 0
        with db.begin():
            missing = outbox.read_missing_dead_letters(db, limit=limit)
        copied = []
        for dead in missing:
            job = dead.message
            headers = dead_letters.headers_for(str(job.job_id), dead.error_type, job.attempts)
            try:
                dead_letters.publish(out.broker, message_for(job), headers)
            except BrokerConnectionError:
                log.warning("broker unavailable; dead letters left for the next round")
                break
            copied.append(job.job_id)
        with db.begin():
            transitions.mark_dead_lettered(db, copied)
    return len(copied)
