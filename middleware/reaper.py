"""The reaper: ends attempts whose worker stopped renewing the lease (crash, kill, freeze)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from middleware.periodic import Periodic
from store import ledger

log = logging.getLogger(__name__)


class Reaper(Periodic):
    """Marks expired attempts `abandoned` and retries or buries their jobs."""

    def __init__(self, *, sessions: sessionmaker[Session], interval_s: float) -> None:
        super().__init__()
        self.sessions = sessions
        self.interval_s = interval_s

    def tick(self) -> None:
        with self.sessions.begin() as session:
            reaped = ledger.reap_expired(session)
        for r in reaped:
            log.warning(
                "job %s attempt %d abandoned (lease expired); job now %s",
                r.job_id,
                r.number,
                r.job_status,
                extra={"job_id": str(r.job_id), "attempt": r.number, "outcome": "abandoned"},
            )
