"""One reconcile round: publish again what SQL holds as waiting and the broker no longer has.

Per queue, the broker's count is read first and SQL's second, counting only jobs published
longer ago than the settle time: a message published between the two reads, or too recently
for the management API's statistics (the unacknowledged count comes from them), is in
neither number. A healthy queue then never shows
more settled jobs in SQL than messages in the broker; a surplus is messages the broker lost
(a purge, a deleted queue or vhost, a message acknowledged after a failed claim), and that many
of the oldest jobs go back to the outbox, for the relay to publish again. A copy of a message
that was not lost after all is refused by the claim. No transaction is open while the broker
is asked (the relay publishes), as a blocked broker may keep a publisher waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from delivery import bands
from store import reconciliation, turns

log = logging.getLogger(__name__)

#: `{queue: messages held}` for the queues asked, None for a count that is unknown.
HeldCounts = Callable[[list[str]], dict[str, int | None]]


def reconcile(
    engine: Engine,
    queues: Iterable[str],
    held: HeldCounts,
    *,
    settle_s: float,
    batch: int = 500,
) -> dict[str, int]:
    """Return to the outbox, per queue, the jobs whose messages the broker lost; returns how
    many. The relay publishes them (its next round, within its interval)."""
    # A priority band's messages are its Courier queue's (delivery.bands).
    names = sorted({bands.base_of(queue) for queue in queues})
    counts = held(names)  # first: see the module's docstring
    returned = {}
    for queue in names:
        count = counts.get(queue)
        if count is None:
            log.debug("reconcile skipped for queue %s: its message count is unknown", queue)
            continue
        returned[queue] = _reconcile_queue(engine, queue, count, settle_s=settle_s, batch=batch)
    return returned


def _reconcile_queue(engine: Engine, queue: str, held: int, *, settle_s: float, batch: int) -> int:
    # One process per queue at a time, so that no other counts the same loss meanwhile.
    with turns.turn(engine, f"reconcile:{queue}") as db:
        if db is None:
            return 0
        with db.begin():
            waiting = reconciliation.count_settled(db, queue, settle_s=settle_s)
            running = reconciliation.count_running(db, queue, settle_s=settle_s)
        in_broker = max(held - running, 0)
        returned = 0
        while returned < waiting - in_broker:
            wanted = min(batch, waiting - in_broker - returned)
            with db.begin():
                got = reconciliation.unpublish_oldest(db, queue, settle_s=settle_s, limit=wanted)
            returned += got
            if got < wanted:
                break  # the rest were claimed meanwhile
    if returned:
        log.warning(
            "reconciler returned %d job(s) of queue %s to the outbox: %d waiting in SQL, "
            "%d in the broker",
            returned,
            queue,
            waiting,
            in_broker,
            extra={"queue": queue, "republished": returned},
        )
    return returned
