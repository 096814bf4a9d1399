"""Jobs written straight into the record, past the API: dead ones for tests of replay that
need no worker, queued ones the API would refuse, and rows for the store's own statements."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session, sessionmaker

from store import submissions
from store.ids import new_id
from store.models import Job
from store.states import Status
from store.submissions import NewJob
from store.types import utcnow


def add_job(
    sessions: sessionmaker[Session],
    *,
    tenant: str = "acme",
    entity_id: str | None = None,
    status: str = "dead",
    type: str = "customer_sync",
) -> uuid.UUID:
    """A job row as a worker would leave it (dead of an UpstreamUnavailable, by default)."""
    now = utcnow()
    job = Job(
        id=new_id(),
        tenant=tenant,
        type=type,
        queue="sync",
        entity_id=entity_id,
        payload={"entity": entity_id},
        status=status,
        priority=3,
        attempts=1 if status == "dead" else 0,
        max_attempts=1,
        timeout_s=30,
        correlation_id=f"corr-{entity_id}",
        created_at=now,
        finished_at=now if status == "dead" else None,
        error_type="UpstreamUnavailable" if status == "dead" else None,
    )
    with sessions.begin() as session:
        session.add(job)
    return job.id


def add_dead(sessions: sessionmaker[Session], count: int, **kwargs: str) -> list[uuid.UUID]:
    """`count` dead jobs of entities c_0, c_1, ... (oldest first)."""
    return [add_job(sessions, entity_id=f"c_{i}", **kwargs) for i in range(count)]


def add_queued(sessions: sessionmaker[Session], **fields: Any) -> uuid.UUID:
    """A queued job of tenant acme as a submission stores it, unchecked (the relay publishes
    it): `fields` are NewJob's (type and any others)."""
    new = NewJob(
        **{"tenant": "acme", "queue": "sync", "max_attempts": 4, "timeout_s": 60, **fields}
    )
    with sessions.begin() as session:
        [job] = submissions.create_jobs(session, [new])
    assert isinstance(job, Job), job
    return job.id


def insert_jobs(
    engine: Engine, count: int, *, at: datetime | None = None, **columns: Any
) -> list[uuid.UUID]:
    """Insert `count` queued jobs of queue `sync`, created and published `at` (now), with one
    statement; `columns` override the defaults, and a callable column is given the row's
    index. Returns their ids in order."""
    at = at or utcnow()
    rows = []
    for i in range(count):
        job_id = new_id()
        row = {
            "id": job_id,
            "tenant": "t",
            "type": "customer_sync",
            "queue": "sync",
            "entity_id": str(job_id),
            "payload": {},
            "status": Status.QUEUED,
            "priority": 0,
            "attempts": 0,
            "max_attempts": 3,
            "timeout_s": 60,
            "correlation_id": f"corr-{i}",
            "created_at": at,
            "published_at": at,
        }
        row.update({k: v(i) if callable(v) else v for k, v in columns.items()})
        rows.append(row)
    with engine.begin() as conn:
        conn.execute(insert(Job.__table__), rows)
    return [row["id"] for row in rows]
