"""The Attempts middleware: claim in SQL before the actor runs, record the outcome after it.

Dramatiq's Retries middleware is not used: the retry policy lives here and retries are
scheduled in SQL (`retrying` + `next_attempt_at`), published by the relay when due, so no
delay ever sits unacked in a worker's memory.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from dramatiq import Broker, Middleware
from dramatiq.middleware import SkipMessage
from sqlalchemy import Engine

from delivery import dead_letters
from middleware import backoff, current_job, error_reports
from middleware import errors as job_errors
from middleware.classify import CANCEL, DEFAULT, SKIP, Classifier
from middleware.group_commit import GroupCommit
from store import circuits, errors, job_changes, transitions
from store.admission import Rule
from store.states import Status
from store.transitions import Claim, Outcome

log = logging.getLogger(__name__)

T = TypeVar("T")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
#: The longest wait between two tries of a claim or finish the database did not take.
_MAX_DELAY_S = 2.0


class Attempts(Middleware):
    """Mirrors every attempt of every job into SQL and decides retry, skip or dead."""

    def __init__(
        self,
        *,
        engine: Engine,
        max_backoff_ms: int,
        min_backoff_ms: int,
        lease_s: float,
        progress_interval_s: float,
        rules: Sequence[Rule] = (),
        upstreams_of: Mapping[str, Sequence[str]] | None = None,
        circuit_policy: circuits.Policy | None = None,
    ) -> None:
        self.engine = engine
        self.upstreams_of = upstreams_of or {}
        self.min_backoff_ms = min_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.lease_s = lease_s
        self.progress_interval_s = progress_interval_s
        self.running: dict[int, current_job.RunningJob] = {}  # by thread id, for heartbeats
        self.group_commit = GroupCommit.on(
            engine.url.render_as_string(hide_password=False),
            worker=WORKER_ID,
            lease_s=lease_s,
            rules=rules,
            circuit_policy=circuit_policy,
        )
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return {"classifier", "throws"}

    def before_process_message(self, broker: Broker, message: Any) -> None:
        job_id = _job_id(message)
        if job_id is None:
            log.error("message %s names no job; dropped", message.message_id)
            raise SkipMessage("no job id")
        # Whatever keeps the claim from being written, the actor must not run unclaimed
        # and the message must not be acked: it is held and the claim tried again.
        claim = self._until_database_answers(
            "claim",
            job_id,
            lambda: self.group_commit.claim(job_id, message.actor_name),
            retry_on=Exception,
        )
        if claim is None:
            log.info(
                "job %s not claimable (waiting for a slot, or a duplicate, stale or finished"
                " message %s); skipped",
                job_id,
                message.message_id,
            )
            raise SkipMessage("not claimable")
        job = current_job.RunningJob(
            claim, engine=self.engine, progress_interval_s=self.progress_interval_s
        )
        current_job.enter(job)
        with self._lock:
            self.running[threading.get_ident()] = job

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        job = current_job.leave()
        if job is None:
            return
        try:
            self._finish(broker, message, job, exception)
        finally:
            with self._lock:
                self.running.pop(threading.get_ident(), None)

    def _finish(
        self, broker: Broker, message: Any, job: current_job.RunningJob, exception: Any
    ) -> None:
        claim = job.claim
        outcome = self._outcome(broker, message, claim, job.result, exception)
        try:
            job.flush_progress()
        except errors.DatabaseUnavailable:
            log.warning("job %s: last progress report lost (database unavailable)", claim.job_id)
        # The heartbeat keeps renewing the lease until the outcome is written, however long
        # the database takes to come back.
        calls = _circuit_calls(exception, self.upstreams_of.get(claim.type, ()))
        status = self._until_database_answers(
            "finish", claim.job_id, lambda: self.group_commit.finish(claim, outcome, calls)
        )
        duration_ms = int((time.monotonic() - job.began) * 1000)
        said = status or f"{outcome.job_status} but fenced (lease lost)"
        log.info(
            "job %s attempt %d %s%s in %d ms",
            claim.job_id,
            claim.number,
            said,
            f" ({outcome.error_type}: {outcome.error})" if outcome.error_type else "",
            duration_ms,
            extra={
                "job_id": str(claim.job_id),
                "message_id": message.message_id,
                "attempt": claim.number,
                "correlation_id": claim.correlation_id,
                "outcome": status or "fenced",
                "duration_ms": duration_ms,
            },
        )
        if status == Status.DEAD:
            self._dead_letter(broker, message, claim, outcome)
        if outcome.job_status == Status.DEAD and exception is not None and error_reports.active():
            classifier = self._classifier(broker, message)
            error_reports.after_dead_finish(self.engine, claim, status, exception, classifier)

    def _until_database_answers(
        self,
        step: str,
        job_id: uuid.UUID,
        write: Callable[[], T],
        *,
        retry_on: type[Exception] = errors.DatabaseUnavailable,
    ) -> T:
        # While the database cannot record anything, the message is held unacked and the
        # write retried: acking would lose the job's message, and if this process dies
        # meanwhile RabbitMQ redelivers it. (Outages past RabbitMQ's 30-minute consumer
        # timeout close the channel, which redelivers too.) The first failure is logged, the
        # retries only when the write goes through: one held message, two lines.
        delay, failures = 0.5, 0
        while True:
            try:
                written = write()
            except retry_on as e:
                if not failures:
                    log.warning(
                        "job %s: %s not written (%s); retrying every %.0fs at most",
                        job_id,
                        step,
                        _reason(e),
                        _MAX_DELAY_S,
                        extra={"job_id": str(job_id)},
                        exc_info=not isinstance(e, errors.StoreError),
                    )
                failures += 1
                time.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY_S)
                continue
            if failures:
                log.info(
                    "job %s: %s written after %d failed tries",
                    job_id,
                    step,
                    failures,
                    extra={"job_id": str(job_id)},
                )
            return written

    def running_claims(self) -> list[Claim]:
        """The claims of the attempts running in this process right now."""
        with self._lock:
            return [job.claim for job in self.running.values()]

    def before_nack(self, broker: Broker, message: Any) -> None:
        # Dramatiq nacks a message for an actor this worker does not know straight to the
        # dead-letter queue, without running any other hook: record that in SQL too.
        if current_job.leave() is not None or message.actor_name in broker.actors:
            return
        job_id = _job_id(message)
        if job_id is None:
            return
        error = f"no worker knows the job type {message.actor_name!r}"
        with self.engine.begin() as db:
            buried = transitions.bury(db, [job_id], error_type="ActorNotFound", error=error)
            job_changes.announce(db, buried)
        if buried:
            log.error("job %s dead: %s", job_id, error, extra={"job_id": str(job_id)})

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        # Worker threads have ended, so no claim or finish can still be waiting, and no
        # error report can still be made.
        self.group_commit.stop()
        error_reports.flush()

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        current_job.leave()

    def _outcome(
        self, broker: Broker, message: Any, claim: Claim, result: Any, exception: Any
    ) -> Outcome:
        if exception is None:
            return Outcome(job_status=Status.SUCCEEDED, result=result)
        verdict = self._classifier(broker, message).classify(exception)
        error_type, error = verdict.error_type, verdict.message
        if verdict.kind == CANCEL:
            return Outcome(job_status=Status.CANCELLED, error_type=error_type, error=error)
        if verdict.kind == SKIP:
            return Outcome(job_status=Status.FAILED, error_type=error_type, error=error)
        if claim.number >= claim.max_attempts:
            return Outcome(job_status=Status.DEAD, error_type=error_type, error=error)
        delay = backoff.retry_delay_ms(
            claim.number,
            min_ms=self.min_backoff_ms,
            max_ms=self.max_backoff_ms,
            retry_after_ms=verdict.retry_after_ms,
        )
        return Outcome(
            job_status=Status.RETRYING, error_type=error_type, error=error, retry_in_ms=delay
        )

    def _classifier(self, broker: Broker, message: Any) -> Classifier:
        if broker.actors.get(message.actor_name) is None:
            return DEFAULT
        classifier: Classifier = broker.get_actor(message.actor_name).options.get(
            "classifier", DEFAULT
        )
        return classifier

    def _dead_letter(self, broker: Broker, message: Any, claim: Claim, outcome: Outcome) -> None:
        headers = dead_letters.headers_for(str(claim.job_id), outcome.error_type, claim.number)
        try:
            dead_letters.publish(broker, message, headers)
        except Exception:
            # SQL says dead with dead_lettered_at unset; the relay publishes the copy later.
            log.warning("job %s: dead letter not published yet", claim.job_id, exc_info=True)
            return
        with self.engine.begin() as db:
            transitions.mark_dead_lettered(db, [claim.job_id])


def _circuit_calls(exception: Any, upstreams: Sequence[str]) -> tuple[circuits.Call, ...]:
    """What an attempt's end says about the upstreams its job calls: a success that each
    answered; an `UpstreamUnavailable` (or a 429 with Retry-After) that the one named
    failed. Any other error says nothing about them."""
    if exception is None:
        return tuple(circuits.Call(name, ok=True) for name in upstreams)
    name = getattr(exception, "upstream", None)
    if name is None:
        return ()
    if isinstance(exception, job_errors.UpstreamUnavailable):
        return (circuits.Call(name, ok=False),)
    if isinstance(exception, job_errors.UpstreamRateLimited) and exception.retry_after_ms:
        return (circuits.Call(name, ok=False, retry_after_s=exception.retry_after_ms / 1000),)
    return ()


def _reason(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _job_id(message: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(message.args[0]))
    except (IndexError, ValueError, TypeError):
        return None
