"""The lifecycle of one background thread: started on demand, stopped and joined on request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundThread:
    """Runs `body(stopping)` in a daemon thread; `body` returns once `stopping` is set.

    `start()` is idempotent and starts the thread again should it have ended, so that a
    caller never waits on a dead thread; a process that forks after loading (Dramatiq,
    gunicorn) starts its threads in the child, on first use.
    """

    def __init__(self, body: Callable[[threading.Event], None], *, name: str) -> None:
        self._body = body
        self.name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread unless it is running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Ask the thread to end and wait for it (at most `timeout_s`)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def release(self) -> None:
        """Called by the body just before it returns on its own: `start()` then makes a new
        thread rather than counting on this one, which is ending."""
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread = None

    @property
    def alive(self) -> bool:
        """Whether the thread is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        self._body(self._stopping)


def every(
    interval_s: float,
    tick: Callable[[], object],
    *,
    what: str,
    pace: Callable[[], float] | None = None,
) -> Callable[[threading.Event], None]:
    """A thread body that calls `tick()` every `interval_s` until stopped; errors are logged.

    With `pace`, the wait before each call after the first is `pace()`, asked after the
    call before it succeeded (a failed call waits `interval_s`).

    An outage of the database or broker must not end the thread: it tries again next tick.
    A run of failures is logged when it starts and when it ends, not at every tick.
    """

    def body(stopping: threading.Event) -> None:
        failures = 0
        wait_s = interval_s
        while not stopping.wait(wait_s):
            wait_s = interval_s
            try:
                tick()
            except Exception:
                log.log(
                    logging.DEBUG if failures else logging.WARNING,
                    "%s failed; retrying every %.1fs",
                    what,
                    interval_s,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                failures += 1
                continue
            if failures:
                log.info("%s works again after %d failed tries", what, failures)
                failures = 0
            if pace is not None:
                wait_s = pace()

    return body
