"""A scriptable upstream for tests, driven over real HTTP (so it may run in another process)."""

from __future__ import annotations

from typing import Any

import httpx

from courier import upstream_mock


class ScriptableUpstream:
    """A running upstream mock that tests script and inspect."""

    def __init__(self, url: str, server: upstream_mock.MockServer | None = None) -> None:
        self.url = url.rstrip("/")
        self.crm_url = f"{self.url}/crm"
        self.billing_url = f"{self.url}/billing"
        self._server = server
        self._http = httpx.Client(base_url=self.url, timeout=10)

    @classmethod
    def start(cls, host: str = "127.0.0.1") -> ScriptableUpstream:
        """Start a mock in this process on a free port of `host`."""
        server = upstream_mock.start(host, 0)
        return cls(server.url, server)

    @classmethod
    def attach(cls, url: str) -> ScriptableUpstream:
        """Drive a mock that is already running at `url`."""
        return cls(url)

    def script(
        self, method: str, path: str, *responses: dict[str, Any], repeat_last: bool = False
    ) -> None:
        """Answer the next calls to `method path` with `responses`, in order."""
        self._http.post(
            "/_mock/script",
            json={
                "method": method,
                "path": path,
                "responses": list(responses),
                "repeat_last": repeat_last,
            },
        ).raise_for_status()

    def calls(self, path: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        """The calls received so far, in order, optionally filtered."""
        params = {k: v for k, v in (("path", path), ("method", method)) if v is not None}
        response = self._http.get("/_mock/calls", params=params)
        response.raise_for_status()
        return response.json()["items"]

    def reset(self) -> None:
        """Forget scripts and calls."""
        self._http.post("/_mock/reset").raise_for_status()

    def stop(self) -> None:
        """Stop the mock if this process started it."""
        self._http.close()
        if self._server is not None:
            self._server.stop()
