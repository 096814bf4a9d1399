"""A middleware that runs a task on an interval in a background thread of each worker process."""

from __future__ import annotations

from dramatiq import Broker, Middleware

from background.thread import BackgroundThread, every


class Periodic(Middleware):
    """Calls `tick()` every `interval_s` (or `next_wait_s()`) from worker boot to worker
    shutdown; errors are logged."""

    interval_s: float = 1.0

    def __init__(self) -> None:
        self._thread: BackgroundThread | None = None

    def tick(self) -> None:
        """One round of work."""
        raise NotImplementedError

    def next_wait_s(self) -> float:
        """The wait after a round that succeeded, before the next one."""
        return self.interval_s

    def start(self) -> None:
        """Start the background thread (worker boot calls this)."""
        if self._thread is None:
            name = type(self).__name__
            body = every(self.interval_s, self.tick, what=name, pace=self.next_wait_s)
            self._thread = BackgroundThread(body, name=name)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the background thread and wait for it."""
        if self._thread is not None:
            self._thread.stop(timeout_s)

    def after_worker_boot(self, broker: Broker, worker: object) -> None:
        self.start()

    def before_worker_shutdown(self, broker: Broker, worker: object) -> None:
        self.stop()
