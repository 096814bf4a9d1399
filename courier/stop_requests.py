"""One stop request per signal burst, in a Dramatiq worker process.

Ctrl-C and systemd's default stop signal every process of the group at once, and Dramatiq's
main process passes what it gets on to its workers: a worker process then receives the same
request two or three times within milliseconds. Dramatiq kills a worker process on its second
signal, which abandoned the attempts it was running. The copies of one request arrive
together; a second request (another Ctrl-C) comes from a person, later.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: Signals closer than this to the first of a request are copies of it. Forwarding takes a
#: few milliseconds even on a busy host; a person's second Ctrl-C comes later than this.
COPIES_WITHIN_S = 0.5

#: What Dramatiq's worker process stops on (SIGINT it ignores: its main process forwards it).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

Handler = Callable[[int, FrameType | None], Any]


class StopRequests:
    """Passes a signal on to `handler` unless it is a copy of the request just before it."""

    def __init__(self, handler: Handler, *, copies_within_s: float = COPIES_WITHIN_S) -> None:
        self.handler = handler
        self.copies_within_s = copies_within_s
        self._first_at: float | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        now = time.monotonic()
        if self._first_at is not None and now - self._first_at < self.copies_within_s:
            return None
        if self._first_at is not None:
            log.warning("second stop request: stopping at once")
        self._first_at = now
        return self.handler(signum, frame)


def coalesce_stop_signals() -> None:
    """Wrap this process's stop-signal handlers (Dramatiq's) so a burst counts once.

    Does nothing outside the main thread or where no handler of Python's is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    installed = {h for h in handlers.values() if callable(h) and not isinstance(h, StopRequests)}
    if len(installed) != 1:
        return
    requests = StopRequests(installed.pop())
    for signum, handler in handlers.items():
        if callable(handler):
            signal.signal(signum, requests)
