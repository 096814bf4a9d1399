"""A job's events: `GET /v1/jobs/{id}/events` as server-sent events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from falcon import testing

from api import job_events
from api.job_watch import JobWatch
from api.versions import Version
from tests.support.stack import embedded_client, embedded_token, submit_waiting
from tests.support.times import LATER

pytestmark = pytest.mark.integration


@dataclass
class Stream:
    """An event stream read from the app as the WSGI server would, one chunk at a time."""

    status: str
    headers: dict[str, str]  # names in lower case
    chunks: Iterator[bytes]
    body: Any

    def events(self, count: int | None = None) -> list[dict]:
        """The next `count` events (None: all of them, until the stream ends)."""
        got: list[dict] = []
        for chunk in self.chunks:
            if chunk.startswith(b":"):
                continue  # a heartbeat
            fields = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n"))
            got.append({**fields, "data": json.loads(fields["data"])})
            if count is not None and len(got) == count:
                break
        return got


@pytest.fixture
def streams():
    """Streams opened in a test, closed at its end as a WSGI server closes them."""
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        getattr(stream.body, "close", lambda: None)()


@pytest.fixture
def open_stream(stack, streams):
    """Open a job's event stream on the stack's app."""

    def open_(job_id, headers=None, last_event_id=None) -> Stream:
        headers = stack.headers if headers is None else headers
        stream = _open(stack.client, job_id, headers, last_event_id)
        streams.append(stream)
        return stream

    return open_


def _open(client, job_id, headers, last_event_id) -> Stream:
    headers = dict(headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    environ = testing.create_environ(path=f"/v1/jobs/{job_id}/events", headers=headers)
    started: dict = {}

    def start_response(status, response_headers, exc_info=None):
        started.update(status=status, headers={k.lower(): v for k, v in response_headers})

    body = client.app(environ, start_response)
    return Stream(started["status"], started["headers"], iter(body), body)


def summary(events):
    """(event, what it says) for each event, in order."""
    said = []
    for e in events:
        if e["event"] == "attempt":
            said.append(("attempt", e["data"]["number"], e["data"]["status"]))
        elif e["event"] == "status":
            said.append(("status", e["data"]["status"]))
        else:
            said.append(("progress",))
    return said


def order(event_id: str) -> tuple[int, int]:
    attempt, stage = event_id.split(".")[:2]
    return int(attempt), int(stage)


def retried_job(stack, upstream, open_stream, entity_id, *, delay_s):
    """A job whose first attempt fails with a 503 and whose second succeeds, each taking
    `delay_s`, with its stream opened before any worker runs; returns (stream, job id)."""
    upstream.script(
        "GET",
        f"/crm/customers/{entity_id}",
        {"status": 503, "delay_s": delay_s},
        {"status": 200, "body": {"id": entity_id, "name": "C"}, "delay_s": delay_s},
    )
    job_id = stack.submit(type="customer_sync", entity_id=entity_id)
    return open_stream(job_id), job_id


def test_a_retried_job_streams_its_attempts_and_statuses_in_order_and_ends(
    stack, upstream, open_stream
):
    stream, job_id = retried_job(stack, upstream, open_stream, "c_1", delay_s=1.0)
    assert stream.status.startswith("200")
    assert stream.headers["content-type"].startswith("text/event-stream")
    [first] = stream.events(1)  # the current state first
    stack.start_worker(min_backoff_ms=1000, max_backoff_ms=1000)
    events = [first, *stream.events()]  # returns only when the stream ends
    assert summary(events) == [
        ("status", "queued"),
        ("attempt", 1, "running"),
        ("status", "running"),
        ("attempt", 1, "failed"),
        ("status", "retrying"),
        ("attempt", 2, "running"),
        ("status", "running"),
        ("attempt", 2, "succeeded"),
        ("status", "succeeded"),
    ]
    ids = [e["id"] for e in events]
    assert [order(i) for i in ids] == sorted(order(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert events[-1]["data"]["id"] == job_id and events[-1]["data"]["attempts"] == 2


def test_last_event_id_resumes_after_that_event_without_repeats(stack, upstream, open_stream):
    stream, job_id = retried_job(stack, upstream, open_stream, "c_2", delay_s=0.5)
    [first] = stream.events(1)
    stack.start_worker(min_backoff_ms=1000, max_backoff_ms=1000)
    events = [first, *stream.events()]
    retrying = next(i for i, e in enumerate(events) if e["data"].get("status") == "retrying")

    resumed = open_stream(job_id, last_event_id=events[retrying]["id"])
    again = resumed.events()
    # Attempt 2 is over by now: it shows as it ended, and nothing before the id repeats.
    assert summary(again) == [("attempt", 2, "succeeded"), ("status", "succeeded")]
    assert [e["id"] for e in again] == [
        e["id"] for e in events if e["id"] in {a["id"] for a in again}
    ]
    assert not {e["id"] for e in again} & {e["id"] for e in events[: retrying + 1]}

    done = open_stream(job_id, last_event_id=events[-1]["id"])
    assert done.status.startswith("204")  # an EventSource stops reconnecting
    assert b"".join(done.chunks) == b""


def test_a_running_job_streams_its_progress(stack, upstream, open_stream):
    upstream.script(
        "PUT", "/billing/customers/*", {"status": 200, "body": {}, "delay_s": 0.1}, repeat_last=True
    )
    stack.start_worker(progress_interval_s=0.2)
    job_id = stack.submit(type="directory_sync")
    stream = open_stream(job_id)
    events = stream.events()
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) >= 2
    assert set(progress[0]["data"]) == {"current", "total", "message"}
    assert [p["data"]["current"] for p in progress] == sorted(
        p["data"]["current"] for p in progress
    )
    assert len({p["id"] for p in progress}) == len(progress)
    assert summary(events)[-1] == ("status", "succeeded")


def test_a_cancelled_waiting_job_ends_its_stream(stack, open_stream):
    job_id = stack.submit(type="customer_sync", entity_id="c_3", run_at=LATER)
    stream = open_stream(job_id)
    assert summary(stream.events(1)) == [("status", "queued")]
    stack.client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=stack.headers)
    assert summary(stream.events()) == [("status", "cancelled")]


def test_another_tenants_job_has_no_events(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_4", run_at=LATER)
    response = stack.client.simulate_get(
        f"/v1/jobs/{job_id}/events", headers=stack.token(tenant="globex")
    )
    assert response.status_code == 404
    assert set(response.json) >= {"title", "description"}


@pytest.mark.parametrize("last_event_id", ["x", "1.9", "1", "-1.1", "1.3.UPPER"])
def test_a_last_event_id_that_is_not_ours_is_refused(stack, last_event_id):
    job_id = stack.submit(type="customer_sync", entity_id="c_5", run_at=LATER)
    response = stack.client.simulate_get(
        f"/v1/jobs/{job_id}/events", headers={**stack.headers, "Last-Event-ID": last_event_id}
    )
    assert response.status_code == 422
    assert "Last-Event-ID" in response.json["description"]


def test_a_quiet_stream_sends_heartbeat_comments(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_6", run_at=LATER)
    watch = JobWatch(stack.engine)
    job = stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=stack.headers).json
    stream = job_events.EventStream(
        watch.follow(uuid.UUID(job_id), attempts=True),
        Version.of(job, []),
        last=None,
        heartbeat_s=0.2,
    )
    try:
        chunks = iter(stream)
        assert next(chunks).startswith(b"id: 0.5.queued\nevent: status\n")
        started = time.monotonic()
        assert next(chunks) == b": heartbeat\n\n"
        assert next(chunks) == b": heartbeat\n\n"
        assert 0.3 <= time.monotonic() - started < 5
    finally:
        stream.close()
        watch.stop()
    assert watch.following() == 0


def test_a_stream_on_the_embedded_store_ends_when_the_job_is_cancelled(sqlite_engine, streams):
    client = embedded_client(sqlite_engine)
    headers = embedded_token(sqlite_engine)
    job_id = submit_waiting(client, headers, "c_7")
    stream = _open(client, job_id, headers, None)
    streams.append(stream)
    assert summary(stream.events(1)) == [("status", "queued")]
    client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert summary(stream.events()) == [("status", "cancelled")]
