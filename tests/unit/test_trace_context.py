"""W3C traceparent values: what is read from a caller, and the children Courier makes."""

from __future__ import annotations

import uuid

import pytest

from tracing import context, setup

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_kept_as_sent():
    assert context.parse(VALID) == VALID


def test_surrounding_whitespace_is_ignored():
    assert context.parse(f"  {VALID}\t") == VALID


def test_a_missing_header_gives_nothing():
    assert context.parse(None) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(VALID.upper(), id="upper-case hex"),
        pytest.param("ff" + VALID[2:], id="version ff"),
        pytest.param("00-" + "0" * 32 + "-00f067aa0ba902b7-01", id="zero trace id"),
        pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", id="zero span id"),
        pytest.param("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", id="short id"),
        pytest.param(VALID + "-extra", id="trailing field"),
        pytest.param("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", id="separators"),
        pytest.param("", id="empty"),
        pytest.param("not a traceparent", id="junk"),
        pytest.param("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9 2b7-01", id="inner space"),
    ],
)
def test_a_malformed_traceparent_is_ignored(value):
    assert context.parse(value) is None


def test_a_started_trace_is_valid_sampled_and_new_each_time():
    first, second = context.start(), context.start()
    assert context.parse(first) == first
    assert first.endswith("-01")
    assert context.trace_id(first) != context.trace_id(second)


@pytest.mark.parametrize("flags", ["00", "01"])
def test_a_child_keeps_the_trace_id_and_flags_with_a_new_span_id(flags):
    parent = VALID[:-2] + flags
    child = context.child(parent)
    assert context.parse(child) == child
    assert context.trace_id(child) == context.trace_id(parent)
    assert child.endswith(f"-{flags}")
    assert child.split("-")[2] != parent.split("-")[2]


def test_a_job_stored_without_a_traceparent_has_one_trace_for_all_its_attempts():
    job_id = uuid.UUID("0190f1e2-7a3b-7c4d-8e5f-a1b2c3d4e5f6")
    derived = context.for_job(None, job_id)
    assert context.parse(derived) == derived
    assert context.trace_id(derived) == job_id.hex
    assert context.for_job(None, job_id) == derived
    assert context.for_job(VALID, job_id) == VALID


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "api"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_spans_are_exported_only_when_the_environment_asks(environ, wanted):
    assert setup.wanted(environ) is wanted


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, None),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: spans are exported over OTLP http/protobuf"
            " only (port 4318)",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "GRPC", "OTEL_EXPORTER_OTLP_PROTOCOL": ""},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc: spans are exported over OTLP"
            " http/protobuf only (port 4318)",
        ),
        # The traces variable wins, as in the SDK.
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            None,
        ),
    ],
)
def test_an_otlp_protocol_other_than_http_is_warned_of(environ, problem):
    assert setup.protocol_problem(environ) == problem
