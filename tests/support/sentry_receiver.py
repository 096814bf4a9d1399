"""A local Sentry: the envelope endpoint of Sentry's ingestion protocol, recording what it gets.

Sentry's client sends `POST /api/<project>/envelope/` with its key in `X-Sentry-Auth`, the
body gzip-compressed or not: one JSON header line, then items, each a JSON header line and a
payload of the header's `length` bytes (or up to the next newline when it has none).
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "0123456789abcdef0123456789abcdef"
PROJECT = "42"
_ENVELOPE_PATH = re.compile(r"/api/(?P<project>[^/]+)/envelope/?")


@dataclass(frozen=True)
class Envelope:
    """One envelope as received: its header, its items (header, payload) and the auth sent."""

    project: str
    auth: str
    header: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]]


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """The envelope header and its items, as Sentry's envelope format defines them."""
    first, _, rest = body.partition(b"\n")
    header = json.loads(first)
    items: list[tuple[dict[str, Any], bytes]] = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        item_header = json.loads(line)
        if "length" in item_header:
            length = item_header["length"]
            payload, rest = rest[:length], rest[length:]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((item_header, payload))
    return header, items


class SentryReceiver:
    """A Sentry envelope endpoint on a free local port, for one test."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sentry-receiver", daemon=True
        )
        self._thread.start()

    @property
    def dsn(self) -> str:
        """The DSN that points Sentry's client here."""
        return f"http://{KEY}@127.0.0.1:{self._server.server_port}/{PROJECT}"

    def events(self) -> list[dict[str, Any]]:
        """The error events received so far, decoded, in order."""
        with self._lock:
            envelopes = list(self.envelopes)
        return [
            json.loads(payload)
            for envelope in envelopes
            for header, payload in envelope.items
            if header.get("type") == "event"
        ]

    def record(self, envelope: Envelope) -> None:
        """Keep one envelope received."""
        with self._lock:
            self.envelopes.append(envelope)

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def _handler(receiver: SentryReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            path = _ENVELOPE_PATH.fullmatch(self.path.split("?")[0])
            auth = self.headers.get("X-Sentry-Auth", "")
            if path is None or f"sentry_key={KEY}" not in auth:
                self.send_error(404 if path is None else 401)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            header, items = parse_envelope(body)
            receiver.record(Envelope(path["project"], auth, header, items))
            answer = json.dumps({"id": header.get("event_id")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test's own assertions say what was received

    return Handler
