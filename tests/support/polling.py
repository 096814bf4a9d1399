"""Wait for a condition with a deadline instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, text

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline
    (a callable `what` is asked then, so it can tell what was seen last)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {said or condition}")
        time.sleep(interval)


def holds_for(condition: Callable[[], object], seconds: float, *, what: str = "") -> None:
    """Check `condition` keeps holding for a while: for "this must not happen" assertions."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), f"no longer true: {what or condition}"
        time.sleep(0.05)


def lock_waits(engine: Engine) -> int:
    """How many sessions of the engine's database wait for a lock right now.

    Each call opens its own transaction: PostgreSQL takes one snapshot of pg_stat_activity
    per transaction, so polling inside one would see the first answer forever.
    """
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as conn:
        return conn.scalar(text(query))
