"""One reconcile round: publish again what SQL holds as waiting and the broker no longer has.

Per queue, the broker's count is read first and SQL's second, counting only jobs published
longer ago than the settle time: a message published between the two reads, or too recently
for the management API's statistics (the unacknowledged count comes from them), is in
neither number. The unacknowledged count also lags the deliveries by that delay: a worker
that just filled its prefetch window holds messages that are in neither the live ready count
nor the statistics yet, so a surplus counts only when it is seen again a settle time later
(`Surpluses`). A healthy queue then does not show more settled jobs in SQL than messages in
the broker that far apart; a surplus seen again is messages the broker lost (a purge, a
deleted queue or vhost, a message acknowledged after a failed claim), and that many of the
oldest jobs go back to the outbox, for the relay to publish again. A copy of a message that
was not lost after all is refused by the claim. No transaction is open while the broker is
asked (the relay publishes), as a blocked broker may keep a publisher waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from delivery import bands
from store import reconciliation, turns

log = logging.getLogger(__name__)

#: A first sighting of a surplus not seen again within this many times the wait is forgotten.
FORGOTTEN_AFTER = 3

#: `{queue: messages held}` for the queues asked, None for a count that is unknown.
HeldCounts = Callable[[list[str]], dict[str, int | None]]


class Surpluses:
    """Per queue, when a surplus of SQL over the broker was first seen: a surplus counts once
    it is seen again at least `again_after_s` later, by when the statistics have caught up.

    Rounds in between may see none: jobs just published or just claimed count in the broker
    and not yet in SQL, and hide a loss of as many while a queue churns. A first sighting not
    seen again within `FORGOTTEN_AFTER` times `again_after_s` is forgotten.
    """

    def __init__(
        self, again_after_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.again_after_s = again_after_s
        self._clock = clock
        self._first_seen: dict[str, float] = {}

    def counted(self, queue: str, surplus: int) -> int:
        """The part of this round's `surplus` of `queue` that counts: 0 unless it is seen again."""
        if surplus <= 0:
            return 0
        now = self._clock()
        first = self._first_seen.get(queue)
        if first is None or self._forgotten(first, now):
            first = self._first_seen[queue] = now
        if now - first < self.again_after_s:
            return 0
        del self._first_seen[queue]  # acted on; what is left over is a new sighting
        return surplus

    def next_round_in_s(self) -> float | None:
        """When the next round should look again for a surplus to be seen again; None if none
        is pending: at its `again_after_s`, then every quarter of it."""
        now = self._clock()
        pending = [f for f in self._first_seen.values() if not self._forgotten(f, now)]
        if not pending:
            return None
        return max(min(pending) + self.again_after_s - now, self.again_after_s / 4)

    def _forgotten(self, first_seen: float, now: float) -> bool:
        return now - first_seen > FORGOTTEN_AFTER * self.again_after_s


def reconcile(
    engine: Engine,
    queues: Iterable[str],
    held: HeldCounts,
    *,
    settle_s: float,
    surpluses: Surpluses,
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
        returned[queue] = _reconcile_queue(
            engine, queue, count, settle_s=settle_s, surpluses=surpluses, batch=batch
        )
    return returned


def _reconcile_queue(
    engine: Engine, queue: str, held: int, *, settle_s: float, surpluses: Surpluses, batch: int
) -> int:
    # One process per queue at a time, so that no other counts the same loss meanwhile.
    with turns.turn(engine, f"reconcile:{queue}") as db:
        if db is None:
            return 0
        with db.begin():
            waiting = reconciliation.count_settled(db, queue, settle_s=settle_s)
            running = reconciliation.count_running(db, queue, settle_s=settle_s)
        in_broker = max(held - running, 0)
        lost = surpluses.counted(queue, waiting - in_broker)
        returned = 0
        while returned < lost:
            wanted = min(batch, lost - returned)
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
