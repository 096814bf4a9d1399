"""HTTP calls to the CRM and Billing, every answer turned into a typed error.

The mapping is the table in docs/queues-and-job-types.md.

Callers build paths relative to the upstream's base URL and put each entity id in with
`segment()`, so an id holding `/`, `?` or spaces stays inside its own path segment. The
client itself percent-encodes `.` and `..` segments, so no path can climb above the base URL.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from middleware import errors
from tracing import spans

_SECONDS = re.compile(r"\d+(\.\d+)?")
_DOT_SEGMENTS = {".": "%2E", "..": "%2E%2E"}


def segment(value: object) -> str:
    """Quote `value` as one URL path segment (`a/b c` → `a%2Fb%20c`)."""
    text = quote(str(value), safe="")
    return _DOT_SEGMENTS.get(text, text)


class UpstreamClient:
    """One upstream base URL behind a shared, thread-safe connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        key: str | None = None,
        timeout_s: float,
        max_backoff_ms: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        #: The upstream's name in circuits and limits (`crm`), carried by its errors.
        self.key = key or name.lower()
        self.max_backoff_ms = max_backoff_ms
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
            # Worker threads share this pool; size it above the usual thread count.
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def get_json(self, path: str, *, correlation_id: str) -> Any:
        """GET `path` and return the decoded JSON body of the 2xx answer."""
        response = self._send("GET", path, headers={"X-Correlation-ID": correlation_id})
        try:
            return response.json()
        except ValueError:
            raise errors.UpstreamUnavailable(
                f"malformed response from {self.name} GET {path}: {_snippet(response)}",
                upstream=self.key,
            ) from None

    def get_object(self, path: str, *, correlation_id: str) -> dict[str, Any]:
        """As `get_json`, for an answer that must be a JSON object: anything else is a
        malformed answer, like a body that is not JSON."""
        answer = self.get_json(path, correlation_id=correlation_id)
        if not isinstance(answer, dict):
            raise errors.UpstreamUnavailable(
                f"malformed response from {self.name} GET {path}: not a JSON object",
                upstream=self.key,
            )
        return answer

    def put_json(self, path: str, body: Any, *, correlation_id: str, idempotency_key: str) -> int:
        """PUT `body` as JSON to `path` and return the 2xx status code."""
        headers = {"X-Correlation-ID": correlation_id, "Idempotency-Key": idempotency_key}
        return self._send("PUT", path, headers=headers, json=body).status_code

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def _send(
        self, method: str, path: str, *, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        what = f"{self.name} {method} {path}"
        request = self._http.build_request(
            method, _without_dot_segments(path), headers=headers, **kwargs
        )
        # Every call carries a traceparent in its job's trace (a child of the attempt).
        with spans.upstream_call(self.name, method, _shown(request.url)) as call:
            request.headers.update(call.headers)
            try:
                response = self._http.send(request)
            except httpx.TimeoutException:
                raise self._unavailable(f"timeout calling {what}") from None
            except httpx.DecodingError:
                raise self._unavailable(f"undecodable response from {what}") from None
            except httpx.RequestError as e:
                raise self._unavailable(f"cannot reach {what}: {type(e).__name__}") from None
            call.answered(response.status_code)
        if response.is_success:
            return response
        raise self._error(response, f"{response.status_code} from {what}")

    def _error(self, response: httpx.Response, what: str) -> errors.JobError:
        status = response.status_code
        message = f"{what}: {_snippet(response)}" if response.content else what
        if status == 429:
            return errors.UpstreamRateLimited(
                message, retry_after_ms=self._retry_after(response), upstream=self.key
            )
        if status in (404, 410):
            return errors.UpstreamNotFound(message)
        if status in (401, 403):
            return errors.UpstreamForbidden(message)
        if status >= 500:
            return self._unavailable(message)
        # Every other 4xx, and 1xx/3xx (redirects are not followed): the request is at fault.
        return errors.UpstreamRejected(message)

    def _unavailable(self, message: str) -> errors.UpstreamUnavailable:
        return errors.UpstreamUnavailable(message, upstream=self.key)

    def _retry_after(self, response: httpx.Response) -> int | None:
        value = response.headers.get("Retry-After", "").strip()
        if _SECONDS.fullmatch(value):
            millis = int(float(value) * 1000)
        else:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:  # `-0000` means UTC but parses as naive
                when = when.replace(tzinfo=UTC)
            millis = int((when - datetime.now(UTC)).total_seconds() * 1000)
        return max(0, min(millis, self.max_backoff_ms))


def _without_dot_segments(path: str) -> str:
    # httpx resolves `.`/`..` segments, which would let an id such as `..` reach another
    # resource; their percent-encoded forms are plain data to every URL parser.
    route, sep, query = path.partition("?")
    parts = [_DOT_SEGMENTS.get(part, part) for part in route.split("/")]
    return "/".join(parts) + sep + query


def _shown(url: httpx.URL) -> str:
    # The URL a span records, without any user:password of the base URL.
    return str(url.copy_with(userinfo=b"") if url.userinfo else url)


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
