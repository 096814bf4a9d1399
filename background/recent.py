"""A value recomputed at most once per interval and shared by every thread of the process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recent(Generic[T]):
    """`get()` answers the last value while it is younger than `max_age_s`, else recomputes it.

    One computation at a time (single flight): callers arriving while it runs wait for its
    result instead of starting their own, so N concurrent readers cost one computation. A
    computation that raises is not remembered; the next caller tries again.
    """

    def __init__(
        self,
        compute: Callable[[], T],
        *,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._computed_at: float | None = None

    def get(self) -> T:
        """The shared value, at most `max_age_s` old (its age counts from when it was begun)."""
        with self._lock:
            began = self._clock()
            if self._computed_at is None or began - self._computed_at >= self._max_age_s:
                self._value = self._compute()
                self._computed_at = began
            return self._value  # type: ignore[return-value]  # set above on the first call
