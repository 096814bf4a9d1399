"""Passwords in URLs never reach an error message or a log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from courier.logs import configure_logging
from courier.redact import redact
from courier.settings import Settings, SettingsError

PASSWORD = "s3cret-Pa55"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
        (
            "postgresql+psycopg://courier:pw@h1:5432,h2:5432/courier?target_session_attrs=read-write",
            "postgresql+psycopg://courier:***@h1:5432,h2:5432/courier?target_session_attrs=read-write",
        ),
        ("amqp://a:b@h1,amqp://c:d@h2/%2F", "amqp://a:***@h1,amqp://c:***@h2/%2F"),
        ("broker 'amqp://u:x@rabbit' refused", "broker 'amqp://u:***@rabbit' refused"),
        ("http://:token@api", "http://:***@api"),
    ],
)
def test_a_password_in_a_url_is_masked(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+psycopg://postgres@127.0.0.1:5432/courier",
        "http://127.0.0.1:8000/v1/jobs?status=dead",
        "memory://",
        "job 0193 failed: 503 from CRM",
    ],
)
def test_text_without_a_password_is_left_as_it_is(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COURIER_DATABASE_URL", f"mysql://courier:{PASSWORD}@db/courier"),
        ("COURIER_BROKER_URL", f"redis://courier:{PASSWORD}@rabbit:6379"),
        ("COURIER_RABBITMQ_API_URL", f"ftp://courier:{PASSWORD}@rabbit:15672"),
    ],
)
def test_an_invalid_url_is_named_in_its_error_without_its_password(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}: ")
    assert PASSWORD not in message
    assert "courier:***@" in message


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Leaves the root logger as it found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_log_lines_and_their_tracebacks_show_no_password(
    log_format: str, root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(log_format)
    url = f"amqp://courier:{PASSWORD}@rabbit:5672/%2F"
    log = logging.getLogger("tests.redaction")

    log.warning("cannot reach %s", url, extra={"broker_url": url})
    try:
        raise ConnectionError(f"connection to {url} refused")
    except ConnectionError:
        log.exception("broker lost")

    err = capsys.readouterr().err
    assert PASSWORD not in err
    assert err.count("amqp://courier:***@rabbit:5672/%2F") >= 3
    if log_format == "json":
        lines = [json.loads(line) for line in err.splitlines()]
        assert lines[0]["event"] == "cannot reach amqp://courier:***@rabbit:5672/%2F"
        assert "ConnectionError" in lines[1]["exception"]
