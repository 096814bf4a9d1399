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
    """The raw body, sent with a Content-Length or chunked; 413 past 64 KiB.

    Falcon's `bounded_stream` reads a body without a Content-Length as empty, so a chunked
    body is read from the stream itself, up to the cap, when the server de-chunked it and
    ends the stream at its end (`wsgi.input_terminated`: gunicorn, and `courier dev`'s
    server). A server that passes the chunks through undecoded gets 411 instead.
    """
    if req.content_length is not None:
        if req.content_length > MAX_BODY:
            raise too_large()
        return req.bounded_stream.read()
    if req.get_header("Transfer-Encoding") is None:
        return b""  # no body was sent
    if not req.env.get("wsgi.input_terminated"):
        raise Problem(
            falcon.HTTP_411,
            "Length Required",
            "this server cannot read chunked bodies; send a Content-Length",
        )
    raw = _read_up_to(req, MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise too_large()
    return raw


def _read_up_to(req: falcon.Request, size: int) -> bytes:
    # A stream may return less than asked before its end: read until the end or `size`.
    chunks: list[bytes] = []
    got = 0
    while got < size and (chunk := req.stream.read(size - got)):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def parse(req: falcon.Request, model: type[M], *, empty_ok: bool = False) -> M:
    """The body validated as `model` (400 for broken JSON, 422 for invalid fields)."""
    raw = read(req)
    if not raw:
        if empty_ok:
            return model()
        raise Problem(falcon.HTTP_400, "Missing body", "a JSON object is required")
    refuse_nul(raw)
    return model.model_validate_json(raw)


def refuse_nul(json_text: bytes) -> None:
    """422 if JSON text holds a NUL character, raw or escaped."""
    if b"\\u0000" in json_text or b"\x00" in json_text:
        raise no_nul()


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
