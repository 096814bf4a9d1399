"""Poison: messages no worker can use and jobs that fail every time end recorded, once."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from store.db import make_engine, make_sessionmaker
from tests.support.records import add_queued

pytestmark = pytest.mark.faults


def test_poison_messages_and_jobs_end_recorded_with_a_reason_and_never_loop(
    deployment, upstream, database_url
):
    # The CRM directory lists an item the job cannot sync: every attempt fails on it.
    upstream.script(
        "GET", "/crm/customers", {"body": {"items": [42], "next_page": None}}, repeat_last=True
    )
    deployment.start_api()
    group = deployment.start_worker(processes=1, threads=4)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    [retired, crashing] = deployment.submit_all(
        [
            # Scheduled for later, so only the message below (for a retired job type) names it.
            {"type": "customer_sync", "entity_id": "c_retired", "run_at": later},
            {"type": "directory_sync", "max_attempts": 3},
        ]
    )
    # The API refuses this payload; a row written another way still meets the worker's check
    # (the relay publishes it).
    engine = make_engine(database_url)
    invalid = str(
        add_queued(
            make_sessionmaker(engine),
            type="customer_sync",
            entity_id="c_invalid",
            payload={"colour": "red"},
        )
    )
    engine.dispose()
    ghost = str(uuid.uuid4())
    undecodable = b"\xff\xfe this is not a message"
    deployment.publish(undecodable)
    deployment.publish(deployment.message_for(retired, actor="retired_sync").encode())
    deployment.publish(deployment.message_for(ghost).encode())
    deployment.publish(deployment.message_for("not-a-job-id").encode())

    report = deployment.settle_and_check([retired, invalid, crashing], timeout=60)

    # A job type no worker knows: dead without running, and its message dead-lettered.
    job = report.jobs[retired]
    assert (job["status"], job["error_type"], job["attempts"]) == ("dead", "ActorNotFound", 0)
    assert "retired_sync" in job["error"]
    # A payload the job type rejects: failed after one attempt, not retried.
    job = report.jobs[invalid]
    assert (job["status"], job["error_type"], job["attempts"]) == ("failed", "InvalidPayload", 1)
    assert report.attempts[invalid][0]["decision"] == "skip"
    # Data that fails the job every time: retried up to max_attempts, then dead, not looping.
    job = report.jobs[crashing]
    assert (job["status"], job["attempts"]) == ("dead", 3)
    assert job["error_type"] and job["error"]
    assert [a["decision"] for a in report.attempts[crashing]] == ["retry", "retry", "dead"]
    assert len(upstream.calls(path="/crm/customers")) == 3

    # The dead-letter queue holds exactly the undecodable body and the two dead jobs' copies.
    dead_letters = deployment.broker.peek(deployment.vhost, "sync.XQ")
    raw = [
        base64.b64decode(m["payload"]) for m in dead_letters if m["payload_encoding"] == "base64"
    ]
    assert raw == [undecodable]
    decoded = [json.loads(m["payload"]) for m in dead_letters if m["payload_encoding"] == "string"]
    assert sorted(body["args"][0] for body in decoded) == sorted([retired, crashing])
    [copy] = [
        m
        for m in dead_letters
        if (m["properties"].get("headers") or {}).get("x-job-id") == crashing
    ]
    assert copy["properties"]["headers"]["x-error-type"] == job["error_type"]

    # Messages naming no job are logged with the reason and acknowledged, once each.
    assert len([line for line in group.log_lines(ghost) if "not claimable" in line]) == 1
    assert len(group.log_lines("names no job")) == 1
    assert report.queue["ready"] == report.queue["unacked"] == 0
    assert deployment.count("true") == 3  # no job rows made up for poison
