from __future__ import annotations

import random

from middleware.backoff import retry_delay_ms


def test_delays_grow_exponentially_and_stay_within_the_bounds():
    rng = random.Random(7)
    for attempt in range(1, 30):
        ceiling = min(300_000, 30_000 * 2 ** (attempt - 1))
        for _ in range(50):
            delay = retry_delay_ms(attempt, min_ms=30_000, max_ms=300_000, rng=rng)
            assert 30_000 <= delay <= 300_000
            assert max(30_000, ceiling // 2) <= delay <= ceiling


def test_jitter_spreads_retries_of_the_same_attempt():
    rng = random.Random(1)
    delays = {retry_delay_ms(3, min_ms=1000, max_ms=100_000, rng=rng) for _ in range(100)}
    assert len(delays) > 50


def test_retry_after_wins_but_is_capped_at_the_maximum():
    assert retry_delay_ms(1, min_ms=1000, max_ms=60_000, retry_after_ms=5000) == 5000
    assert retry_delay_ms(1, min_ms=1000, max_ms=60_000, retry_after_ms=3_600_000) == 60_000
