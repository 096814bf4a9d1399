"""The scheduler: turns due occurrences of schedules into jobs, in every worker process.

No process leads: concurrent ticks split the due schedules between them (rows locked by one
are skipped by the others) and each occurrence is recorded once (`store.occurrences`). The
jobs wait in the outbox, which the relay publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import Engine

from middleware.periodic import Periodic
from store import occurrences, quotas
from store.db import make_sessionmaker

log = logging.getLogger(__name__)


class Scheduler(Periodic):
    """Creates the jobs of the schedules' due occurrences, a batch at a time."""

    def __init__(
        self,
        *,
        engine: Engine,
        queues: Mapping[str, str],
        timeout_s: int,
        interval_s: float,
        batch: int = 100,
        max_active: int = quotas.DEFAULT_MAX_ACTIVE,
    ) -> None:
        super().__init__()
        self.sessions = make_sessionmaker(engine)
        self.queues = dict(queues)
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.batch = batch
        self.max_active = max_active

    def tick(self) -> None:
        while self.fire_due() == self.batch:
            pass

    def fire_due(self) -> int:
        """Handle one batch of due schedules; returns how many were due."""
        with self.sessions.begin() as session:
            fired, due = occurrences.fire_due(
                session,
                queues=self.queues,
                timeout_s=self.timeout_s,
                limit=self.batch,
                max_active=self.max_active,
            )
        for f in fired:
            log.info(
                "schedule %s (%s) created job %s for %s",
                f.schedule,
                f.schedule_id,
                f.job_id,
                f.scheduled_for.isoformat(),
                extra={"job_id": str(f.job_id), "schedule_id": str(f.schedule_id)},
            )
        return due
