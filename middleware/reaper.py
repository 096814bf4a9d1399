"""The reaper: ends attempts whose worker stopped renewing the lease (crash, kill, freeze) or
hung past the job's time limit."""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine, text

from middleware.periodic import Periodic
from store import errors, states, transitions

log = logging.getLogger(__name__)


class Reaper(Periodic):
    """Marks expired and hung attempts `abandoned` and retries or buries their jobs.

    An attempt still running `stuck_grace_s` past its job's time limit is hung, even if its
    process renews the lease: the time limit could not interrupt it.

    A lease that ran out while the database was unreachable proves nothing: no worker could
    renew it. After an outage the reaper therefore waits one full lease before reaping, so
    live workers' heartbeats renew first.
    """

    def __init__(
        self, *, engine: Engine, interval_s: float, lease_s: float, stuck_grace_s: float
    ) -> None:
        super().__init__()
        self.engine = engine
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.stuck_grace_s = stuck_grace_s
        self._database_was_down = False
        self._reap_after = 0.0

    def tick(self) -> None:
        try:
            with self.engine.begin() as db:
                if self._database_was_down:
                    db.execute(text("SELECT 1"))  # raises while it is still down
                    self._database_was_down = False
                    self._reap_after = time.monotonic() + self.lease_s
                    log.info("database is back; reaping resumes in %ss", self.lease_s)
                if time.monotonic() < self._reap_after:
                    return
                reaped = transitions.reap_expired(db, stuck_grace_s=self.stuck_grace_s)
        except errors.DatabaseUnavailable:
            self._database_was_down = True
            raise
        for r in reaped:
            log.warning(
                "job %s attempt %d abandoned (%s); job now %s",
                r.job_id,
                r.number,
                "lease expired"
                if r.error_type == states.WORKER_LOST
                else "hung past its time limit",
                r.job_status,
                extra={"job_id": str(r.job_id), "attempt": r.number, "outcome": "abandoned"},
            )
