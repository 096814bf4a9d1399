"""A database URL that lists several hosts: connections skip the ones that cannot serve."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from store.db import CONNECT_TIMEOUT_S, make_engine

pytestmark = pytest.mark.integration


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes TCP connections and never answers, like a host that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accepted: the kernel completes handshakes, nobody speaks
        yield listener.getsockname()[1]


def listed(first: str, database_url: str, query: str = "") -> str:
    """`database_url` with another host before its own, in libpq's comma form."""
    url = urlsplit(database_url)
    user, _, host = url.netloc.rpartition("@")
    return url._replace(netloc=f"{user}@{first},{host}", query=query).geturl()


def server_of(url: str) -> tuple[int, float]:
    """The port of the server a new connection lands on, and how long connecting took."""
    engine = make_engine(url, pool_size=1)
    try:
        began = time.monotonic()
        with engine.connect() as db:
            port = db.execute(text("SELECT inet_server_port()")).scalar_one()
        return port, time.monotonic() - began
    finally:
        engine.dispose()


def test_a_host_that_refuses_connections_is_skipped_at_once(database_url):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = listed(f"127.0.0.1:{closed.getsockname()[1]}", database_url)
        port, took = server_of(url)
    assert port == urlsplit(database_url).port
    assert took < 1.5


def test_a_host_that_never_answers_costs_the_connect_timeout_the_url_names(
    database_url, silent_port
):
    url = listed(f"127.0.0.1:{silent_port}", database_url, "connect_timeout=2")
    port, took = server_of(url)
    assert port == urlsplit(database_url).port
    # psycopg's floor is 2 s; Courier's own default (5 s) must not override the URL's.
    assert 2 <= took < CONNECT_TIMEOUT_S
