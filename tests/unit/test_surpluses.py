"""A surplus of SQL over the broker counts only when it is seen again a settle time later: the
management API's unacknowledged count lags a worker's deliveries, so a prefetch window just
filled looks lost until the statistics catch up."""

from __future__ import annotations

from delivery.reconcile import FORGOTTEN_AFTER, Surpluses
from middleware.reconciler import MIN_WAIT_S, Reconciler


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def surpluses(again_after_s: float = 10.0) -> tuple[Surpluses, Clock]:
    clock = Clock()
    return Surpluses(again_after_s, clock=clock), clock


def test_a_surplus_not_seen_again_counts_for_nothing():
    seen, clock = surpluses()
    assert seen.counted("sync", 2) == 0  # a window filled faster than the statistics show
    for _ in range(FORGOTTEN_AFTER * 10 + 1):
        clock.now += 1
        assert seen.counted("sync", 0) == 0  # the statistics caught up
    assert seen.next_round_in_s() is None  # forgotten
    clock.now += 1
    assert seen.counted("sync", 2) == 0  # a new sighting, not the old one seen again


def test_a_surplus_seen_again_counts_as_it_is_then():
    seen, clock = surpluses()
    assert seen.counted("sync", 5) == 0
    assert seen.next_round_in_s() == 10.0
    clock.now += 4
    assert seen.counted("sync", 0) == 0  # jobs just published or claimed hide it a while
    assert seen.next_round_in_s() == 6.0
    clock.now += 6
    assert seen.counted("sync", 3) == 3
    assert seen.next_round_in_s() is None  # acted on
    assert seen.counted("sync", 1) == 0  # what is left over is a new sighting


def test_a_surplus_seen_again_after_it_was_forgotten_must_be_seen_once_more():
    seen, clock = surpluses()
    seen.counted("sync", 3)
    clock.now += FORGOTTEN_AFTER * 10 + 1
    assert seen.counted("sync", 3) == 0
    clock.now += 10
    assert seen.counted("sync", 3) == 3


def test_queues_are_watched_apart():
    seen, clock = surpluses()
    seen.counted("sync", 3)
    clock.now += 5
    seen.counted("low", 7)
    clock.now += 5
    assert seen.counted("low", 7) == 0
    assert seen.counted("sync", 3) == 3
    assert seen.next_round_in_s() == 5.0


def test_the_reconciler_looks_again_once_the_wait_is_over_and_then_every_quarter_of_it():
    reconciler = Reconciler(broker=None, engine=None, held=dict.fromkeys, interval_s=60, settle_s=8)
    assert reconciler.next_wait_s() == 60
    clock = Clock()
    reconciler.surpluses = Surpluses(8, clock=clock)
    reconciler.surpluses.counted("sync", 2)
    assert reconciler.next_wait_s() == 8
    clock.now += 8  # that round went to another process, or saw the loss hidden
    assert reconciler.next_wait_s() == 2
    reconciler.surpluses = Surpluses(2, clock=clock)
    reconciler.surpluses.counted("sync", 2)
    clock.now += 2
    assert reconciler.next_wait_s() == MIN_WAIT_S
