"""A value recomputed at most once per interval and shared by every thread of the process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class Recent(Generic[T]):
    """`get()` answers the last value while it is younger than `max_age_s`, else recomputes it.

    One computation at a time (single flight): callers arriving while it runs wait for its
    result instead of starting their own, so N concurrent readers cost one computation. A
    computation that raises is not remembered; the next caller tries again.

    With `refresh_behind`, only the first caller waits: once there is a value, an expired
    one is still answered while a background thread recomputes it, so no caller waits for
    a slow computation; the value is then at most `max_age_s` plus one computation old. A
    failed refresh forgets the value, so the next caller computes it and sees the error.
    With `stale_after_s` too, a value that old (nobody asked for a while) is not answered:
    the caller waits for a fresh one. So the values answered by the processes behind one
    address never go back further than that: a counter scraped from any of them only grows.
    """

    def __init__(
        self,
        compute: Callable[[], T],
        *,
        max_age_s: float,
        refresh_behind: bool = False,
        stale_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute
        self._max_age_s = max_age_s
        self._refresh_behind = refresh_behind
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._computed_at: float | None = None
        self._refreshing = False

    def get(self) -> T:
        """The shared value (its age counts from when its computation began)."""
        with self._lock:
            began = self._clock()
            if self._computed_at is None or began - self._computed_at >= self._wait_after_s:
                self._value = self._compute()
                self._computed_at = began
            elif began - self._computed_at >= self._max_age_s and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="recent-refresh", daemon=True).start()
            return self._value  # type: ignore[return-value]  # set above on the first call

    @property
    def _wait_after_s(self) -> float:
        # The age from which a caller waits for a computation rather than being answered.
        if not self._refresh_behind:
            return self._max_age_s
        return float("inf") if self._stale_after_s is None else self._stale_after_s

    def _refresh(self) -> None:
        began = self._clock()
        try:
            value = self._compute()
        except Exception:
            log.warning(
                "refreshing a shared value failed; the next caller recomputes it", exc_info=True
            )
            with self._lock:
                self._computed_at = None
                self._refreshing = False
            return
        with self._lock:
            self._refreshing = False
            # A caller may have waited for a newer value meanwhile (`stale_after_s`).
            if self._computed_at is None or began > self._computed_at:
                self._value, self._computed_at = value, began
