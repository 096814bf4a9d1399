"""The demo CRM and Billing server (`courier upstream-mock`), scriptable over HTTP for tests.

Demo behaviour: customers and invoices exist for any id except ids starting with `missing`
(404); `GET /crm/customers?page=N` pages through a small directory; Billing accepts every
PUT with 200. Control endpoints under `/_mock` queue scripted answers per method and path
(a path ending in `*` matches a prefix), list the recorded calls, and reset both.
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


@dataclass
class State:
    """Scripts waiting to be answered and calls received, shared by all request threads."""

    scripts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_scripted(self, method: str, path: str) -> dict[str, Any] | None:
        with self.lock:
            script = self.scripts.get((method, path))
            if script is None:
                script = next(
                    (
                        s
                        for (m, p), s in self.scripts.items()
                        if m == method and p.endswith("*") and path.startswith(p[:-1])
                    ),
                    None,
                )
            if script is None or not script["responses"]:
                return None
            if len(script["responses"]) == 1 and script["repeat_last"]:
                return script["responses"][0]
            return script["responses"].pop(0)


class Upstream:
    """The CRM and Billing endpoints: scripted answers first, demo answers otherwise."""

    def __init__(self, state: State, *, page_size: int, directory_size: int) -> None:
        self.state = state
        self.page_size = page_size
        self.directory_size = directory_size

    def handle(self, req: falcon.Request, resp: falcon.Response) -> None:
        raw = req.bounded_stream.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self.state.lock:
            self.state.calls.append(
                {
                    "method": req.method,
                    "path": req.path,
                    "query": req.query_string,
                    "headers": {
                        h: req.get_header(h)
                        for h in ("X-Correlation-ID", "Idempotency-Key")
                        if req.get_header(h) is not None
                    },
                    "body": body,
                    "at": time.time(),
                }
            )
        scripted = self.state.next_scripted(req.method, req.path)
        if scripted is not None:
            time.sleep(float(scripted.get("delay_s", 0)))
            resp.status = falcon.code_to_http_status(int(scripted.get("status", 200)))
            for name, value in (scripted.get("headers") or {}).items():
                resp.set_header(name, str(value))
            resp.media = scripted.get("body", {})
            return
        self._demo(req, resp)

    def _demo(self, req: falcon.Request, resp: falcon.Response) -> None:
        parts = req.path.strip("/").split("/")
        if req.method == "GET" and parts == ["crm", "customers"]:
            resp.media = self._directory_page(req.get_param_as_int("page") or 1)
        elif (
            req.method == "GET"
            and len(parts) == 3
            and parts[:2] in (["crm", "customers"], ["crm", "invoices"])
        ):
            if parts[2].startswith("missing"):
                resp.status, resp.media = falcon.HTTP_404, {"error": "not found"}
            else:
                resp.media = _customer(parts[2]) if parts[1] == "customers" else _invoice(parts[2])
        elif req.method == "PUT" and len(parts) == 3 and parts[0] == "billing":
            resp.media = {"ok": True}
        else:
            resp.status, resp.media = falcon.HTTP_404, {"error": "no such endpoint"}

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
        spec = req.get_media()
        with self.state.lock:
            self.state.scripts[(spec["method"].upper(), spec["path"])] = {
                "responses": list(spec.get("responses", [])),
                "repeat_last": bool(spec.get("repeat_last", False)),
            }
        resp.media = {"ok": True}

    def on_get_calls(self, req: falcon.Request, resp: falcon.Response) -> None:
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
    """The mock as a WSGI app."""
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
        return self.server.server_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start(host: str = "127.0.0.1", port: int = 8100) -> MockServer:
    """Serve the mock in a daemon thread; port 0 picks a free port."""
    state = State()
    server = make_server(
        host, port, create_app(state=state), server_class=_Server, handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, name="upstream-mock", daemon=True)
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
