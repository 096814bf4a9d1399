"""Error reports: the bug that made a job dead, sent to Sentry once per job.

A job's attempts fail for two kinds of reasons. Upstream flakiness and refusals are typed
(`middleware.errors.JobError`, or named by a classifier rule): they belong to metrics and the
dead-letter queue, not to an error tracker. An exception no rule names is a bug. Reporting it
on every attempt would raise one alarm per attempt for one bug, and alarms for bugs a retry
got past; so a bug is reported when, and only when, its job's `dead` state is committed, by
the attempt that made it dead (`middleware.attempts` calls `after_dead_finish`).

Every integration of Sentry's client is left off: its logging integration would report each
attempt's error line, its Dramatiq integration every exception of every attempt. Reports
are sent by the client's background thread; a stopping worker flushes them (`flush`).

Sentry's client is imported only where SENTRY_DSN is set: importing it costs a process a few
tenths of a second of CPU, paid again by every worker process and command.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine

from middleware.classify import Classifier
from middleware.errors import JobError
from store import errors, queries
from store.states import Status
from store.transitions import Claim

log = logging.getLogger(__name__)

#: How long a stopping worker waits for its queued reports to be sent.
_SEND_TIMEOUT_S = 2.0


class BadReportingSettings(ValueError):
    """A SENTRY_* variable holds a value Sentry's client cannot use."""


def check(environ: Mapping[str, str]) -> None:
    """Raise `BadReportingSettings` if SENTRY_DSN is set but names no Sentry project."""
    dsn = environ.get("SENTRY_DSN", "").strip()
    if dsn:
        from sentry_sdk.utils import BadDsn, Dsn

        try:
            Dsn(dsn)
        except BadDsn as e:
            raise BadReportingSettings(f"SENTRY_DSN: {e or 'not a Sentry DSN'}") from None


def start(environ: Mapping[str, str]) -> bool:
    """Report to the Sentry project of SENTRY_DSN if it is set; whether reporting is on.

    SENTRY_ENVIRONMENT and SENTRY_RELEASE, when set, label every report.
    """
    dsn = environ.get("SENTRY_DSN", "").strip()
    if not dsn:
        return False
    check(environ)
    import sentry_sdk
    from sentry_sdk.utils import Dsn

    sentry_sdk.init(
        dsn=dsn,
        environment=environ.get("SENTRY_ENVIRONMENT", "").strip() or None,
        release=environ.get("SENTRY_RELEASE", "").strip() or None,
        default_integrations=False,
        auto_enabling_integrations=False,
        integrations=[],
        # Frames' local variables hold job payloads (customer data, credentials): the
        # stack trace and the job's tags find the bug without sending them to a third party.
        include_local_variables=False,
    )
    log.info("error reports go to Sentry (%s)", Dsn(dsn).netloc)
    return True


def _active_client() -> Any:
    """Sentry's client if SENTRY_DSN started it; None otherwise (and no import: see above)."""
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None:
        return None
    client = sentry_sdk.get_client()
    return client if client.is_active() else None


def flush() -> None:
    """Send the reports still queued, waiting 2 s at most."""
    client = _active_client()
    if client is not None:
        client.flush(timeout=_SEND_TIMEOUT_S)


def stop() -> None:
    """Send the reports still queued (2 s at most), then report nothing more."""
    client = _active_client()
    if client is not None:
        client.close(timeout=_SEND_TIMEOUT_S)
        sys.modules["sentry_sdk"].get_global_scope().set_client(None)


def active() -> bool:
    """Whether reports are sent (SENTRY_DSN was set); checked before any work for one."""
    return _active_client() is not None


def is_bug(error: BaseException, classifier: Classifier) -> bool:
    """Whether `error` is a bug: no JobError and no rule of the job type's classifier."""
    return not isinstance(error, JobError) and not classifier.names(error)


def after_dead_finish(
    engine: Engine,
    claim: Claim,
    status: str | None,
    error: BaseException,
    classifier: Classifier,
) -> None:
    """Report `error` if it is a bug and the finish of `claim` that asked for `dead` made
    the job dead; `status` is what that finish answered (None: fenced off)."""
    if not is_bug(error, classifier):
        return
    if status is None:
        # A finish tried again after its commit's answer was lost is fenced off by its own
        # first write: the attempt row tells whether that write went through.
        try:
            with engine.connect() as db:
                if not queries.buried_by_its_attempt(db, claim.job_id, claim.number):
                    return
        except errors.DatabaseUnavailable:
            log.warning(
                "job %s: dead by a bug, not reported (database unavailable)",
                claim.job_id,
                extra={"job_id": str(claim.job_id), "correlation_id": claim.correlation_id},
            )
            return
    elif status != Status.DEAD:
        return  # a cancel beat the dead letter
    report_dead(claim, error)


def report_dead(claim: Claim, error: BaseException) -> None:
    """Report `error`, the bug that ended attempt `claim` and made its job dead."""
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("job_id", str(claim.job_id))
        scope.set_tag("job_type", claim.type)
        scope.set_tag("tenant", claim.tenant)
        scope.set_tag("attempts", str(claim.number))
        scope.set_tag("correlation_id", claim.correlation_id)
        scope.set_context(
            "job",
            {
                "entity_id": claim.entity_id,
                "max_attempts": claim.max_attempts,
                "timeout_s": claim.timeout_s,
                "last_attempt_started_at": claim.started_at.isoformat(),
            },
        )
        event_id = sentry_sdk.capture_exception(error)
    log.info(
        "job %s: %s reported to Sentry as event %s",
        claim.job_id,
        type(error).__name__,
        event_id,
        extra={"job_id": str(claim.job_id), "correlation_id": claim.correlation_id},
    )
