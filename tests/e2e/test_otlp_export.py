"""Spans exported over OTLP/HTTP by the real `courier api` and `courier worker` processes."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@dataclass(frozen=True)
class Received:
    """One span as a collector decoded it, with the service that sent it."""

    service: str
    span: Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return {a.key: _value(a.value) for a in self.span.attributes}


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value"))


class Collector(ThreadingHTTPServer):
    """A tiny OTLP/HTTP trace receiver: decodes every `POST /v1/traces` it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Received] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.spans)


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend(
                        Received(resource["service.name"], s) for s in scope_spans.spans
                    )
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_api_and_worker_export_the_spans_of_a_callers_trace(deployment, upstream, collector):
    deployment.env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    deployment.env["OTEL_SERVICE_NAME"] = "courier-api-e2e"
    deployment.start_api()
    deployment.env["OTEL_SERVICE_NAME"] = "courier-worker-e2e"
    deployment.start_worker(threads=2)
    with deployment.http() as http:
        created = http.post(
            "/v1/jobs",
            json={"type": "customer_sync", "entity_id": "c_otlp"},
            headers={**deployment.token(), "traceparent": CALLER},
        )
    assert created.status_code == 202, created.text
    deployment.wait_status(created.json()["id"], "succeeded")
    [call] = upstream.calls(path="/crm/customers/c_otlp", method="GET")
    assert call["headers"]["traceparent"].split("-")[1] == CALLER_TRACE

    wanted = {
        ("courier-api-e2e", Span.SPAN_KIND_SERVER),
        ("courier-api-e2e", Span.SPAN_KIND_PRODUCER),
        ("courier-worker-e2e", Span.SPAN_KIND_CONSUMER),
        ("courier-worker-e2e", Span.SPAN_KIND_CLIENT),
    }

    def trace() -> list[Received]:
        spans = [r for r in collector.received() if r.trace_id == CALLER_TRACE]
        return spans if wanted <= {(r.service, r.span.kind) for r in spans} else []

    spans = wait_for(
        trace,
        timeout=30,
        what=lambda: (
            f"spans of both services; got {[(r.service, r.span.name) for r in collector.received()]}"
        ),
    )
    [request] = [r for r in spans if r.span.kind == Span.SPAN_KIND_SERVER]
    [attempt] = [r for r in spans if r.span.kind == Span.SPAN_KIND_CONSUMER]
    calls = [r for r in spans if r.span.kind == Span.SPAN_KIND_CLIENT]
    assert request.span.name == "POST /v1/jobs"
    assert request.span.parent_span_id.hex() == CALLER.split("-")[2]
    assert attempt.span.parent_span_id == request.span.span_id
    assert attempt.attributes["messaging.system"] == "rabbitmq"
    assert attempt.attributes["messaging.destination.name"] == "sync"
    assert attempt.attributes["messaging.operation.type"] == "process"
    assert attempt.attributes["courier.job.id"] == created.json()["id"]
    assert len(calls) == 2  # the CRM read and the Billing write
    assert {c.span.parent_span_id for c in calls} == {attempt.span.span_id}
