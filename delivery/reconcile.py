"""One reconcile round: publish again what SQL holds as waiting and the broker no longer has.

Per queue, the broker's count is read first and SQL's second, counting only jobs published
longer ago than the settle time: a message published between the two reads, or too recently
for the management API's statistics (the unacknowledged count comes from them), is in
neither number. A healthy queue then never shows
more settled jobs in SQL than messages in the broker; a surplus is messages the broker lost
(a purge, a deleted queue or vhost, a message acknowledged after a failed claim), and that many
of the oldest jobs are published again. A copy of a message that was not lost after all is
refused by the claim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from delivery.outbox import Outbox
from store import reconciliation

log = logging.getLogger(__name__)

#: `{queue: messages held}` for the queues asked, None for a count that is unknown.
HeldCounts = Callable[[list[str]], dict[str, int | None]]


def reconcile(
    engine: Engine,
    out: Outbox,
    queues: Iterable[str],
    held: HeldCounts,
    *,
    settle_s: float,
    batch: int = 500,
) -> dict[str, int]:
    """Republish, per queue, the jobs whose messages the broker lost; returns how many."""
    names = sorted(queues)
    counts = held(names)  # first: see the module's docstring
    republished = {}
    for queue in names:
        count = counts.get(queue)
        if count is None:
            log.debug("reconcile skipped for queue %s: its message count is unknown", queue)
            continue
        republished[queue] = _reconcile_queue(
            engine, out, queue, count, settle_s=settle_s, batch=batch
        )
    return republished


def _reconcile_queue(
    engine: Engine, out: Outbox, queue: str, held: int, *, settle_s: float, batch: int
) -> int:
    with engine.connect() as db:
        # Held for the whole round, so that no other process counts the same loss meanwhile.
        locked = reconciliation.try_lock(db, queue)
        db.commit()
        if not locked:
            return 0
        try:
            waiting = reconciliation.count_settled(db, queue, settle_s=settle_s)
            running = reconciliation.count_running(db, queue, settle_s=settle_s)
            db.commit()
            missing = waiting - max(held - running, 0)
            republished = 0
            while republished < missing:
                with db.begin():
                    jobs = reconciliation.unpublish_oldest(
                        db, queue, settle_s=settle_s, limit=min(batch, missing - republished)
                    )
                    sent = out.publish(jobs, db=db)
                republished += sent
                if sent < batch:
                    break  # none left, or the broker is down and the relay has them now
        finally:
            reconciliation.unlock(db, queue)
            db.commit()
    if republished:
        log.warning(
            "reconciler republished %d job(s) of queue %s: %d waiting in SQL, %d in the broker",
            republished,
            queue,
            waiting,
            max(held - running, 0),
            extra={"queue": queue, "republished": republished},
        )
    return republished
