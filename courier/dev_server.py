"""The HTTP server of `courier dev`: wsgiref, a thread per connection, chunked request bodies
decoded as gunicorn decodes them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import InputStream, StartResponse, WSGIApplication, WSGIEnvironment

from api.body import MAX_BODY

log = logging.getLogger(__name__)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def make_dev_server(host: str, port: int, app: WSGIApplication) -> WSGIServer:
    """The dev HTTP server: wsgiref with a thread per connection (one request each, as
    wsgiref answers), decoding chunked request bodies before `app` sees them."""
    return make_server(
        host, port, dechunked(app), server_class=_ThreadingServer, handler_class=_QuietHandler
    )


def dechunked(app: WSGIApplication) -> WSGIApplication:
    """`app` with `Transfer-Encoding: chunked` request bodies decoded, as gunicorn does.

    wsgiref hands the app the raw chunks, which api/body.py refuses (411). This decodes at
    most MAX_BODY + 1 bytes (enough for the app to tell a body that is too large: 413) and
    gives the app a stream of them with `wsgi.input_terminated` set, so api/body.py reads
    it as under gunicorn. A broken encoding gets 400 here, without calling the app.
    """

    def wrapper(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        coding = environ.get("HTTP_TRANSFER_ENCODING", "").strip().lower()
        if coding != "chunked" or environ.get("wsgi.input_terminated"):
            return app(environ, start_response)
        try:
            body = _read_chunked(environ["wsgi.input"], MAX_BODY + 1)
        except _BadChunks as e:
            problem = {"title": "Bad Request", "description": f"malformed chunked body: {e}"}
            answer = json.dumps(problem).encode()
            start_response(
                "400 Bad Request",
                [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))],
            )
            return [answer]
        environ = {**environ, "wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True}
        environ.pop("CONTENT_LENGTH", None)  # RFC 9112 6.3: Transfer-Encoding overrides it
        return app(environ, start_response)

    return wrapper


class _BadChunks(ValueError):
    """The chunked encoding of a request body is broken."""


#: The longest chunk-size or trailer line, as wsgiref's request line; and the most trailers.
_MAX_LINE = 65536
_MAX_TRAILERS = 100
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _read_chunked(stream: InputStream, limit: int) -> bytes:
    """The data of a chunked body (RFC 9112 7.1), read from `stream` up to `limit` bytes.

    The standard library has no public decoder for this (http.client's is private and
    reads responses). At `limit` it stops and leaves the rest unread: memory stays bounded.
    Chunk extensions and trailer fields are read and ignored.
    """
    body = bytearray()
    while len(body) < limit:
        size_field = _line(stream).partition(b";")[0].rstrip(b" \t")  # drop extensions
        # int(..., 16) alone would also take "0x1f", "+1f", "1_f" or spaces: hex digits only.
        if not size_field or not _HEX_DIGITS.issuperset(size_field):
            raise _BadChunks(f"bad chunk size {size_field[:20]!r}")
        size = int(size_field, 16)
        if size == 0:  # the last chunk, then trailer fields up to an empty line
            for _ in range(_MAX_TRAILERS + 1):
                if not _line(stream):
                    return bytes(body)
            raise _BadChunks("too many trailer fields")
        take = min(size, limit - len(body))
        body += _exactly(stream, take)
        if take == size and _exactly(stream, 2) != b"\r\n":
            raise _BadChunks("chunk data not followed by CRLF")
    return bytes(body)


def _line(stream: InputStream) -> bytes:
    """One CRLF-ended line, without its CRLF."""
    line = stream.readline(_MAX_LINE + 1)
    if not line.endswith(b"\r\n"):
        raise _BadChunks("line too long or not ended by CRLF" if line else "body ends early")
    return line[:-2]


def _exactly(stream: InputStream, size: int) -> bytes:
    """`size` bytes (a stream may return fewer than asked before its end)."""
    data = stream.read(size)
    while len(data) < size and (more := stream.read(size - len(data))):
        data += more
    if len(data) < size:
        raise _BadChunks("body ends early")
    return data
