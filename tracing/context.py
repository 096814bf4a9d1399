"""W3C `traceparent` values: reading a caller's, starting one, and making a child of one.

A job keeps one traceparent: its submitter's when it sent a valid one, else one started for
the job. The work done for the job (upstream calls, webhook deliveries) carries children of
it: the same trace id, a new span id.
"""

from __future__ import annotations

import re
import secrets
import uuid

# version 00, 32-hex trace id, 16-hex parent id, 2-hex flags (the W3C Trace Context format).
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse(value: str | None) -> str | None:
    """The traceparent if `value` is a valid one (lower-case, version 00, non-zero ids), else
    None: a malformed header starts a new trace rather than failing the request."""
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
        return None
    return match[0]


def start() -> str:
    """A traceparent for a new, sampled trace."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id(traceparent: str) -> str:
    """The trace id of a valid traceparent."""
    return traceparent[3:35]


def child(traceparent: str) -> str:
    """A traceparent in the same trace with a new span id (the same flags)."""
    return f"{traceparent[:36]}{secrets.token_hex(8)}{traceparent[52:]}"


def for_job(traceparent: str | None, job_id: uuid.UUID) -> str:
    """The job's traceparent, or for a job stored without one (made by something that gave
    none) one derived from its id: the same trace for all of the job's attempts."""
    if traceparent is not None:
        return traceparent
    return f"00-{job_id.hex}-{job_id.hex[16:]}-01"
