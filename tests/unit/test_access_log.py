"""The API's access log writes gunicorn's default line, built from fewer fields."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from api.access_log import AccessLog


class Response:
    status = "202 Accepted"
    sent = 555
    headers = [("Content-Type", "application/json"), ("X-Request-ID", "r-1")]


class Request:
    headers = [("HOST", "127.0.0.1:8000"), ("AUTHORIZATION", "Bearer ck_x")]


ENVIRON = {
    "REMOTE_ADDR": "10.0.0.7",
    "REQUEST_METHOD": "POST",
    "RAW_URI": "/v1/jobs?x=1",
    "PATH_INFO": "/v1/jobs",
    "QUERY_STRING": "x=1",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_USER_AGENT": "httpx/0.28",
    "HTTP_AUTHORIZATION": "Bearer ck_x",
    "wsgi.url_scheme": "http",
}


def line(logger_class: type[Logger], **settings: str) -> str:
    config = Config()
    config.set("accesslog", "-")
    for name, value in settings.items():
        config.set(name, value)
    logger = logger_class(config)
    stream = io.StringIO()
    for handler in logger.access_log.handlers:
        if getattr(handler, "_gunicorn", False):  # not pytest's own
            handler.setStream(stream)
    logger.access(Response, Request, ENVIRON, timedelta(milliseconds=3))
    return stream.getvalue()


@pytest.fixture
def stopped_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both loggers stamp the line with `time.strftime` of now: pinned, no second can tick
    between the two lines."""
    instant = time.localtime(1_699_963_200)  # noon UTC, 14 Nov 2023
    strftime = time.strftime
    monkeypatch.setattr(time, "strftime", lambda fmt, t=instant: strftime(fmt, t))


def test_the_line_is_gunicorns_default(stopped_clock: None):
    ours, theirs = line(AccessLog), line(Logger)
    assert ours == theirs
    assert "[14/Nov/2023:" in ours  # the pinned instant reached both
    assert '"POST /v1/jobs?x=1 HTTP/1.1" 202 555 "-" "httpx/0.28"' in ours


def test_another_format_is_left_to_gunicorn():
    assert line(AccessLog, access_log_format="%(m)s %(s)s %({x-request-id}o)s") == "POST 202 r-1\n"
