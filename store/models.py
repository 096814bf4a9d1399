"""The schema: jobs (also the outbox), attempts, schedules and their occurrences, tenants and
webhook deliveries, attempt totals, upstream circuits, API tokens, dashboard sessions, the
audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from store import states
from store.ids import new_id
from store.types import JsonType, UtcDateTime

ROLES = ("client", "operator")

Timestamp = UtcDateTime

_ACTIVE_SQL = states.in_sql(states.ACTIVE)
_DUE_SQL = "published_at IS NULL AND " + states.in_sql(states.CLAIMABLE)
_CALLBACK_DUE_SQL = "callback_url IS NOT NULL AND callback_queued_at IS NULL AND " + states.in_sql(
    states.TERMINAL
)
_WAITING_IN_BROKER_SQL = "published_at IS NOT NULL AND " + states.in_sql(states.CLAIMABLE)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints stably."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Job(Base):
    """One unit of integration work; its unpublished rows are the outbox the relay drains."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    max_attempts: Mapped[int] = mapped_column(SmallInteger)
    timeout_s: Mapped[int] = mapped_column(Integer)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    error_type: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String(128))
    replay_of: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    replayed_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    run_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # When the next message may be published and claimed (run_at, or a retry's due time).
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Outbox: null until a message for the current state has been confirmed by the broker.
    published_at: Mapped[datetime | None] = mapped_column(Timestamp)
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(Timestamp)
    dead_lettered_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The schedule that created the job (no foreign key: jobs outlive their schedule) and the
    # occurrence it was created for.
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    scheduled_for: Mapped[datetime | None] = mapped_column(Timestamp)
    # W3C trace context the job's work carries (the submitter's, or a trace started for it).
    traceparent: Mapped[str | None] = mapped_column(String(55))
    # Where the job's end is announced (a webhook), and when its delivery was queued.
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    callback_queued_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # What a queued job waits for (a concurrency limit's key, an open circuit); null otherwise.
    waiting_for: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        # Dedup of active work, enforced by the database rather than a racy check.
        Index(
            "uq_jobs_active_entity",
            "tenant",
            "type",
            "entity_id",
            unique=True,
            postgresql_where=text(_ACTIVE_SQL),
            sqlite_where=text(_ACTIVE_SQL),
        ),
        Index(
            "uq_jobs_idempotency",
            "tenant",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
        # Keyset listing, newest first (ids are time-ordered), per tenant and filter.
        Index("ix_jobs_tenant_id", "tenant", "id"),
        Index("ix_jobs_tenant_status_id", "tenant", "status", "id"),
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_tenant_type_id", "tenant", "type", "id"),
        Index("ix_jobs_tenant_entity_id", "tenant", "entity_id", "id"),
        # Outbox relay: what is due and not yet published.
        Index(
            "ix_jobs_due",
            "next_attempt_at",
            postgresql_where=text(_DUE_SQL),
            sqlite_where=text(_DUE_SQL),
        ),
        # Reconciler: published and unclaimed, per queue, oldest first.
        Index(
            "ix_jobs_waiting_in_broker",
            "queue",
            "published_at",
            postgresql_where=text(_WAITING_IN_BROKER_SQL),
            sqlite_where=text(_WAITING_IN_BROKER_SQL),
        ),
        # Reaper: running attempts by lease expiry.
        Index(
            "ix_jobs_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        # Dead letters not yet replayed.
        Index(
            "ix_jobs_dead",
            "id",
            postgresql_where=text("status = 'dead' AND replayed_by IS NULL"),
            sqlite_where=text("status = 'dead' AND replayed_by IS NULL"),
        ),
        # Retention: finished jobs by age.
        Index("ix_jobs_finished_at", "finished_at"),
        # Oldest job ready to run per queue: queued (not retrying) and ready since its run_at
        # or its creation.
        Index(
            "ix_jobs_ready_since",
            "queue",
            func.coalesce(text("next_attempt_at"), text("created_at")),
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        # Oldest dead letter.
        Index(
            "ix_jobs_dead_finished_at",
            "finished_at",
            postgresql_where=text("status = 'dead' AND replayed_by IS NULL"),
            sqlite_where=text("status = 'dead' AND replayed_by IS NULL"),
        ),
        # Ended jobs with a callback whose delivery is not queued yet.
        Index(
            "ix_jobs_callback_due",
            "finished_at",
            postgresql_where=text(_CALLBACK_DUE_SQL),
            sqlite_where=text(_CALLBACK_DUE_SQL),
        ),
        # Concurrency limits: the running jobs of a type by entity and by tenant.
        Index(
            "ix_jobs_running_type_entity",
            "type",
            "entity_id",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        Index(
            "ix_jobs_running_type_tenant",
            "type",
            "tenant",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        # Fairness: what each tenant has in the broker, and its due jobs, per queue.
        Index(
            "ix_jobs_in_broker_by_tenant",
            "queue",
            "tenant",
            postgresql_where=text(_WAITING_IN_BROKER_SQL),
            sqlite_where=text(_WAITING_IN_BROKER_SQL),
        ),
        Index(
            "ix_jobs_due_by_tenant",
            "queue",
            "tenant",
            "next_attempt_at",
            postgresql_where=text(_DUE_SQL),
            sqlite_where=text(_DUE_SQL),
        ),
        # A schedule's jobs, newest first.
        Index(
            "ix_jobs_schedule_id_id",
            "schedule_id",
            "id",
            postgresql_where=text("schedule_id IS NOT NULL"),
            sqlite_where=text("schedule_id IS NOT NULL"),
        ),
    )


class Attempt(Base):
    """One run of a job, numbered 1..n; crashes count as `abandoned` attempts."""

    __tablename__ = "attempts"

    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(8))
    error_type: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    retry_in_ms: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    worker: Mapped[str] = mapped_column(String(128))


class Schedule(Base):
    """A tenant's recurring job: a cron expression or an interval, read in a timezone.

    `next_occurrence` is the nominal time of the next occurrence not yet handled and
    `next_fire_at` that time plus its jitter: the scheduler handles a schedule once
    `next_fire_at` has passed by the database's clock.
    """

    __tablename__ = "schedules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)
    max_attempts: Mapped[int] = mapped_column(SmallInteger)
    cron: Mapped[str | None] = mapped_column(String(128))
    interval_s: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64))
    jitter_s: Mapped[int] = mapped_column(Integer, default=0)
    overlap: Mapped[str] = mapped_column(String(8))
    missed: Mapped[str] = mapped_column(String(8))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why the scheduler paused it itself (e.g. its job type no longer exists); null otherwise.
    paused_reason: Mapped[str | None] = mapped_column(Text)
    next_occurrence: Mapped[datetime] = mapped_column(Timestamp)
    next_fire_at: Mapped[datetime] = mapped_column(Timestamp)
    skipped_runs: Mapped[int] = mapped_column(Integer, default=0)
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    last_scheduled_for: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        Index("uq_schedules_tenant_name", "tenant", "name", unique=True),
        Index("ix_schedules_tenant_id", "tenant", "id"),
        # The scheduler's tick: live schedules by when they are next due.
        Index(
            "ix_schedules_due",
            "next_fire_at",
            postgresql_where=text("NOT paused"),
            sqlite_where=text("NOT paused"),
        ),
    )


class ScheduleRun(Base):
    """One handled occurrence of a schedule: its job, or why it got none.

    The primary key (schedule, occurrence) makes each occurrence happen once: the row is
    inserted in the transaction that inserts its job, and whichever process inserts it first
    wins.
    """

    __tablename__ = "schedule_runs"

    schedule_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True
    )
    scheduled_for: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    # created, triggered, or skipped (overlap: the previous job was still active).
    outcome: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class Tenant(Base):
    """What Courier keeps per tenant: the secret its webhooks are signed with."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    webhook_secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    rotated_at: Mapped[datetime | None] = mapped_column(Timestamp)


class WebhookDelivery(Base):
    """One announcement of a job's end to its `callback_url`, retried until delivered or
    given up."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    # The Job JSON as it was when the job ended: every retry sends the same body.
    body: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # pending, delivered or failed (gave up).
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        Index("ix_webhook_deliveries_job_id_id", "job_id", "id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )


class AttemptTotal(Base):
    """Finished attempts counted by type and decision, kept by the transitions that finish them.

    Several rows (shards) per pair, so concurrent writers rarely wait on one row; a reader sums
    them. /metrics reads this instead of counting the attempts table.
    """

    __tablename__ = "attempt_totals"

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    decision: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class Circuit(Base):
    """The circuit of one upstream: closed (calls go through), open (jobs that need it wait
    until `retry_at`), half-open (a few probe jobs go through)."""

    __tablename__ = "circuits"

    upstream: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    # Consecutive failures counted towards opening it.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(Timestamp)
    retry_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Probe jobs still allowed through while half-open.
    probes_left: Mapped[int] = mapped_column(SmallInteger, default=0)
    # Forced by an operator: the scheduler of probes leaves it as it is.
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)


class DashboardSession(Base):
    """A dashboard login: the cookie holds a random id whose SHA-256 is stored here.

    Ended by logout, by revoking the operator's token, or by expiry.
    """

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("api_tokens.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    ended_at: Mapped[datetime | None] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_dashboard_sessions_token_id", "token_id"),)


class AuditEntry(Base):
    """An operator action: who did what to which job, when and why. Append-only."""

    __tablename__ = "audit_log"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    at: Mapped[datetime] = mapped_column(Timestamp)
    actor: Mapped[str] = mapped_column(String(256))
    tenant: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_audit_log_job_id", "job_id"),)


# Core tables, for the statements that load no ORM entity. (A declarative class's `__table__`
# is typed FromClause; these are Tables.)
JOBS = cast(Table, Job.__table__)
ATTEMPTS = cast(Table, Attempt.__table__)
API_TOKENS = cast(Table, ApiToken.__table__)
SESSIONS = cast(Table, DashboardSession.__table__)
AUDIT_LOG = cast(Table, AuditEntry.__table__)
SCHEDULES = cast(Table, Schedule.__table__)
SCHEDULE_RUNS = cast(Table, ScheduleRun.__table__)
TENANTS = cast(Table, Tenant.__table__)
WEBHOOK_DELIVERIES = cast(Table, WebhookDelivery.__table__)
ATTEMPT_TOTALS = cast(Table, AttemptTotal.__table__)
CIRCUITS = cast(Table, Circuit.__table__)
