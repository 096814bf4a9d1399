"""Purging a queue: empty the broker's queue, then cancel its waiting jobs in SQL.

The order is what makes a purge lose nothing it does not cancel. The SQL statement cancels
every waiting job committed before it began, wherever that job's message is (a copy left
anywhere is refused at its claim). A job committed after the statement began is published
after its commit, so after the broker was emptied: its message survives and it runs. The
other order would empty the broker of messages of jobs committed just after the cancel,
which would then wait for the reconciler.

Used by `POST /v1/queues/{queue}/purge` and `courier purge`.
"""

from __future__ import annotations

import logging

from dramatiq import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed
from sqlalchemy.orm import Session, sessionmaker

from delivery import bands, channels, quorum
from store import actions

log = logging.getLogger(__name__)


def purge(
    sessions: sessionmaker[Session],
    broker: Broker | None,
    queue: str,
    *,
    actor: str,
    reason: str | None = None,
) -> int:
    """Empty `queue` in the broker, then cancel its queued and retrying jobs; returns how many
    jobs were cancelled.

    Without a `broker` (the in-memory one lives in another process), or when the broker
    cannot be reached, the jobs are still cancelled: their messages, wherever they are, are
    refused when a worker claims them.
    """
    if broker is not None:
        try:
            removed = empty(broker, queue)
        except ConnectionClosed as e:
            log.warning("purge of %s: broker unreachable, cancelling in SQL only (%s)", queue, e)
        else:
            log.info("purge of %s: %d message(s) removed from the broker", queue, removed)
    with sessions.begin() as session:
        cancelled = actions.purge_queue(session, queue, actor=actor, reason=reason)
    log.info("purge of %s: %d job(s) cancelled by %s", queue, cancelled, actor)
    return cancelled


def empty(broker: Broker, queue: str) -> int:
    """Remove every ready message from the broker's `queue`; returns how many.

    Only `queue` itself, all its bands on quorum queues: Courier never publishes to its
    delay queue (retries wait in SQL), and the dead-letter queue holds dead jobs, which a
    purge does not touch. Messages a worker already holds unacknowledged stay with it;
    their claim decides.
    """
    if isinstance(broker, StubBroker):
        held = broker.queues.get(queue)
        if held is None:
            return 0
        count = held.qsize()
        broker.flush(queue)
        return count
    if not isinstance(broker, RabbitmqBroker):
        raise TypeError(f"purging is not supported on {type(broker).__name__}")
    names = bands.names(queue, quorum.queue_type(broker))
    if len(names) > 1:
        # Every band exists, so that a missing one does not end the purge of the others.
        broker.declare_queue(queue, ensure=True)
    removed = 0
    with channels.own_channel(broker) as channel:
        for name in names:
            removed += channel.queue_purge(name).method.message_count or 0
    return removed
