"""Retry delays: exponential with jitter between the configured bounds."""

from __future__ import annotations

import random


def retry_delay_ms(
    attempt: int,
    *,
    min_ms: int,
    max_ms: int,
    retry_after_ms: int | None = None,
    rng: random.Random | None = None,
) -> int:
    """How long to wait after failed attempt number `attempt` (1-based).

    The ceiling doubles per attempt from `min_ms` up to `max_ms`; the delay is drawn between
    half the ceiling and the ceiling ("equal jitter"), never below `min_ms`, so retries of
    many jobs that failed together spread out. An upstream's Retry-After wins, capped at `max_ms`.
    """
    if retry_after_ms is not None:
        return max(0, min(retry_after_ms, max_ms))
    ceiling = min(max_ms, min_ms * 2 ** min(attempt - 1, 30))
    floor = max(min_ms, ceiling // 2)
    return (rng or random).randint(floor, ceiling)
