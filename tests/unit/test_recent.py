"""A shared value: one computation for concurrent callers, refreshed behind them when asked."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from background.recent import Recent
from tests.support.polling import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Computation:
    """Counts its runs; each run waits until `release` is set, then returns its number."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = threading.Event()
        self.fail = False

    def __call__(self) -> int:
        self.runs += 1
        assert self.release.wait(5), "never released"
        if self.fail:
            raise RuntimeError("the database went away")
        return self.runs


def test_concurrent_callers_share_one_computation():
    computation = Computation()
    shared = Recent(computation, max_age_s=5)
    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(shared.get) for _ in range(8)]
        wait_for(lambda: computation.runs == 1, timeout=5, what="the first computation")
        computation.release.set()
        assert [a.result(timeout=5) for a in answers] == [1] * 8
    assert computation.runs == 1


def test_an_expired_value_is_recomputed_on_the_next_call():
    computation, clock = Computation(), Clock()
    computation.release.set()
    shared = Recent(computation, max_age_s=5, clock=clock)
    assert shared.get() == 1
    clock.now = 4.9
    assert shared.get() == 1
    clock.now = 5.0
    assert shared.get() == 2


def test_refresh_behind_answers_the_expired_value_while_recomputing_it():
    computation, clock = Computation(), Clock()
    computation.release.set()
    shared = Recent(computation, max_age_s=5, refresh_behind=True, clock=clock)
    assert shared.get() == 1
    computation.release.clear()  # the refresh is slow
    clock.now = 6.0
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(shared.get).result(timeout=1) == 1  # answered without waiting
    assert shared.get() == 1  # still refreshing: no second refresh
    computation.release.set()
    wait_for(lambda: shared.get() == 2, timeout=5, what="the refreshed value")
    assert computation.runs == 2


def test_a_failed_refresh_forgets_the_value_so_the_next_caller_sees_the_error():
    computation, clock = Computation(), Clock()
    computation.release.set()
    shared = Recent(computation, max_age_s=5, refresh_behind=True, clock=clock)
    assert shared.get() == 1
    computation.fail = True
    clock.now = 6.0
    assert shared.get() == 1
    wait_for(lambda: computation.runs == 2, timeout=5, what="the refresh")

    def raises() -> bool:
        try:
            shared.get()
        except RuntimeError:
            return True
        return False

    wait_for(raises, timeout=5, what="the next caller to see the failure")
    with pytest.raises(RuntimeError):
        shared.get()


def test_refresh_behind_waits_for_a_fresh_value_once_the_old_one_is_stale():
    computation, clock = Computation(), Clock()
    computation.release.set()
    shared = Recent(computation, max_age_s=5, refresh_behind=True, stale_after_s=10, clock=clock)
    assert shared.get() == 1
    clock.now = 9.0
    assert shared.get() == 1  # expired, not stale: answered, refreshed behind
    wait_for(lambda: shared.get() == 2, timeout=5, what="the refresh behind")
    clock.now = 19.0
    assert shared.get() == 3  # stale: computed before answering
    assert computation.runs == 3


def test_a_refresh_finishing_after_a_fresher_computation_does_not_replace_it():
    computation, clock = Computation(), Clock()
    computation.release.set()
    shared = Recent(computation, max_age_s=5, refresh_behind=True, stale_after_s=10, clock=clock)
    assert shared.get() == 1
    computation.release.clear()  # the refresh behind hangs
    clock.now = 6.0
    assert shared.get() == 1
    wait_for(lambda: computation.runs == 2, timeout=5, what="the refresh behind to start")
    clock.now = 20.0
    with ThreadPoolExecutor(1) as pool:
        fresh = pool.submit(shared.get)  # stale: computes run 3 itself
        wait_for(lambda: computation.runs == 3, timeout=5, what="the caller's computation")
        computation.release.set()
        assert fresh.result(timeout=5) == 3
    wait_for(lambda: not shared._refreshing, timeout=5, what="the refresh behind to end")
    assert shared.get() == 3
