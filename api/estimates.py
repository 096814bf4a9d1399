"""Per-process estimates of counts kept in SQL, so that a submission rarely has to count.

A tenant's jobs in the broker and its active jobs are counted in SQL with a bound (an
index range read up to the limit). Each API process keeps the last count per key, adds
what it let through since, and counts again only when the figure is old, or when it is
near its limit and not very fresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Keys beyond this many are forgotten once stale, so that many tenants cannot grow the map.
MAX_KEYS = 10_000


@dataclass
class _Figure:
    count: int
    read_at: float


class Estimates(Generic[K]):
    """Counts up to `limit` per key, read with `read` and re-read when stale.

    A figure is re-read after `refresh_s`, or after `recheck_s` when what is asked for would
    come within `near` of the limit. Other processes' additions show at the next read, so
    several processes may together pass the limit by what they let through in that time.
    """

    def __init__(
        self,
        read: Callable[[K], int],
        *,
        limit: int,
        refresh_s: float,
        recheck_s: float,
        near: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._read = read
        self._refresh_s = refresh_s
        self._recheck_s = recheck_s
        self._near = near
        self._clock = clock
        self._lock = threading.Lock()
        self._figures: dict[K, _Figure] = {}

    def take(self, key: K, wanted: int, *, read: Callable[[K], int] | None = None) -> int:
        """How many of `wanted` fit under the limit now; those are counted in at once.

        `read`, if given, counts instead of the default reader (e.g. in the caller's
        transaction, which SQLite would not let another connection read past).
        """
        if wanted <= 0:
            return 0
        now = self._clock()
        # Counted under the lock: threads that read at once would each start from the same
        # figure and overwrite what the others took. A count is a bounded index read, taken
        # about once a second per key, so the wait is short.
        with self._lock:
            figure = self._figures.get(key)
            if figure is None or self._due(figure, wanted, now):
                figure = _Figure((read or self._read)(key), now)
                if len(self._figures) >= MAX_KEYS:
                    self._forget_stale(now)
                self._figures[key] = figure
            taken = max(0, min(wanted, self.limit - figure.count))
            figure.count += taken
        return taken

    def give_back(self, key: K, count: int) -> None:
        """Count out what was taken but not used (refused, or not sent after all)."""
        with self._lock:
            figure = self._figures.get(key)
            if figure is not None:
                figure.count = max(0, figure.count - count)

    def _due(self, figure: _Figure, wanted: int, now: float) -> bool:
        age = now - figure.read_at
        if age >= self._refresh_s:
            return True
        return figure.count + wanted > self.limit - self._near and age >= self._recheck_s

    def _forget_stale(self, now: float) -> None:
        stale = [k for k, f in self._figures.items() if now - f.read_at >= self._refresh_s]
        for key in stale:
            del self._figures[key]
