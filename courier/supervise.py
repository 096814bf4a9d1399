"""Keeps a Dramatiq worker group running: restart it when it dies, stop it on SIGTERM/SIGINT.

Dramatiq ends the whole group when one worker process dies; without a supervisor (or a
container restart policy) a single crash would stop all work on that host.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

# Crash loops are slowed down, but never given up on: the jobs are safe in SQL meanwhile.
RESTART_DELAYS_S = (1, 2, 5, 10, 30)


def run(command: Sequence[str]) -> int:
    """Run `command` until asked to stop; returns the exit status of its last run."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failures = 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(list(command))
        status = child.wait()
        if stopping:
            return status
        if time.monotonic() - started > 60:
            failures = 0
        delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
        failures += 1
        log.error("worker group exited with status %s; restarting in %ss", status, delay)
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return status
