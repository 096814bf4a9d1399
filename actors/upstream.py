"""HTTP calls to the CRM and Billing, with every answer turned into a typed error (CONTRACT.md §6).

Callers quote entity ids into path segments themselves (`urllib.parse.quote(id, safe="")`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from middleware import errors

UNAVAILABLE = {500, 502, 503, 504}


class UpstreamClient:
    """One upstream base URL behind a shared, thread-safe connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        timeout_s: float,
        max_backoff_ms: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.max_backoff_ms = max_backoff_ms
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def get_json(self, path: str, *, correlation_id: str) -> Any:
        """GET and decode a JSON answer."""
        response = self._send("GET", path, headers={"X-Correlation-ID": correlation_id})
        try:
            return response.json()
        except ValueError:
            raise errors.UpstreamUnavailable(
                f"malformed response from {self.name} GET {path}: {_snippet(response)}"
            ) from None

    def put_json(self, path: str, body: Any, *, correlation_id: str, idempotency_key: str) -> int:
        """PUT a JSON body; returns the 2xx status."""
        headers = {"X-Correlation-ID": correlation_id, "Idempotency-Key": idempotency_key}
        return self._send("PUT", path, headers=headers, json=body).status_code

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise errors.UpstreamUnavailable(
                f"timeout calling {self.name} {method} {path}"
            ) from None
        except httpx.TransportError as e:
            raise errors.UpstreamUnavailable(
                f"cannot reach {self.name} {method} {path}: {type(e).__name__}"
            ) from None
        if response.is_success:
            return response
        raise self._error(response, f"{response.status_code} from {self.name} {method} {path}")

    def _error(self, response: httpx.Response, what: str) -> errors.JobError:
        status = response.status_code
        message = f"{what}: {_snippet(response)}" if response.content else what
        if status == 429:
            return errors.UpstreamRateLimited(message, retry_after_ms=self._retry_after(response))
        if status in (404, 410):
            return errors.UpstreamNotFound(message)
        if status in (401, 403):
            return errors.UpstreamForbidden(message)
        if 400 <= status < 500:
            return errors.UpstreamRejected(message)
        if status in UNAVAILABLE or status >= 500:
            return errors.UpstreamUnavailable(message)
        return errors.UpstreamRejected(message)  # 1xx/3xx: nothing we can use

    def _retry_after(self, response: httpx.Response) -> int | None:
        value = response.headers.get("Retry-After", "").strip()
        if not value:
            return None
        try:
            millis = int(float(value) * 1000)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            millis = int((when - datetime.now(UTC)).total_seconds() * 1000)
        return max(0, min(millis, self.max_backoff_ms))


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
