"""The job an actor is running: its claim, progress reports and checkpoints (cancel, lost lease)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine

from middleware import errors
from store import checkpoints
from store.errors import DatabaseUnavailable
from store.transitions import Claim

log = logging.getLogger(__name__)

_local = threading.local()


class RunningJob:
    """Handed to a job type's code while one attempt of its job runs in this thread."""

    def __init__(self, claim: Claim, *, engine: Engine, progress_interval_s: float) -> None:
        self.claim = claim
        self.result: dict[str, Any] | None = None
        self.began = time.monotonic()
        self._engine = engine
        self._progress_interval_s = progress_interval_s
        self._progress_written_at = 0.0
        self._unwritten_progress: dict[str, Any] | None = None
        self._cancel_checked_at = time.monotonic()  # the claim refuses cancelled jobs

    @property
    def job_id(self) -> str:
        return str(self.claim.job_id)

    @property
    def entity_id(self) -> str | None:
        return self.claim.entity_id

    @property
    def payload(self) -> dict[str, Any]:
        return self.claim.payload

    @property
    def correlation_id(self) -> str:
        return self.claim.correlation_id

    def report_progress(
        self, current: int, total: int | None = None, message: str | None = None
    ) -> None:
        """Record progress; writes are throttled, and the last report is kept at the end.

        A database that does not answer (an outage, a failover) fails no attempt: progress
        is for people watching, and the report is written with a later one or at the finish.
        """
        self._unwritten_progress = {"current": current, "total": total, "message": message}
        now = time.monotonic()
        if now - self._progress_written_at >= self._progress_interval_s:
            try:
                self.flush_progress()
            except DatabaseUnavailable as e:
                self._unanswered("progress not written; kept for the next report", e)

    def flush_progress(self) -> None:
        """Write the latest unwritten progress report, if any (kept if the write fails)."""
        progress = self._unwritten_progress
        if progress is not None:
            self._progress_written_at = time.monotonic()  # failed tries are throttled too
            with self._engine.begin() as db:
                checkpoints.set_progress(db, self.claim.job_id, self.claim.number, progress)
            self._unwritten_progress = None

    def checkpoint(self) -> None:
        """Raise Cancelled if someone asked this job to stop, LeaseLost if this attempt no
        longer owns it; call it between units of work.

        SQL is asked at most once per progress interval (the claim itself is the first check),
        so a short job pays nothing for its checkpoints and a cancel is seen within one
        interval plus one unit of work.
        """
        now = time.monotonic()
        if now - self._cancel_checked_at < self._progress_interval_s:
            return
        self._cancel_checked_at = now
        # One read, no transaction around it: a single round trip per checkpoint.
        try:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
                standing = checkpoints.standing(db, self.claim.job_id, self.claim.number)
        except DatabaseUnavailable as e:
            # No answer is no cancel, not a failed attempt: the next checkpoint asks again.
            self._unanswered("cancel not checked", e)
            return
        if not standing.owned:
            # Reaped while its worker was cut off or frozen: the job is another attempt's,
            # and this one's upstream writes would come after (and over) that one's.
            raise errors.LeaseLost(f"attempt {self.claim.number} no longer owns the job")
        if standing.cancel_requested:
            raise errors.Cancelled("cancelled while running")

    def _unanswered(self, what: str, error: DatabaseUnavailable) -> None:
        reason = str(error).splitlines()[0]
        log.warning("job %s: %s (%s)", self.job_id, what, reason, extra={"job_id": self.job_id})


def current_job() -> RunningJob:
    """The job this thread is running; only valid inside an actor."""
    job = getattr(_local, "job", None)
    if job is None:
        raise RuntimeError("no job is running in this thread")
    return job


def enter(job: RunningJob) -> None:
    """Make `job` the current job of this thread."""
    _local.job = job


def leave() -> RunningJob | None:
    """Forget this thread's current job and return it (None if there was none)."""
    job = getattr(_local, "job", None)
    _local.job = None
    return job
