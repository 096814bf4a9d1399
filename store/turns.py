"""Turns: one process at a time does a piece of work, without a transaction held meanwhile.

The relay publishes to a broker that may keep it waiting (a memory or disk alarm blocks
publishers). Row locks would keep a transaction open all that while; a PostgreSQL
session-level advisory lock instead keeps the relays of other processes off the same jobs
and blocks nothing else. SQLite (the embedded mode) runs one process: every turn is its own.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, func, select


def _key(name: str) -> int:
    return zlib.crc32(f"courier:{name}".encode())


@contextlib.contextmanager
def turn(engine: Engine, name: str) -> Iterator[Connection | None]:
    """A connection, outside any transaction, while this process has the turn `name`;
    None if another process has it now (skip the work this time)."""
    with engine.connect() as db:
        if db.dialect.name != "postgresql":
            yield db
            return
        key = _key(name)
        mine = db.scalar(select(func.pg_try_advisory_lock(key)))
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
                db.commit()
            except Exception:
                db.invalidate()  # its session ends, and the lock with it
                raise
