"""Turning a validated job request into a stored job, and publishing what was stored.

Two per-tenant bounds apply on the way: the tenant's quota of active jobs (a submission
over it answers 429), and its share of each queue in the broker (jobs beyond the share stay
in the outbox, and the relay publishes them as the broker drains, tenant by tenant).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Problem
from api.estimates import Estimates
from api.schemas import JobRequest
from delivery import replays
from delivery.outbox import Outbox
from store import fairness, models, quotas, schedules
from store.outbox import JobMessage
from store.submissions import NewJob
from tracing import context, spans


@dataclass(frozen=True)
class Defaults:
    """Values a job request may leave out."""

    max_attempts: int
    timeout_s: int


#: What a client over its quota is told to wait before it submits again, in seconds.
QUOTA_RETRY_AFTER_S = 5

#: A job type's check of its input (entity id, payload): what is wrong, or None.
InputCheck = Callable[[str | None, Mapping[str, Any]], str | None]


class Intake:
    """What resources need to accept jobs: known types and their input checks, defaults, the
    broker and the store."""

    def __init__(
        self,
        *,
        queues: Mapping[str, str],
        defaults: Defaults,
        broker: dramatiq.Broker,
        sessions: sessionmaker[Session],
        input_checks: Mapping[str, InputCheck] | None = None,
        callback_hosts: frozenset[str] = frozenset(),
        fair_share: int = fairness.DEFAULT_SHARE,
        max_active: int = quotas.DEFAULT_MAX_ACTIVE,
    ) -> None:
        self.queues = dict(queues)
        self.callback_hosts = callback_hosts
        self.input_checks = dict(input_checks or {})
        self.defaults = defaults
        self.broker = broker
        self.sessions = sessions
        self.outbox = Outbox(broker, sessions.kw["bind"], group=True, marks_in_background=True)
        self.engine = sessions.kw["bind"]
        # A tenant's messages in a queue: read at least every second, and again (at most ten
        # times a second) while the tenant is at its share.
        self.shares: Estimates[tuple[str, str]] = Estimates(
            self._in_broker, limit=fair_share, refresh_s=1.0, recheck_s=0.1
        )
        # A tenant's active jobs: read every 5 s, and within the last tenth of the quota
        # again when the figure is a quarter of a second old.
        self.quota: Estimates[str] = Estimates(
            self._active,
            limit=max_active,
            refresh_s=5.0,
            recheck_s=0.25,
            near=max(1, max_active // 10),
        )

    def _in_broker(self, key: tuple[str, str]) -> int:
        with self.engine.connect() as db:
            return fairness.in_broker(db, *key, cap=self.shares.limit)

    def _active(self, tenant: str, db: Session | None = None) -> int:
        if db is not None:
            return quotas.active_jobs(db, tenant, up_to=self.quota.limit)
        with self.engine.connect() as conn:
            return quotas.active_jobs(conn, tenant, up_to=self.quota.limit)

    def admit(self, tenant: str, wanted: int = 1, *, db: Session | None = None) -> int:
        """How many of `wanted` new jobs the tenant's quota admits (counted in as accepted),
        counted in `db`'s transaction if one is given.

        Give back with `refund` what was admitted but not stored.
        """
        read = None if db is None else partial(self._active, db=db)
        return self.quota.take(tenant, wanted, read=read)

    def refund(self, tenant: str, count: int) -> None:
        """Count out admitted jobs that were not stored after all (refused, or repeats)."""
        if count:
            self.quota.give_back(tenant, count)

    @contextmanager
    def one_more(self, tenant: str, session: Session) -> Iterator[None]:
        """Admit one new job of the tenant under its quota (429 if over) for the block that
        creates it in `session`; counted out again if the block raises."""
        if self.admit(tenant, db=session) == 0:
            raise self.over_quota(tenant)
        try:
            yield
        except BaseException:
            self.refund(tenant, 1)
            raise

    def trigger(
        self,
        session: Session,
        schedule: models.Schedule,
        *,
        queue: str,
        actor: str,
        reason: str | None,
    ) -> models.Job:
        """Create a schedule's job now, outside its cadence; its tenant's quota applies."""
        with self.one_more(schedule.tenant, session):
            return schedules.trigger(
                session,
                schedule,
                queue=queue,
                timeout_s=self.defaults.timeout_s,
                actor=actor,
                reason=reason,
            )

    def over_quota(self, tenant: str) -> Problem:
        """The 429 for a job the tenant's quota does not admit."""
        return Problem(
            falcon.HTTP_429,
            "Too Many Requests",
            f"tenant {tenant!r} has {self.quota.limit} active jobs, its quota; "
            "submit again when some have finished",
            headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
        )

    def new_job(
        self,
        request: JobRequest,
        *,
        tenant: str,
        correlation_id: str | None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        traceparent: str | None = None,
    ) -> NewJob:
        """The store's view of a request; 422 for a type no worker knows. Without a
        `traceparent` the job starts a trace of its own."""
        queue = self.queues.get(request.type)
        if queue is None:
            known = ", ".join(sorted(self.queues))
            raise Problem(
                falcon.HTTP_422,
                "Unknown job type",
                f"{request.type!r} is not a job type; known types: {known}",
            )
        self.check_input(request.type, request.entity_id, request.payload)
        if request.callback_url is not None:
            self.check_callback(request.callback_url)
        return NewJob(
            tenant=tenant,
            type=request.type,
            queue=queue,
            entity_id=request.entity_id,
            payload=request.payload,
            priority=request.priority,
            max_attempts=request.max_attempts or self.defaults.max_attempts,
            timeout_s=request.timeout_s or self.defaults.timeout_s,
            run_at=request.run_at,
            correlation_id=correlation_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            callback_url=request.callback_url,
            traceparent=traceparent or context.start(),
        )

    def check_input(self, job_type: str, entity_id: str | None, payload: Mapping[str, Any]) -> None:
        """422 for input the job type would refuse when it runs (checked without running it)."""
        check = self.input_checks.get(job_type)
        problem = None if check is None else check(entity_id, payload)
        if problem is not None:
            raise Problem(
                falcon.HTTP_422, "Invalid request", f"not valid for {job_type}: {problem}"
            )

    def check_callback(self, url: str) -> None:
        """422 naming callback_url unless it is an http(s) URL on an allowed host."""
        problem = callback_problem(url, self.callback_hosts)
        if problem is not None:
            raise Problem(
                falcon.HTTP_422,
                "Invalid request",
                f"callback_url: {problem}",
                errors=[{"field": "callback_url", "message": problem}],
            )

    def publish(self, jobs: list[models.Job]) -> None:
        """Publish committed jobs that are due now, each tenant up to its share of the queue
        in the broker; the relay takes the rest (and any failure).

        When only some of a tenant's jobs fit, the highest priorities go first.
        """
        groups: dict[tuple[str, str], list[models.Job]] = defaultdict(list)
        for job in jobs:
            if job.next_attempt_at is None:
                groups[job.queue, job.tenant].append(job)
        sending: list[JobMessage] = []
        taken: dict[tuple[str, str], int] = {}
        for key, group in groups.items():
            taken[key] = room = self.shares.take(key, len(group))
            if room < len(group):
                group = sorted(group, key=lambda j: -j.priority)[:room]
            sending.extend(JobMessage.of(j) for j in group)
        if sending and self.outbox.publish(sending) == 0:
            for key, count in taken.items():
                self.shares.give_back(key, count)

    def forget_dead_letters(self, jobs: list[models.Job]) -> None:
        """Remove replayed jobs' copies from their dead-letter queues (best effort)."""
        replays.forget(self.outbox, jobs)


def callback_problem(url: str, allowed: frozenset[str]) -> str | None:
    """What is wrong with a callback URL, or None.

    The host must be one of `allowed` exactly (case-insensitive, a trailing dot ignored);
    any port on it is allowed. Nothing is resolved here: the allowlist names hosts, so a
    client cannot point Courier at an internal address the deployment did not name.
    """
    if not allowed:
        return "webhooks are off: this deployment allows no callback hosts"
    if any(c <= " " or c == "\x7f" for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not one
    except ValueError as e:
        return f"is not a valid URL ({e})"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "must name a host"
    if host not in allowed and f"[{host}]" not in allowed:
        return f"host {host!r} is not an allowed callback host"
    return None


def traceparent(req: falcon.Request) -> str | None:
    """The trace context a request's jobs join, or None for a job to start its own.

    It is the caller's valid `traceparent` (a malformed one is ignored), or with tracing on
    the request's span, itself in the caller's trace; a single job submitted without one
    joins the request's new trace, so its spans nest under the request.
    """
    return spans.current() or context.parse(req.get_header("traceparent"))


def shared_traceparent(req: falcon.Request) -> str | None:
    """The trace context every job of a batch joins: only the caller's (or the request
    span in it); without one, each job of the batch starts a trace of its own."""
    caller = context.parse(req.get_header("traceparent"))
    return (spans.current() or caller) if caller is not None else None


def correlation_id(req: falcon.Request) -> str | None:
    """The client's request id, if it sent one."""
    return req.context.request_id if req.context.request_id_given else None
