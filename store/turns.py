"""Turns: one process at a time does a piece of work, without a transaction held meanwhile.

The relay publishes to a broker that may keep it waiting (a memory or disk alarm blocks
publishers). Row locks would keep a transaction open all that while; a PostgreSQL
session-level advisory lock instead keeps the relays of other processes off the same jobs
and blocks nothing else. SQLite (the embedded mode) runs one process: every turn is its own.

A process frozen while it has a turn (SIGSTOP, a VM paused) keeps its session, and the lock,
alive: its kernel still answers TCP. So the session holding a turn has an idle limit, both
between transactions and inside one (`idle_session_timeout`, PostgreSQL 14 and later, and
`idle_in_transaction_session_timeout`): idle that long, PostgreSQL ends it and the turn
passes to another process. A turn's statements are milliseconds apart; its one wait on
something else, a publish, is outside any transaction and bounded by the publisher's
blocked-broker timeout.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, func, select, text

#: How long the session holding a turn may sit idle before PostgreSQL ends it.
IDLE_LIMIT_S = 10.0

_SET_IDLE_LIMITS = text(
    "SELECT set_config(name, coalesce(CAST(:value AS text), reset_val), false) FROM pg_settings"
    " WHERE name IN ('idle_session_timeout', 'idle_in_transaction_session_timeout')"
)


def lock_key(name: str) -> int:
    """The advisory lock key of the turn `name` (`pg_locks.objid` while a session has it)."""
    return zlib.crc32(f"courier:{name}".encode())


@contextlib.contextmanager
def turn(engine: Engine, name: str) -> Iterator[Connection | None]:
    """A connection, outside any transaction, while this process has the turn `name`;
    None if another process has it now (skip the work this time)."""
    with engine.connect() as db:
        if db.dialect.name != "postgresql":
            yield db
            return
        key = lock_key(name)
        mine = db.scalar(select(func.pg_try_advisory_lock(key)))
        if mine:
            _idle_limit(db, f"{int(IDLE_LIMIT_S * 1000)}ms")
        db.commit()  # the lock outlives the transaction that took it
        if not mine:
            yield None
            return
        try:
            yield db
        finally:
            try:
                db.rollback()
                db.scalar(select(func.pg_advisory_unlock(key)))
                _idle_limit(db, None)  # back to the pool with the session's default
                db.commit()
            except Exception:
                db.invalidate()  # its session ends, and the lock with it
                raise


def _idle_limit(db: Connection, value: str | None) -> None:
    """Set this session's idle limits (None: back to their defaults), in one statement; a
    limit this server lacks (`idle_session_timeout` before 14) is not in pg_settings."""
    db.execute(_SET_IDLE_LIMITS, {"value": value})
