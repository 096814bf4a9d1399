"""Slow clients behind the repository's nginx configuration: they hold nginx connections, not
gunicorn threads, so the API keeps answering everyone else.

nginx is Debian's (`make services` installs it), run as an unprivileged foreground process on
a configuration rendered from deploy/nginx/courier.conf: only the upstream address and the
listening port differ from what docker-compose.yml mounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.faults.private_services import port_open
from tests.support.deployment import ProcessDeployment, label_for
from tests.support.polling import wait_for
from tests.support.processes import Process, free_port, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.timing]

NGINX = Path("/usr/sbin/nginx")
SERVER_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "courier.conf"
#: Few enough threads that the slow clients outnumber them.
API_ARGS = ("--workers", "1", "--threads", "4")


def render(upstream: str, port: int, root: Path) -> str:
    """A whole nginx.conf around the repository's server block, everything kept under `root`."""
    server = SERVER_CONF.read_text()
    for compose, here in (
        ("server api:8000;", f"server {upstream};"),
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
    ):
        assert server.count(compose) == 1, f"{SERVER_CONF} no longer says {compose!r}"
        server = server.replace(compose, here)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {root / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\nworker_processes 1;\npid {root / 'nginx.pid'};\nerror_log stderr info;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {root / 'access.log'};\n{temp_paths}\n{server}\n}}\n"
    )


@pytest.fixture
def nginx_root() -> Iterator[tuple[Path, str | None]]:
    """A directory for nginx's files, owned by the user nginx runs as (www-data under root)."""
    if not NGINX.exists():
        reason = f"{NGINX} is missing (make services installs Debian's nginx)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="courier-nginx-"))
    user = "www-data" if os.geteuid() == 0 else None
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    yield root, user
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def small_api(deployment: ProcessDeployment) -> str:
    """`courier api` with few threads, ready; its address (host:port)."""
    bind = deployment.api_url.removeprefix("http://")
    api = deployment.start("api", "api", "--bind", bind, *API_ARGS)
    wait_http(f"{deployment.api_url}/readyz", process=api, timeout=60)
    return bind


@contextlib.contextmanager
def running_nginx(
    nginx_root: tuple[Path, str | None], upstream: str, request: pytest.FixtureRequest
) -> Iterator[tuple[Process, str]]:
    """nginx in front of `upstream`, in the foreground: the process and its base URL. Its
    logs are named after the test, which may run beside another one of this module."""
    root, user = nginx_root
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(render(upstream, port, root))
    command = [str(NGINX), "-e", "stderr", "-p", str(root), "-c", str(conf)]
    name = f"e2e-nginx-{label_for(request.node.name)}"
    check = Process(f"{name}-check", [*command, "-t"], {}, user=user)
    assert check.wait(30) == 0, check.output()
    nginx = Process(name, command, {}, cwd=str(root), user=user)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: port_open(port) or not nginx.running, timeout=30, what="nginx")
        if not nginx.running:
            raise nginx.exited_early()
        yield nginx, url
    finally:
        nginx.stop(timeout=10)


@pytest.fixture
def proxy(
    request: pytest.FixtureRequest, nginx_root: tuple[Path, str | None], small_api: str
) -> Iterator[tuple[Process, str]]:
    """nginx in front of the small API."""
    with running_nginx(nginx_root, small_api, request) as (nginx, url):
        wait_http(f"{url}/healthz", process=nginx, timeout=30)
        yield nginx, url


SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: courier\r\n"


def slow_body(authorization: str) -> bytes:
    """The start of a job submission: whole headers (a token, so the API reads the body),
    then the body's first byte of 4096."""
    return (
        b"POST /v1/jobs HTTP/1.1\r\nHost: courier\r\nContent-Type: application/json\r\n"
        + f"Authorization: {authorization}\r\n".encode()
        + b"Content-Length: 4096\r\n\r\n{"
    )


@contextlib.contextmanager
def slow_clients(
    host: str, port: int, authorization: str, *, headers: int = 16, bodies: int = 8
) -> Iterator[list[socket.socket]]:
    """Connections that send the start of a request, then a little more every half second,
    never the whole of it: sixteen trickle their headers in, eight more their bodies (which
    only proxy_request_buffering keeps away from gunicorn)."""
    starts = [SLOW_HEADERS] * headers + [slow_body(authorization)] * bodies
    sockets = [socket.create_connection((host, port), timeout=5) for _ in starts]
    for s, start in zip(sockets, starts, strict=True):
        s.sendall(start)
    stop = threading.Event()

    def trickle() -> None:
        n = 0
        while not stop.wait(0.5):
            n += 1
            for s, start in zip(sockets, starts, strict=True):
                with contextlib.suppress(OSError):
                    s.sendall(f"X-Slow-{n}: 1\r\n".encode() if start is SLOW_HEADERS else b" ")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield sockets
    finally:
        stop.set()
        thread.join()
        for s in sockets:
            s.close()


def timed_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, float]:
    """The status of GET `url` and how long it took, with a 1 s deadline."""
    start = time.monotonic()
    response = httpx.get(url, headers=headers, timeout=1.0)
    return response.status_code, time.monotonic() - start


def answers(url: str) -> bool:
    """Whether GET `url` is answered 200 within the deadline."""
    try:
        return timed_get(url)[0] == 200
    except httpx.TimeoutException:
        return False


def test_slow_clients_at_nginx_leave_the_api_answering_everyone_else_within_a_second(
    deployment: ProcessDeployment, proxy: tuple[Process, str]
) -> None:
    headers = deployment.token()
    nginx, url = proxy
    port = int(url.rsplit(":", 1)[1])

    with slow_clients("127.0.0.1", port, headers["Authorization"]) as sockets:
        health = timed_get(f"{url}/healthz")
        jobs = timed_get(f"{url}/v1/jobs", headers)
        # nginx still holds every slow client: none was dropped to serve the others.
        assert nginx.running
        for s in sockets:
            s.sendall(b" ")

    assert health[0] == 200 and health[1] < 1.0, health
    assert jobs[0] == 200 and jobs[1] < 1.0, jobs


def test_the_same_slow_clients_straight_at_gunicorn_starve_it(
    deployment: ProcessDeployment, small_api: str
) -> None:
    authorization = deployment.token()["Authorization"]
    assert timed_get(f"{deployment.api_url}/healthz")[0] == 200
    host, port = small_api.split(":")

    with slow_clients(host, int(port), authorization), pytest.raises(httpx.TimeoutException):
        timed_get(f"{deployment.api_url}/healthz")

    # Once they go, gunicorn answers again: it was starved, not broken.
    wait_for(lambda: answers(f"{deployment.api_url}/healthz"), timeout=30, interval=0.5)


def test_nginxs_own_refusals_come_in_the_apis_error_shape(
    deployment: ProcessDeployment, proxy: tuple[Process, str]
) -> None:
    headers = {**deployment.token(), "Content-Type": "application/json"}
    _, url = proxy
    over_api_limit = b'{"type": "customer_sync", "payload": {"x": "' + b"x" * 70_000 + b'"}}'

    by_api = httpx.post(f"{url}/v1/jobs", content=over_api_limit, headers=headers, timeout=10)
    by_nginx = httpx.post(f"{url}/v1/jobs", content=b"x" * 300_000, headers=headers, timeout=10)
    deployment.stop_all()  # the API goes; nginx stays
    api_gone = httpx.get(f"{url}/v1/jobs", headers=headers, timeout=10)

    for refused, status in ((by_api, 413), (by_nginx, 413), (api_gone, 503)):
        assert refused.status_code == status, refused.text
        assert set(refused.json()) >= {"title", "description"}
    assert api_gone.headers["Retry-After"] == "5"


class EchoHeaders(BaseHTTPRequestHandler):
    """Answers every GET with the request's headers as JSON."""

    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_forwarded_headers_the_api_believes_come_from_nginx_alone(
    request: pytest.FixtureRequest, nginx_root: tuple[Path, str | None]
) -> None:
    echo = ThreadingHTTPServer(("127.0.0.1", free_port()), EchoHeaders)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    spoofed = {
        "Host": "courier.example:8443",
        "Forwarded": "for=10.0.0.1;proto=https;host=evil.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-For": "10.0.0.1",
    }
    try:
        with running_nginx(nginx_root, f"127.0.0.1:{echo.server_port}", request) as (_, url):
            seen = httpx.get(f"{url}/anything", headers=spoofed, timeout=10).json()
    finally:
        echo.shutdown()
        echo.server_close()

    assert "forwarded" not in seen
    assert seen["host"] == seen["x-forwarded-host"] == "courier.example:8443"
    assert seen["x-forwarded-proto"] == "http"  # nginx's own scheme, not the client's claim
    # The client's claim is kept but the address nginx saw is appended: the last hop is true.
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["x-real-ip"] == "127.0.0.1"
