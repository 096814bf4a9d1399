"""A job's events as server-sent events: which events show a version of the job, and ids
that order them, derived from the record, so a reconnect resumes after the last one seen.

An id is `<attempt>.<stage>[.<tag>]`. Within an attempt the stages come in the order they
happen: the attempt starts, the job is running, it reports progress, the attempt ends, the
job waits (queued, retrying) or ends. Progress and waiting carry a tag (which report, which
status), so a later one of the same stage is still new.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from api.job_watch import Follower
from api.versions import Version
from store import states

STARTED, RUNNING, PROGRESS, ENDED, WAITING, TERMINAL = range(1, 7)

_ID = re.compile(r"^(\d{1,6})\.([1-6])(?:\.([a-z0-9]{1,32}))?$")


@dataclass(frozen=True)
class EventId:
    """Where an event stands in its job's history."""

    attempt: int
    stage: int
    tag: str = ""

    @classmethod
    def parse(cls, text: str) -> EventId:
        """The id sent as `text`; ValueError if it is not one of ours."""
        match = _ID.match(text.strip())
        if match is None:
            raise ValueError(f"not an event id: {text!r}")
        return cls(int(match[1]), int(match[2]), match[3] or "")

    def __str__(self) -> str:
        return f"{self.attempt}.{self.stage}" + (f".{self.tag}" if self.tag else "")

    def after(self, last: EventId | None) -> bool:
        """Whether this event comes after `last` (None: before everything)."""
        if last is None:
            return True
        here, there = (self.attempt, self.stage), (last.attempt, last.stage)
        return here > there or (here == there and self.tag != last.tag)


@dataclass(frozen=True)
class Event:
    """One server-sent event."""

    id: EventId
    name: str  # status | attempt | progress
    data: bytes  # one line of JSON

    def encode(self) -> bytes:
        """The event as it goes on the wire."""
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            str(self.id).encode(),
            self.name.encode(),
            self.data,
        )


def events(version: Version) -> list[Event]:
    """The events that show this version of the job, in order: each attempt as it stands,
    the job's status, and its progress while it runs."""
    return sorted(_events(version), key=lambda e: (e.id.attempt, e.id.stage))


def _events(version: Version) -> Iterator[Event]:
    for attempt in version.attempts or ():
        stage = STARTED if attempt["status"] == states.AttemptStatus.RUNNING else ENDED
        yield Event(EventId(attempt["number"], stage), "attempt", _json(attempt))
    job, number = version.job, version.job["attempts"]
    if job["status"] == states.Status.RUNNING:
        yield Event(EventId(number, RUNNING), "status", version.body)
        if job["progress"] is not None:
            data = _json(job["progress"])
            tag = hashlib.blake2b(data, digest_size=4).hexdigest()
            yield Event(EventId(number, PROGRESS, tag), "progress", data)
    elif job["status"] in states.TERMINAL:
        yield Event(EventId(number, TERMINAL), "status", version.body)
    else:
        yield Event(EventId(number, WAITING, job["status"]), "status", version.body)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True).encode()


def ended(version: Version) -> bool:
    """Whether the job is over: nothing comes after its terminal event."""
    return version.status in states.TERMINAL


class EventStream:
    """The body of one job's event stream: the events of its current version after `last`,
    then of each new version the watcher reads, a heartbeat comment when nothing happened
    for `heartbeat_s`, and the end after the terminal event.

    The WSGI server iterates it in the request's thread and closes it when the stream ends
    or the client goes away (a heartbeat finds that out).
    """

    def __init__(
        self, follower: Follower, first: Version, *, last: EventId | None, heartbeat_s: float
    ) -> None:
        self._follower = follower
        self._version = first
        self._last = last
        self._heartbeat_s = heartbeat_s
        self._pending = self._new(first)

    @property
    def finished(self) -> bool:
        """Whether the job has ended and every one of its events was sent already."""
        return ended(self._version) and not self._pending

    def __iter__(self) -> Iterator[bytes]:
        while True:
            for event in self._pending:
                yield event.encode()
            self._pending = []
            if ended(self._version):
                return
            newer = self._follower.next(self._heartbeat_s)
            if newer is None:
                yield b": heartbeat\n\n"
                continue
            if newer.attempts is None:
                # Read for someone who follows the job alone; its attempts are as last seen.
                newer = dataclasses.replace(newer, attempts=self._version.attempts)
            self._version = newer
            self._pending = self._new(newer)

    def close(self) -> None:
        """Stop following the job."""
        self._follower.close()

    def _new(self, version: Version) -> list[Event]:
        new = [e for e in events(version) if e.id.after(self._last)]
        if new:
            self._last = new[-1].id
        return new
