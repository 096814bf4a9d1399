"""A primary PostgreSQL and its streaming standby, of a test's own, to fail over at will.

The standby is a base backup of the primary (`pg_basebackup -R`: it streams from the
primary through a replication slot) and the primary's commits wait for it
(`synchronous_standby_names`), so whatever a client saw committed is on both. Both are
`PrivatePostgres` servers on free ports of 127.0.0.1, removed when the test ends.
"""

from __future__ import annotations

import contextlib

from tests.faults.private_services import PrivatePostgres
from tests.support.polling import wait_for

#: The primary's replication slot for the standby: it keeps the WAL the standby still needs.
SLOT = "courier_standby"


class ReplicatedPostgres:
    """A primary and one synchronous standby; `url` lists both, as a failover setup does."""

    def __init__(self) -> None:
        self.primary = PrivatePostgres(name="faults-pg-primary")
        self.standby = PrivatePostgres(
            str(self.primary.bindir), initdb=False, name="faults-pg-standby"
        )

    def start(self, timeout: float = 60) -> None:
        """Start the primary, make the standby from it, and wait until commits wait for it."""
        self.primary.start(timeout)
        self.standby.run_tool(
            "pg_basebackup",
            *("-D", str(self.standby.data), "-h", "127.0.0.1", "-p", str(self.primary.port)),
            *("-U", "postgres", "-R", "-X", "stream", "-C", "-S", SLOT),
            *("--checkpoint=fast", "--no-sync"),
        )
        self.standby.start(timeout)
        # Set only now: the standby's configuration, copied by the backup, must not have it,
        # or the promoted standby would wait for a standby of its own that never comes.
        with self.primary.admin() as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        wait_for(
            lambda: self.sync_state() == "sync",
            timeout=timeout,
            interval=0.1,
            what="the standby to stream synchronously",
        )

    def sync_state(self) -> str | None:
        """How the primary sees the standby (`sync`, `async`, ...), None while it is not
        connected."""
        with self.primary.admin() as conn:
            row = conn.execute(
                "SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'"
            ).fetchone()
        return None if row is None else row[0]

    def url(self, database: str) -> str:
        """libpq's multi-host URL of a database on the pair: the primary first."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql+psycopg://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def close(self) -> None:
        """Stop both servers at once and remove their files."""
        for server in (self.standby, self.primary):
            with contextlib.suppress(Exception):
                server.close()
