"""A real HTTP endpoint for webhooks, run in a thread of the test: it records every request
and answers as scripted per path (200 by default)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """How to answer one request: a status, headers, and how long to wait first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class WebhookReceiver:
    """Listens on 127.0.0.1 on a free port until closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._scripts: dict[str, list[Answer]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = receiver._record(Received(self.path, dict(self.headers.items()), body))
                time.sleep(answer.delay_s)  # the endpoint being slow, not the test waiting
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The receiver's base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, path: str, *answers: Answer | int) -> None:
        """Answer the next requests to `path` so, in order; the last answer then repeats."""
        with self._lock:
            self._scripts[path] = [a if isinstance(a, Answer) else Answer(a) for a in answers]

    def received(self, path: str | None = None) -> list[Received]:
        """The requests so far, in order (optionally only those to `path`)."""
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def _record(self, request: Received) -> Answer:
        with self._lock:
            self._received.append(request)
            script = self._scripts.get(request.path)
            if not script:
                return Answer()
            return script.pop(0) if len(script) > 1 else script[0]

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()
