"""Trace context end to end: the caller's trace reaches every attempt and upstream call, and
the spans of a job's work (request, publish, attempt, upstream call) nest in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from delivery.outbox import Outbox
from store import submissions
from store.outbox import JobMessage
from tests.support.polling import wait_for
from tests.support.stack import Stack, build
from tracing import context, setup, spans

pytestmark = pytest.mark.integration

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span ended kept in memory."""
    exporter = InMemorySpanExporter()
    provider = setup.use_processor(SimpleSpanProcessor(exporter))
    yield exporter
    spans.use(None)
    provider.shutdown()


@pytest.fixture
def traced(exported, settings, engine, sessions) -> Iterator[Stack]:
    """The stack built with tracing on (the API installs its request spans then)."""
    s = build(settings, engine, sessions)
    yield s
    s.close()


def trace_of(span: ReadableSpan) -> str:
    return f"{span.context.trace_id:032x}"


def span_id(span: ReadableSpan) -> str:
    return f"{span.context.span_id:016x}"


def in_trace(exporter: InMemorySpanExporter, trace: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if trace_of(s) == trace]


def header_trace(call: dict) -> str:
    traceparent = context.parse(call["headers"].get("traceparent"))
    assert traceparent is not None, call
    return context.trace_id(traceparent)


def test_a_callers_trace_reaches_every_upstream_call_of_every_attempt_and_the_spans_nest(
    traced, exported, upstream
):
    upstream.script("GET", "/crm/customers/c_tr1", {"status": 503})  # then the demo answers
    traced.start_worker()
    job_id = traced.submit(
        headers={**traced.headers, "traceparent": CALLER},
        type="customer_sync",
        entity_id="c_tr1",
    )
    traced.wait_status(job_id, "succeeded")
    assert context.trace_id(traced.job(job_id).traceparent) == CALLER_TRACE

    reads = upstream.calls(path="/crm/customers/c_tr1", method="GET")
    writes = upstream.calls(path="/billing/customers/c_tr1", method="PUT")
    assert len(reads) == 2 and len(writes) == 1
    assert {header_trace(c) for c in reads + writes} == {CALLER_TRACE}

    ours = in_trace(exported, CALLER_TRACE)
    [request] = [s for s in ours if s.kind == SpanKind.SERVER]
    # The API publishes the job, the relay its retry: both in the job's trace.
    publishes = [s for s in ours if s.kind == SpanKind.PRODUCER]
    attempts = sorted(
        (s for s in ours if s.kind == SpanKind.CONSUMER),
        key=lambda s: s.attributes["courier.job.attempt"],
    )
    calls = [s for s in ours if s.kind == SpanKind.CLIENT]
    assert request.name == "POST /v1/jobs"
    assert f"{request.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert request.attributes["http.response.status_code"] == 202
    assert len(publishes) == 2
    for publish in publishes:
        assert publish.parent.span_id == request.context.span_id
        assert publish.name == "publish sync"
        assert publish.attributes["messaging.destination.name"] == "sync"
        assert publish.attributes["courier.job.id"] == job_id
    assert [a.attributes["courier.job.attempt"] for a in attempts] == [1, 2]
    for attempt in attempts:
        assert attempt.parent.span_id == request.context.span_id
        assert attempt.name == "process sync"
        assert attempt.attributes["messaging.system"] == "rabbitmq"
        assert attempt.attributes["messaging.operation.type"] == "process"
        assert attempt.attributes["courier.job.id"] == job_id
        assert attempt.attributes["courier.job.type"] == "customer_sync"
    assert attempts[0].status.is_ok is False and attempts[1].status.is_ok
    # Each call's span is a child of its attempt's, and the header sent names that span.
    by_attempt = {a.context.span_id: a.attributes["courier.job.attempt"] for a in attempts}
    assert sorted(by_attempt[c.parent.span_id] for c in calls) == [1, 2, 2]
    sent = {c["headers"]["traceparent"].split("-")[2] for c in reads + writes}
    assert sent == {span_id(c) for c in calls}
    failed = [c for c in calls if c.attributes.get("http.response.status_code") == 503]
    assert len(failed) == 1 and not failed[0].status.is_ok


def test_a_malformed_traceparent_is_ignored_and_the_job_starts_a_trace(traced, exported):
    response = traced.client.simulate_post(
        "/v1/jobs",
        json={"type": "customer_sync", "entity_id": "c_tr2"},
        headers={**traced.headers, "traceparent": "00-not-a-trace-01"},
    )
    assert response.status_code == 202, response.text
    stored = traced.job(response.json["id"]).traceparent
    assert context.parse(stored) == stored
    [request] = [s for s in exported.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert request.parent is None and trace_of(request) == context.trace_id(stored)


def test_without_a_traceparent_each_job_gets_its_own_trace(traced):
    singles = [traced.submit(type="customer_sync", entity_id=f"c_tr3_{i}") for i in range(2)]
    batch = traced.submit_all(
        [{"type": "customer_sync", "entity_id": f"c_tr4_{i}"} for i in range(3)]
    )
    traces = {context.trace_id(traced.job(j).traceparent) for j in singles + batch}
    assert len(traces) == 5


def test_a_batch_with_a_traceparent_puts_every_job_in_the_callers_trace(traced):
    ids = traced.submit_all(
        [{"type": "customer_sync", "entity_id": f"c_tr5_{i}"} for i in range(3)],
        headers={**traced.headers, "traceparent": CALLER},
    )
    assert {context.trace_id(traced.job(j).traceparent) for j in ids} == {CALLER_TRACE}


def test_a_replay_starts_a_new_trace_linked_to_the_old_one(traced, exported):
    old_id = traced.submit(
        headers={**traced.headers, "traceparent": CALLER},
        type="customer_sync",
        entity_id="c_tr6",
    )
    cancel = traced.client.simulate_post(f"/v1/jobs/{old_id}/cancel", headers=traced.headers)
    assert cancel.status_code in (200, 202), cancel.text
    replay = traced.client.simulate_post(f"/v1/jobs/{old_id}/replay", headers=traced.headers)
    assert replay.status_code == 202, replay.text

    new_trace = context.trace_id(traced.job(replay.json["id"]).traceparent)
    assert new_trace != CALLER_TRACE
    [first] = [s for s in in_trace(exported, new_trace) if s.name == "replay"]
    assert first.parent is None
    assert [f"{link.context.trace_id:032x}" for link in first.links] == [CALLER_TRACE]
    assert first.attributes["courier.job.replay_of"] == old_id


def test_a_bulk_replay_of_dead_jobs_gives_each_new_job_a_new_trace(traced, exported, upstream):
    upstream.script("GET", "/crm/customers/c_tr7", {"status": 503}, repeat_last=True)
    traced.start_worker()
    old_id = traced.submit(
        headers={**traced.headers, "traceparent": CALLER},
        type="customer_sync",
        entity_id="c_tr7",
        max_attempts=1,
    )
    traced.wait_status(old_id, "dead")
    # Right after the job dies its worker records the dead letter in a write of its own, and
    # a replay passes over a row another transaction holds: let that write be done first.
    wait_for(lambda: traced.job(old_id).dead_lettered_at, what="the dead letter recorded")
    upstream.reset()
    response = traced.client.simulate_post(
        "/v1/dead-letters/replay", json={"job_ids": [old_id]}, headers=traced.token(role="operator")
    )
    assert response.status_code == 202, response.text
    [replayed] = response.json["replayed"]
    new_id = replayed["new_job_id"]
    traced.wait_status(new_id, "succeeded")

    new_trace = context.trace_id(traced.job(new_id).traceparent)
    assert new_trace != CALLER_TRACE
    [call] = upstream.calls(path="/crm/customers/c_tr7", method="GET")
    assert header_trace(call) == new_trace
    # The attempt's span ended before its outcome was written, so all are in by now.
    names = {s.name for s in in_trace(exported, new_trace)}
    assert {"replay", "publish sync", "process sync", "GET"} <= names


def test_with_tracing_off_every_upstream_call_still_carries_the_callers_trace(stack, upstream):
    assert not spans.enabled()
    upstream.script("GET", "/crm/customers/c_tr8", {"status": 503})
    stack.start_worker()
    job_id = stack.submit(
        headers={**stack.headers, "traceparent": CALLER}, type="customer_sync", entity_id="c_tr8"
    )
    stack.wait_status(job_id, "succeeded")
    assert stack.job(job_id).traceparent == CALLER
    calls = upstream.calls(path="/crm/customers/c_tr8") + upstream.calls(
        path="/billing/customers/c_tr8"
    )
    assert len(calls) == 3
    assert {header_trace(c) for c in calls} == {CALLER_TRACE}
    # A child per call: a new span id each time, the caller's flags.
    sent = [c["headers"]["traceparent"] for c in calls]
    assert len({tp.split("-")[2] for tp in sent} | {CALLER.split("-")[2]}) == 4
    assert {tp[-2:] for tp in sent} == {"01"}


def test_a_job_stored_without_a_traceparent_keeps_one_trace_over_its_attempts(stack, upstream):
    upstream.script("GET", "/crm/customers/c_tr9", {"status": 503})
    stack.start_worker()
    new = submissions.NewJob(
        tenant="acme",
        type="customer_sync",
        queue="sync",
        entity_id="c_tr9",
        max_attempts=3,
        timeout_s=30,
    )
    with stack.sessions.begin() as session:
        job, _ = submissions.create_job(session, new)
    Outbox(stack.api_broker, stack.engine).publish([JobMessage.of(job)])
    stack.wait_status(str(job.id), "succeeded")
    calls = upstream.calls(path="/crm/customers/c_tr9")
    assert len(calls) == 2
    assert {header_trace(c) for c in calls} == {job.id.hex}
