"""The batcher's linger: requests of threads that have been submitting share one batch."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from background import batcher as batcher_module
from background.batcher import Batcher, Request


class Served:
    """A serve function that records each batch's size and answers every request."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, batch: list[Request]) -> None:
        self.sizes.append(len(batch))
        for request in batch:
            request.done.set_result(len(batch))


def test_a_thread_submitting_alone_never_waits_for_the_linger():
    served = Served()
    batcher: Batcher[Request] = Batcher(served, name="alone", max_batch=50, linger_s=30.0)
    try:
        began = time.monotonic()
        answers = [batcher.submit(Request()) for _ in range(5)]
        took = time.monotonic() - began
    finally:
        batcher.stop()
    assert answers == [1, 1, 1, 1, 1]
    assert took < 10, f"five lone requests took {took:.1f}s: they waited for the linger"


def _submit_together(
    pool: ThreadPoolExecutor, batcher: Batcher[Request], threads: int, *, spread_s: float
) -> list[int]:
    """Each of the pool's `threads` threads submits once, one after another `spread_s` apart."""
    start = threading.Barrier(threads)

    def one(i: int) -> int:
        start.wait()  # every thread of the pool takes one
        time.sleep(i * spread_s)
        return batcher.submit(Request())

    return list(pool.map(one, range(threads)))


@pytest.fixture
def long_memory(monkeypatch):
    """Threads stay known for the whole test, however slow the machine."""
    monkeypatch.setattr(batcher_module, "ACTIVE_S", 600.0)


def test_the_requests_of_busy_threads_wait_for_each_other_within_the_linger(long_memory):
    served = Served()
    batcher: Batcher[Request] = Batcher(served, name="busy", max_batch=50, linger_s=1.0)
    try:
        with ThreadPoolExecutor(4) as pool:
            _submit_together(pool, batcher, 4, spread_s=0.0)  # the pool starts its threads
            served.sizes.clear()
            answers = _submit_together(pool, batcher, 4, spread_s=0.05)
    finally:
        batcher.stop()
    assert answers == [4, 4, 4, 4]
    assert served.sizes == [4]


def test_without_a_linger_a_batch_takes_only_what_is_already_waiting(long_memory):
    served = Served()
    batcher: Batcher[Request] = Batcher(served, name="eager", max_batch=50)
    try:
        with ThreadPoolExecutor(4) as pool:
            _submit_together(pool, batcher, 4, spread_s=0.0)
            served.sizes.clear()
            _submit_together(pool, batcher, 4, spread_s=0.5)
    finally:
        batcher.stop()
    assert served.sizes == [1, 1, 1, 1]


def test_the_linger_ends_at_its_deadline_when_a_known_thread_submits_nothing(long_memory):
    served = Served()
    batcher: Batcher[Request] = Batcher(served, name="deadline", max_batch=50, linger_s=0.3)
    try:
        with ThreadPoolExecutor(2) as pool:
            _submit_together(pool, batcher, 2, spread_s=0.0)
        began = time.monotonic()
        answer = batcher.submit(Request())  # the other known threads are silent now
        took = time.monotonic() - began
    finally:
        batcher.stop()
    assert answer == 1
    assert 0.25 <= took < 10, f"the lone request of three known threads took {took:.2f}s"
