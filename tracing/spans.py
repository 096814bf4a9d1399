"""The spans of a job's work: request, publish, attempt, upstream call, replay.

With tracing off (no tracer: `tracing.setup` found no exporter wanted) each function does
the least it can: an attempt only remembers its job's traceparent, so that upstream calls
carry children of it, and the others return at once. With tracing on, spans follow the
OpenTelemetry semantic conventions for HTTP and messaging; a job's traceparent is the
parent of its spans, so everything done for the job is in the trace its submitter began.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tracing import context

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None
# The traceparent of the job whose attempt runs in this context, for upstream calls made
# while tracing is off (with it on, the attempt span is the current span instead).
_job_traceparent: ContextVar[str | None] = ContextVar("courier_job_traceparent", default=None)


def use(provider: trace.TracerProvider | None) -> None:
    """Make spans with `provider` from now on; None turns tracing off."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("courier")


def enabled() -> bool:
    """Whether spans are made (and exported)."""
    return _tracer is not None


def current() -> str | None:
    """The traceparent of this context's current span, or None (tracing off, no span)."""
    if _tracer is None:
        return None
    span_context = trace.get_current_span().get_span_context()
    return _format(span_context) if span_context.is_valid else None


# --- spans that stay current until finished (a request, an attempt) ----------------------


@dataclass
class Open:
    """A span made current in this context until `finish()`; empty when tracing is off."""

    span: Span | None = None
    token: Token[Any] | None = None
    job_token: Token[str | None] | None = None

    def finish(
        self,
        error: BaseException | None = None,
        *,
        failed: bool = False,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """End the span and restore the previous context; `error` (recorded) or `failed`
        mark the span as an error."""
        if self.span is not None:
            if attributes:
                self.span.set_attributes(attributes)
            if error is not None:
                self.span.record_exception(error)
                self.span.set_attribute("error.type", type(error).__qualname__)
            if error is not None or failed:
                self.span.set_status(Status(StatusCode.ERROR))
            self.span.end()
        if self.token is not None:
            otel_context.detach(self.token)
        if self.job_token is not None:
            _job_traceparent.reset(self.job_token)


_CLOSED = Open()


def begin_request(method: str, path: str, traceparent: str | None) -> Open:
    """A server span for an HTTP request, in the caller's trace if it sent a valid
    traceparent (an invalid one starts a new trace); nothing when tracing is off."""
    if _tracer is None:
        return _CLOSED
    span = _tracer.start_span(
        method,
        context=_parent(context.parse(traceparent)),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    )
    return Open(span, otel_context.attach(trace.set_span_in_context(span)))


def name_request(opened: Open, method: str, route: str | None) -> None:
    """Name a request span for its route (`POST /v1/jobs`), once routing has found it."""
    if opened.span is not None and route:
        opened.span.update_name(f"{method} {route}")
        opened.span.set_attribute("http.route", route)


def begin_attempt(
    traceparent: str,
    *,
    queue: str,
    message_id: str,
    job_id: str,
    job_type: str,
    attempt: int,
) -> Open:
    """The consumer span of one attempt, a child of the job's traceparent; with tracing off,
    only the job's traceparent is kept for the attempt's upstream calls."""
    if _tracer is None:
        return Open(job_token=_job_traceparent.set(traceparent))
    span = _tracer.start_span(
        f"process {queue}",
        context=_parent(traceparent),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": message_id,
            "courier.job.id": job_id,
            "courier.job.type": job_type,
            "courier.job.attempt": attempt,
        },
    )
    return Open(span, otel_context.attach(trace.set_span_in_context(span)))


# --- spans around one step (a publish, an upstream call) ---------------------------------


class Published(Protocol):
    """A job whose message is being published."""

    @property
    def job_id(self) -> Any: ...
    @property
    def queue(self) -> str: ...
    @property
    def traceparent(self) -> str | None: ...


class Message(Protocol):
    """A message being published."""

    @property
    def message_id(self) -> str: ...


def publishing(
    jobs: Sequence[Published], messages: Sequence[Message]
) -> contextlib.AbstractContextManager[None]:
    """Producer spans, one per job, around the publish of their messages; each is a child
    of its job's traceparent. Nothing at all when tracing is off."""
    if _tracer is None:
        return contextlib.nullcontext()
    return _publishing(_tracer, jobs, messages)


@contextlib.contextmanager
def _publishing(
    tracer: trace.Tracer, jobs: Sequence[Published], messages: Sequence[Message]
) -> Iterator[None]:
    made = [
        tracer.start_span(
            f"publish {job.queue}",
            context=_parent(context.for_job(job.traceparent, job.job_id)),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": job.queue,
                "messaging.rabbitmq.destination.routing_key": job.queue,
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "messaging.message.id": message.message_id,
                "courier.job.id": str(job.job_id),
            },
        )
        for job, message in zip(jobs, messages, strict=True)
    ]
    try:
        yield
    except BaseException as e:
        for span in made:
            span.set_status(Status(StatusCode.ERROR, type(e).__name__))
            span.set_attribute("error.type", type(e).__qualname__)
        raise
    finally:
        for span in made:
            span.end()


@dataclass
class Call:
    """An outgoing HTTP call: the headers it must carry, and its span if tracing is on."""

    headers: dict[str, str] = field(default_factory=dict)
    span: Span | None = None

    def answered(self, status_code: int) -> None:
        """Record the response's status code (4xx and 5xx mark a client span as an error)."""
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status_code)
            if status_code >= 400:
                self.span.set_status(Status(StatusCode.ERROR))
                self.span.set_attribute("error.type", str(status_code))


@contextlib.contextmanager
def upstream_call(service: str, method: str, url: str) -> Iterator[Call]:
    """A client span for one upstream call, and the `traceparent` header it carries: a
    child of the current attempt (of its span when tracing is on, of its job's traceparent
    when off). Outside an attempt with tracing off, no header."""
    if _tracer is None:
        job = _job_traceparent.get()
        yield Call({"traceparent": context.child(job)} if job is not None else {})
        return
    with _tracer.start_as_current_span(
        method,
        kind=SpanKind.CLIENT,
        attributes={"http.request.method": method, "url.full": url, "peer.service": service},
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers)
        yield Call(headers, span)


def replay(old_traceparent: str | None, *, old_job_id: str) -> str:
    """The traceparent of a replay's new job: a new trace, whose first span (with tracing
    on) links to the replayed job's trace."""
    if _tracer is None:
        return context.start()
    old = _span_context(context.parse(old_traceparent))
    span = _tracer.start_span(
        "replay",
        context=otel_context.Context(),  # a root: the new job's trace is a new one
        links=[Link(old)] if old is not None else None,
        attributes={"courier.job.replay_of": old_job_id},
    )
    span.end()
    return _format(span.get_span_context())


def _parent(traceparent: str | None) -> otel_context.Context:
    # An empty context (no traceparent) makes the span a root of a new trace.
    return _PROPAGATOR.extract({"traceparent": traceparent} if traceparent else {})


def _span_context(traceparent: str | None) -> trace.SpanContext | None:
    if traceparent is None:
        return None
    span_context = trace.get_current_span(_parent(traceparent)).get_span_context()
    return span_context if span_context.is_valid else None


def _format(span_context: trace.SpanContext) -> str:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(span_context)))
    return carrier["traceparent"]
