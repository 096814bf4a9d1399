"""Turning span export on from the standard `OTEL_*` variables, once per process.

Export is off unless `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER` asks for it, and `OTEL_SDK_DISABLED=true` keeps it off. When it is
off no tracer exists, and `tracing.spans` does nothing but pass traceparents along. The SDK
and the OTLP exporter read the other variables themselves (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, ...).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from tracing import spans

log = logging.getLogger(__name__)

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
#: The one OTLP protocol exported: gRPC would add grpcio to every install.
PROTOCOL = "http/protobuf"


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for spans to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporter_names(environ)
    if exporters is not None:
        return exporters != ["none"]
    return any(environ.get(name, "").strip() for name in _ENDPOINTS)


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Export spans as the environment says, named `service` unless `OTEL_SERVICE_NAME` is
    set; returns whether tracing is on. Call it once, at the process's entry point (after
    any fork: the exporter runs a thread)."""
    environ = os.environ if environ is None else environ
    if not wanted(environ):
        return False
    names = _exporter_names(environ) or ["otlp"]
    if "otlp" in names and (problem := protocol_problem(environ)):
        log.warning(problem)
    exporters = [e for name in names if (e := _exporter(name))]
    if not exporters:
        return False
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which win over
    # the default name given here.
    defaults = Resource({SERVICE_NAME: service})
    provider = TracerProvider(resource=defaults.merge(Resource.create()))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    spans.use(provider)
    name = provider.resource.attributes.get(SERVICE_NAME, service)
    log.info("tracing on: spans of %s exported (%s)", name, ", ".join(_names(exporters)))
    return True


def use_processor(processor: SpanProcessor, service: str = "courier") -> TracerProvider:
    """Turn tracing on with one span processor of the caller's (tests, embedding)."""
    provider = TracerProvider(resource=Resource({SERVICE_NAME: service}))
    provider.add_span_processor(processor)
    spans.use(provider)
    return provider


def _exporter_names(environ: Mapping[str, str]) -> list[str] | None:
    value = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return [n.strip() for n in value.split(",") if n.strip()] or None


def protocol_problem(environ: Mapping[str, str]) -> str | None:
    """What to warn of when the environment asks for an OTLP protocol not exported."""
    # The traces variable wins over the general one, as in the SDK.
    for variable in _PROTOCOLS:
        asked = environ.get(variable, "").strip().lower()
        if asked:
            if asked == PROTOCOL:
                return None
            return f"{variable}={asked}: spans are exported over OTLP {PROTOCOL} only (port 4318)"
    return None


def _exporter(name: str) -> SpanExporter | None:
    if name == "otlp":
        # Imported only when wanted: the exporter pulls in protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        return ConsoleSpanExporter()
    if name != "none":
        log.warning("OTEL_TRACES_EXPORTER: %r is not one of otlp, console, none; ignored", name)
    return None


def _names(exporters: list[SpanExporter]) -> list[str]:
    return [type(e).__name__ for e in exporters]
