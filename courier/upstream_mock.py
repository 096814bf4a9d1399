"""The demo CRM and Billing server (`courier upstream-mock`), scriptable over HTTP for tests.

Demo behaviour: customers and invoices exist for any id except ids starting with `missing`
(404); `GET /crm/customers?page=N` pages through a small directory; Billing accepts every
PUT of a customer or invoice with 200 `{"ok": true}`. Control endpoints under `/_mock` queue
scripted answers per method and path (a path ending in `*` matches a prefix), list the
recorded calls, and reset both.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import falcon

RECORDED_HEADERS = ("X-Correlation-ID", "Idempotency-Key", "traceparent")


@dataclass
class State:
    """Scripts waiting to be answered and calls received, shared by all request threads."""

    scripts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_scripted(self, method: str, path: str) -> dict[str, Any] | None:
        """Take the next scripted answer for `method path`, or None to answer as the demo."""
        with self.lock:
            script = self._script_for(method, path)
            if script is None:
                return None
            if len(script["responses"]) == 1 and script["repeat_last"]:
                return script["responses"][0]
            return script["responses"].pop(0)

    def _script_for(self, method: str, path: str) -> dict[str, Any] | None:
        # An exhausted script gives way: to a matching prefix, or else to the demo.
        exact = self.scripts.get((method, path))
        if exact is not None and exact["responses"]:
            return exact
        prefixes = [
            (len(p), s)
            for (m, p), s in self.scripts.items()
            if m == method and p.endswith("*") and path.startswith(p[:-1]) and s["responses"]
        ]
        return max(prefixes, key=lambda ps: ps[0])[1] if prefixes else None

    def record(self, call: dict[str, Any]) -> None:
        """Remember one call to the CRM or Billing."""
        with self.lock:
            self.calls.append(call)


class Upstream:
    """The CRM and Billing endpoints: scripted answers first, demo answers otherwise."""

    def __init__(self, state: State, *, page_size: int, directory_size: int) -> None:
        self.state = state
        self.page_size = page_size
        self.directory_size = directory_size

    def handle(self, req: falcon.Request, resp: falcon.Response, **_groups: str | None) -> None:
        """Record the call, then answer it (a sink is also given its pattern's named groups)."""
        raw = req.bounded_stream.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {h: req.get_header(h) for h in RECORDED_HEADERS if req.get_header(h) is not None}
        call = {
            "method": req.method,
            "path": req.path,
            "query": req.query_string,
            "headers": headers,
            "body": body,
            "at": time.time(),
        }
        self.state.record(call)
        scripted = self.state.next_scripted(req.method, req.path)
        if scripted is None:
            self._demo(req, resp)
            call["status"] = falcon.http_status_to_code(resp.status)
            return
        # The answer is chosen as the call arrives: a script changed meanwhile applies to
        # the calls after it, and the record says which answer each got.
        call["status"] = int(scripted.get("status", 200))
        time.sleep(float(scripted.get("delay_s", 0)))
        resp.status = falcon.code_to_http_status(int(scripted.get("status", 200)))
        for name, value in (scripted.get("headers") or {}).items():
            resp.set_header(name, str(value))
        answer = scripted.get("body", {})
        if isinstance(answer, str):  # sent verbatim, so tests can serve malformed JSON
            resp.content_type = falcon.MEDIA_TEXT
            resp.text = answer
        else:
            resp.media = answer

    def _demo(self, req: falcon.Request, resp: falcon.Response) -> None:
        parts = req.path.strip("/").split("/")
        kind = parts[1] if len(parts) > 1 else ""
        if req.method == "GET" and parts == ["crm", "customers"]:
            resp.media = self._directory_page(req.get_param_as_int("page", min_value=1) or 1)
        elif kind not in ("customers", "invoices") or len(parts) != 3:
            resp.status, resp.media = falcon.HTTP_404, {"error": "no such endpoint"}
        elif req.method == "GET" and parts[0] == "crm":
            if parts[2].startswith("missing"):
                resp.status, resp.media = falcon.HTTP_404, {"error": "not found"}
            else:
                resp.media = _customer(parts[2]) if kind == "customers" else _invoice(parts[2])
        elif req.method == "PUT" and parts[0] == "billing":
            resp.media = {"ok": True}
        else:
            resp.status, resp.media = falcon.HTTP_405, {"error": "method not allowed"}

    def _directory_page(self, page: int) -> dict[str, Any]:
        start = (page - 1) * self.page_size
        ids = range(start + 1, min(start + self.page_size, self.directory_size) + 1)
        more = start + self.page_size < self.directory_size
        return {
            "items": [_customer(f"c_{i:05d}") for i in ids],
            "next_page": page + 1 if more else None,
            "total": self.directory_size,
        }


class Control:
    """`/_mock/script`, `/_mock/calls` and `/_mock/reset`."""

    def __init__(self, state: State) -> None:
        self.state = state

    def on_post_script(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Queue answers for one method and path, replacing any queued before."""
        spec = req.get_media()
        if not isinstance(spec, dict) or not {"method", "path"} <= spec.keys():
            raise falcon.HTTPBadRequest(description="need method, path and responses")
        with self.state.lock:
            self.state.scripts[(str(spec["method"]).upper(), str(spec["path"]))] = {
                "responses": list(spec.get("responses", [])),
                "repeat_last": bool(spec.get("repeat_last", False)),
            }
        resp.media = {"ok": True}

    def on_get_calls(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List the recorded calls in order, filtered by exact path and method."""
        path, method = req.get_param("path"), req.get_param("method")
        with self.state.lock:
            calls = [
                c
                for c in self.state.calls
                if (path is None or c["path"] == path)
                and (method is None or c["method"] == method.upper())
            ]
        resp.media = {"items": calls}

    def on_post_reset(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Forget every script and recorded call."""
        with self.state.lock:
            self.state.scripts.clear()
            self.state.calls.clear()
        resp.media = {"ok": True}


def _customer(entity_id: str) -> dict[str, Any]:
    n = int(hashlib.sha256(entity_id.encode()).hexdigest()[:6], 16)
    return {"id": entity_id, "name": f"Customer {n % 1000}", "email": f"{entity_id}@example.com"}


def _invoice(entity_id: str) -> dict[str, Any]:
    n = int(hashlib.sha256(entity_id.encode()).hexdigest()[:6], 16)
    return {"id": entity_id, "amount_cents": n % 100_000, "currency": "EUR"}


def create_app(
    *, state: State | None = None, page_size: int = 10, directory_size: int = 25
) -> falcon.App:
    """Build the mock as a WSGI app, recording into `state` (a fresh one by default)."""
    state = state or State()
    app = falcon.App()
    upstream = Upstream(state, page_size=page_size, directory_size=directory_size)
    app.add_sink(upstream.handle, r"^/(crm|billing)(/|$)")
    control = Control(state)
    app.add_route("/_mock/script", control, suffix="script")
    app.add_route("/_mock/calls", control, suffix="calls")
    app.add_route("/_mock/reset", control, suffix="reset")
    return app


class _Server(ThreadingMixIn, WSGIServer):
    # Daemon threads: a request stuck in a scripted delay must not keep the process alive.
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class MockServer:
    """A mock running in a background thread."""

    server: WSGIServer
    thread: threading.Thread
    state: State

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when started on port 0)."""
        return self.server.server_port

    @property
    def url(self) -> str:
        """Its base URL, e.g. `http://127.0.0.1:8100`."""
        host = self.server.server_address[0]
        if isinstance(host, bytes):  # typed for AF_UNIX too; an AF_INET socket's host is a str
            host = host.decode()
        return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start(host: str = "127.0.0.1", port: int = 8100) -> MockServer:
    """Serve the mock in a daemon thread; port 0 picks a free port."""
    state = State()
    app = create_app(state=state)
    server = make_server(host, port, app, server_class=_Server, handler_class=_Quiet)
    # A short poll interval so that stop() returns promptly (shutdown waits for one poll).
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="upstream-mock",
        daemon=True,
    )
    thread.start()
    return MockServer(server, thread, state)


def serve_forever(host: str, port: int) -> None:
    """Serve the mock in this thread until interrupted."""
    server = make_server(host, port, create_app(), server_class=_Server, handler_class=_Quiet)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
