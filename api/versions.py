"""A version of a job as a client sees it: its Job JSON, encoded once, and the ETag of that."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import falcon


@dataclass(frozen=True)
class Version:
    """One version of a job: the Job object, the bytes sent for it and their strong ETag;
    with the job's Attempt objects when someone follows its events."""

    job: dict[str, Any]
    body: bytes
    etag: str
    attempts: tuple[dict[str, Any], ...] | None = None

    @classmethod
    def of(cls, job: dict[str, Any], attempts: Sequence[dict[str, Any]] | None = None) -> Version:
        """The version of this Job object (and these attempts)."""
        body = json.dumps(job, ensure_ascii=False).encode()
        # The same bytes, the same tag: a strong validator of the representation.
        etag = hashlib.blake2b(body, digest_size=12).hexdigest()
        return cls(job, body, etag, None if attempts is None else tuple(attempts))

    @property
    def status(self) -> str:
        """The job's status in this version."""
        return self.job["status"]

    def named_by(self, if_none_match: Sequence[falcon.ETag | str] | None) -> bool:
        """Whether an If-None-Match header names this version (`*` names every one)."""
        if not if_none_match:
            return False
        # If-None-Match compares weakly: W/"x" names the version "x".
        return any(tag == "*" or str(tag) == self.etag for tag in if_none_match)

    def same_as(self, other: Version | None) -> bool:
        """Whether `other` shows the same job and attempts."""
        return other is not None and other.etag == self.etag and other.attempts == self.attempts


def send(resp: falcon.Response, version: Version) -> None:
    """Answer this version of the job, with its ETag."""
    resp.content_type = falcon.MEDIA_JSON
    resp.data = version.body
    resp.etag = version.etag
