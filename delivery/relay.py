"""The relay's two rounds: publish due jobs, and copy missing dead letters, from SQL.

Rows are locked with SKIP LOCKED, so the relays of many processes share the work.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from delivery import dead_letters
from delivery.outbox import Outbox, message_for
from store import outbox, transitions

log = logging.getLogger(__name__)


def publish_due(engine: Engine, out: Outbox, *, limit: int) -> int:
    """Publish one batch of due jobs; returns how many were published."""
    with engine.begin() as db:
        published = out.publish(outbox.lock_due(db, limit=limit), db=db)
    if published:
        log.info("relay published %d jobs", published)
    return published


def copy_missing_dead_letters(engine: Engine, out: Outbox, *, limit: int = 100) -> int:
    """Put copies of dead jobs that are missing from their dead-letter queues there."""
    with engine.begin() as db:
        missing = outbox.lock_missing_dead_letters(db, limit=limit)
        for dead in missing:
            job = dead.message
            headers = dead_letters.headers_for(str(job.job_id), dead.error_type, job.attempts)
            dead_letters.publish(out.broker, message_for(job), headers)
        transitions.mark_dead_lettered(db, [dead.message.job_id for dead in missing])
    return len(missing)
