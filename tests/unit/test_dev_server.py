"""`courier dev` decodes chunked request bodies itself, since wsgiref passes them through."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import falcon
import pytest

from api import body
from api.body import MAX_BODY
from courier import dev_server


def chunked(*chunks: bytes, trailers: bytes = b"") -> bytes:
    """`chunks` in the chunked encoding, then the last chunk, `trailers` and the end."""
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return encoded + b"0\r\n" + trailers + b"\r\n"


class Recorder:
    """A WSGI app that keeps the environ and the body it was given and answers 200."""

    def __init__(self) -> None:
        self.environ: dict[str, Any] | None = None
        self.body: bytes | None = None

    def __call__(self, environ, start_response):
        self.environ = environ
        self.body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


class Echo:
    """The real body path: api/body.py's `read`, answering with the length it read."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"length": len(body.read(req))}


def falcon_app() -> falcon.App:
    app = falcon.App()
    app.add_route("/echo", Echo())
    return app


def call(app, raw: bytes, **headers: str) -> tuple[str, bytes, io.BytesIO]:
    """Call `dev_server.dechunked(app)` with a chunked POST of `raw`: status, body, input stream."""
    stream = io.BytesIO(raw)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/echo",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": stream,
        **headers,
    }
    setup_testing_defaults(environ)
    answer: list[str] = []
    out = b"".join(
        dev_server.dechunked(app)(
            environ, lambda status, headers, exc_info=None: answer.append(status)
        )
    )
    return answer[0], out, stream


def test_a_chunked_body_reaches_the_app_whole_as_a_terminated_stream():
    app = Recorder()
    raw = chunked(b'{"type":', b'"customer_sync"}')
    status, _, _ = call(app, raw)
    assert status == "200 OK"
    assert app.body == b'{"type":"customer_sync"}'
    assert app.environ is not None
    assert app.environ["wsgi.input_terminated"] is True
    assert "CONTENT_LENGTH" not in app.environ
    assert app.environ["HTTP_TRANSFER_ENCODING"] == "chunked"  # api/body.py looks for it


def test_chunk_extensions_upper_case_sizes_and_trailers_are_accepted_and_ignored():
    app = Recorder()
    data = b"x" * 26
    trailers = b"X-Checksum: abc\r\nX-Other: 1\r\n"
    raw = b"1A;name=value\r\n" + data + b"\r\n0 ;last\r\n" + trailers + b"\r\n"
    status, _, stream = call(app, raw + b"NEXT", HTTP_TRANSFER_ENCODING="Chunked")
    assert status == "200 OK"
    assert app.body == data
    assert stream.read() == b"NEXT"  # the trailers were read, nothing after them


def test_transfer_encoding_overrides_a_content_length():
    app = Recorder()
    status, _, _ = call(app, chunked(b"abcdef"), CONTENT_LENGTH="2")
    assert status == "200 OK"
    assert app.body == b"abcdef"
    assert app.environ is not None and "CONTENT_LENGTH" not in app.environ


def test_a_request_that_is_not_chunked_is_passed_through_untouched():
    app = Recorder()
    stream = io.BytesIO(b"plain")
    environ: dict[str, Any] = {"CONTENT_LENGTH": "5", "wsgi.input": stream}
    setup_testing_defaults(environ)
    list(dev_server.dechunked(app)(environ, lambda *a: None))
    assert app.environ is environ
    assert app.body == b"plain"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"zz\r\nabc\r\n0\r\n\r\n", id="bad hex size"),
        pytest.param(b"0x3\r\nabc\r\n0\r\n\r\n", id="0x prefix"),
        pytest.param(b"+3\r\nabc\r\n0\r\n\r\n", id="sign"),
        pytest.param(b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", id="underscore"),
        pytest.param(b"\r\nabc\r\n0\r\n\r\n", id="empty size"),
        pytest.param(b"3\nabc\r\n0\r\n\r\n", id="size line without CR"),
        pytest.param(b"3\r\nabcX\r\n0\r\n\r\n", id="data longer than its size"),
        pytest.param(b"3\r\nabc0\r\n\r\n", id="no CRLF after data"),
        pytest.param(b"5\r\nabc", id="truncated data"),
        pytest.param(b"3\r\nabc\r\n", id="no last chunk"),
        pytest.param(b"3\r\nabc\r\n0\r\nX-T: 1\r\n", id="truncated trailers"),
        pytest.param(b"", id="empty"),
        pytest.param(b"3" * 70_000 + b"\r\n", id="endless size line"),
        pytest.param(b"0\r\n" + b"X-T: 1\r\n" * 101 + b"\r\n", id="too many trailers"),
    ],
)
def test_a_malformed_encoding_gets_400_without_calling_the_app(raw):
    app = Recorder()
    status, out, _ = call(app, raw)
    assert status == "400 Bad Request"
    assert json.loads(out)["title"] == "Bad Request"
    assert app.environ is None


def test_a_body_of_max_body_bytes_is_read_whole():
    status, out, _ = call(falcon_app(), chunked(b"a" * (MAX_BODY - 10), b"b" * 10))
    assert status == "200 OK"
    assert json.loads(out) == {"length": MAX_BODY}


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([b"a" * (4 * MAX_BODY)], id="one big chunk"),
        pytest.param([b"a" * 1000] * (4 * MAX_BODY // 1000), id="many chunks"),
    ],
)
def test_a_larger_body_is_cut_at_max_body_plus_one_and_gets_413_from_the_app(chunks):
    raw = chunked(*chunks)
    app = Recorder()
    status, _, stream = call(app, raw)
    assert status == "200 OK"
    assert app.body is not None and len(app.body) == MAX_BODY + 1
    assert stream.tell() < MAX_BODY + 2 * 1024  # the rest stays unread, not buffered

    status, out, _ = call(falcon_app(), raw)
    assert status.startswith("413 ")
    assert "limited to" in json.loads(out)["description"]


# Over a socket: the dev server as `courier dev` builds it.


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """The dev server on a free port, serving the echo app; its port."""
    httpd = dev_server.make_dev_server("127.0.0.1", 0, falcon_app())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def exchange(port: int, body: bytes) -> tuple[int, bytes]:
    """POST `body` (already encoded) with `Transfer-Encoding: chunked`: status and answer."""
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_over_a_socket_a_chunked_body_is_read(server):
    status, answer = exchange(server, chunked(b'{"a":', b"1}", trailers=b"X-T: 1\r\n"))
    assert (status, json.loads(answer)) == (200, {"length": 7})


def test_over_a_socket_a_body_past_max_body_gets_413(server):
    # Only a few bytes stay unread, so closing the connection does not reset it.
    status, answer = exchange(server, chunked(b"a" * (MAX_BODY + 1)))
    assert status == 413, answer


def test_over_a_socket_a_malformed_encoding_gets_400(server):
    status, answer = exchange(server, b"3\r\nabcX\r\n0\r\n\r\n")
    assert status == 400
    assert "malformed chunked body" in json.loads(answer)["description"]
