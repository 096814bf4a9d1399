"""Turning a validated job request into a stored job, and publishing what was stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Problem
from api.schemas import JobRequest
from delivery import replays
from delivery.outbox import Outbox
from store import models
from store.outbox import JobMessage
from store.submissions import NewJob
from tracing import context, spans


@dataclass(frozen=True)
class Defaults:
    """Values a job request may leave out."""

    max_attempts: int
    timeout_s: int


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
    ) -> None:
        self.queues = dict(queues)
        self.callback_hosts = callback_hosts
        self.input_checks = dict(input_checks or {})
        self.defaults = defaults
        self.broker = broker
        self.sessions = sessions
        self.outbox = Outbox(broker, sessions.kw["bind"], group=True, marks_in_background=True)

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
        """Publish committed jobs that are due now; the relay takes the rest (and any failure)."""
        self.outbox.publish([JobMessage.of(j) for j in jobs if j.next_attempt_at is None])

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
