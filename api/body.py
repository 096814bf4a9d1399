"""Reading request bodies: bounded in size, parsed and validated in one step."""

from __future__ import annotations

import hashlib
import json
from typing import TypeVar

import falcon
from pydantic import BaseModel

from api.errors import Problem

MAX_BODY = 64 * 1024

M = TypeVar("M", bound=BaseModel)


def read(req: falcon.Request) -> bytes:
    """The raw body; 413 past 64 KiB, whether or not Content-Length was sent."""
    if req.content_length is not None and req.content_length > MAX_BODY:
        raise too_large()
    raw = req.bounded_stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise too_large()
    return raw


def parse(req: falcon.Request, model: type[M], *, empty_ok: bool = False) -> M:
    """The body validated as `model` (400 for broken JSON, 422 for invalid fields)."""
    raw = read(req)
    if not raw:
        if empty_ok:
            return model()
        raise Problem(falcon.HTTP_400, "Missing body", "a JSON object is required")
    if b"\\u0000" in raw or b"\x00" in raw:
        raise no_nul()
    return model.model_validate_json(raw)


def no_nul() -> Problem:
    """422 for NUL characters, which the database cannot store in text."""
    return Problem(falcon.HTTP_422, "Invalid request", "NUL characters are not allowed")


def fingerprint(model: BaseModel) -> str:
    """A stable hash of a validated request, to tell an idempotent repeat from a new request."""
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def too_large() -> Problem:
    """413 in the contract's shape."""
    return Problem(falcon.HTTP_413, "Payload Too Large", f"bodies are limited to {MAX_BODY} bytes")
