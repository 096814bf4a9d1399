"""The webhook signature and headers, and which callback URLs are allowed."""

from __future__ import annotations

import uuid

import pytest

from api.intake import callback_problem
from courier.settings import Settings, SettingsError
from delivery import webhooks
from store.webhooks import Due

SECRET = "whsec_test_secret"
BODY = b'{"id":"job-1","status":"succeeded"}'
# Computed independently: printf '%s' '1700000000.<BODY>' | openssl dgst -sha256 -hmac <SECRET>
V1 = "84fb92afd43295433e787a6584b0cbd570e6b6f2c30b4b9c8b839827cdc6c2c7"


def _due(**changes) -> Due:
    fields = {
        "id": uuid.UUID("9b2f0d4e-3c1a-4f7e-8a55-0f6b1e2d3c4b"),
        "job_id": uuid.uuid4(),
        "event": "job.succeeded",
        "url": "https://hooks.example.com/courier",
        "body": {"id": "job-1", "status": "succeeded"},
        "attempt": 1,
        "tenant": "acme",
        "traceparent": None,
        "secret": SECRET,
    }
    return Due(**{**fields, **changes})


def test_the_signature_is_the_hmac_sha256_of_timestamp_dot_body_in_hex():
    assert webhooks.signature(SECRET, 1700000000, BODY) == f"t=1700000000,v1={V1}"


def test_the_signature_changes_with_the_body_the_time_and_the_secret():
    base = webhooks.signature(SECRET, 1700000000, BODY)
    assert webhooks.signature(SECRET, 1700000000, BODY + b" ") != base
    assert webhooks.signature(SECRET, 1700000001, BODY) != base
    assert webhooks.signature(SECRET + "x", 1700000000, BODY) != base


def test_the_body_is_sent_as_compact_utf8_json():
    assert webhooks.body_bytes({"id": "job-1", "status": "succeeded"}) == BODY
    assert webhooks.body_bytes({"name": "Müller"}) == '{"name":"Müller"}'.encode()


def test_the_headers_name_the_event_the_delivery_and_sign_the_exact_body():
    headers = webhooks.headers_for(_due(), BODY, timestamp=1700000000)
    assert headers["Courier-Event"] == "job.succeeded"
    assert headers["Courier-Delivery"] == "9b2f0d4e-3c1a-4f7e-8a55-0f6b1e2d3c4b"
    assert headers["Courier-Signature"] == f"t=1700000000,v1={V1}"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("Courier/")


def test_a_job_stored_without_a_trace_sends_one_derived_from_its_id():
    due = _due()
    sent = webhooks.headers_for(due, BODY, timestamp=1)["traceparent"]
    assert sent[3:35] == due.job_id.hex


def test_a_job_with_a_trace_sends_a_child_of_it():
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    sent = webhooks.headers_for(_due(traceparent=trace), BODY, timestamp=1)["traceparent"]
    assert sent[:36] == trace[:36] and sent[-3:] == "-01"
    assert sent != trace


ALLOWED = frozenset({"hooks.example.com", "127.0.0.1", "[::1]"})


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/courier",
        "https://Hooks.Example.COM/courier",
        "http://hooks.example.com.:8080/x?y=1#z",
        "http://127.0.0.1:9000/",
        "http://[::1]:9000/hook",
    ],
)
def test_a_url_on_an_allowed_host_is_fine_whatever_its_port(url):
    assert callback_problem(url, ALLOWED) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.test/courier", "not an allowed callback host"),
        ("https://hooks.example.com.evil.test/", "not an allowed callback host"),
        ("https://sub.hooks.example.com/", "not an allowed callback host"),
        ("https://hooks.example.com@evil.test/", "user name or password"),
        ("https://me:pw@hooks.example.com/", "user name or password"),
        ("file:///etc/passwd", "http or https"),
        ("hooks.example.com/courier", "http or https"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com/\r\nX: y", "control characters"),
        ("https://hooks.example.com:http/", "not a valid URL"),
        ("https:///courier", "must name a host"),
    ],
)
def test_a_url_elsewhere_or_with_credentials_is_refused(url, why):
    assert why in (callback_problem(url, ALLOWED) or "")


def test_with_no_allowed_hosts_every_url_is_refused():
    assert "no callback hosts" in (
        callback_problem("https://hooks.example.com/", frozenset()) or ""
    )


def test_callback_hosts_are_read_as_lower_case_names_without_ports():
    s = Settings.from_env({"COURIER_CALLBACK_HOSTS": " Hooks.Example.com, 127.0.0.1 ,,"})
    assert s.callback_hosts == frozenset({"hooks.example.com", "127.0.0.1"})
    assert Settings.from_env({}).callback_hosts == frozenset()
    assert Settings.from_env({}).webhook_retry_s == 86_400
    with pytest.raises(SettingsError, match="COURIER_CALLBACK_HOSTS"):
        Settings.from_env({"COURIER_CALLBACK_HOSTS": "hooks.example.com:8443"})
