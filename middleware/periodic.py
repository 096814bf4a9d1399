"""A middleware that runs a task on an interval in a background thread of each worker process."""

from __future__ import annotations

import logging
import threading

from dramatiq import Broker, Middleware

log = logging.getLogger(__name__)


class Periodic(Middleware):
    """Calls `tick()` every `interval_s` from worker boot to worker shutdown; errors are logged."""

    interval_s: float = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """One round of work."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the background thread (worker boot calls this)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name=type(self).__name__, daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the background thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def after_worker_boot(self, broker: Broker, worker: object) -> None:
        self.start()

    def before_worker_shutdown(self, broker: Broker, worker: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:
                # An outage of the database or broker must not kill the thread: try again.
                log.warning(
                    "%s failed; retrying in %.1fs",
                    type(self).__name__,
                    self.interval_s,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
