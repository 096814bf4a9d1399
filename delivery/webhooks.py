"""Sending one webhook: a signed POST of the Job JSON, redirects never followed.

The signature, `Courier-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
is keyed with the tenant's webhook secret, over the exact bytes of the body sent; the
timestamp lets receivers refuse old replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import httpx

from store.webhooks import Due
from tracing import context

USER_AGENT = f"Courier/{metadata.version('courier')}"
#: How much of an error is kept (a delivery's `last_error`).
ERROR_CHARS = 500


def body_bytes(body: dict[str, Any]) -> bytes:
    """The body as sent: compact JSON, UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Courier-Signature` header's value for `body` signed at `timestamp`."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def headers_for(due: Due, body: bytes, *, timestamp: int) -> dict[str, str]:
    """The headers of one delivery attempt (the same `Courier-Delivery` on every retry)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Courier-Event": due.event,
        "Courier-Delivery": str(due.id),
        "Courier-Signature": signature(due.secret, timestamp, body),
    }
    # In the job's trace, as its upstream calls are (one derived from its id if it has none).
    headers["traceparent"] = context.child(context.for_job(due.traceparent, due.job_id))
    return headers


@dataclass(frozen=True)
class Outcome:
    """What the endpoint answered: delivered (a 2xx), or a status or error to retry on."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None


class Sender:
    """Sends deliveries over one pooled HTTP client; each send is bounded by `timeout_s`."""

    def __init__(self, *, timeout_s: float, max_connections: int = 16) -> None:
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections),
            trust_env=False,  # no proxy from the environment: the allowlist names the host
        )

    def send(self, due: Due) -> Outcome:
        """POST the delivery once; never raises for what the endpoint or network does."""
        body = body_bytes(due.body)
        headers = headers_for(due, body, timestamp=int(time.time()))
        try:
            # Streamed and never read: only the status matters, and a large or slow body
            # must not hold the sender.
            with self._client.stream("POST", due.url, content=body, headers=headers) as answer:
                code = answer.status_code
                location = answer.headers.get("location")
        except httpx.HTTPError as e:
            return Outcome(False, error=_clip(f"{type(e).__name__}: {e}"))
        if 200 <= code < 300:
            return Outcome(True, status_code=code)
        if answer.is_redirect:
            return Outcome(False, code, _clip(f"{code} redirect to {location!r} (not followed)"))
        return Outcome(False, code, f"{code} from the endpoint")

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"
