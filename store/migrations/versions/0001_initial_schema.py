"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("created_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_job_id", ["job_id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=256), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), nullable=False),
        sa.Column("max_attempts", sa.SmallInteger(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column(
            "progress",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error_type", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(length=128), nullable=False),
        sa.Column("replay_of", sa.Uuid(), nullable=True),
        sa.Column("replayed_by", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=256), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("started_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("run_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("published_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("dead_lettered_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_dead",
            ["id"],
            unique=False,
            postgresql_where=sa.text("status = 'dead' AND replayed_by IS NULL"),
            sqlite_where=sa.text("status = 'dead' AND replayed_by IS NULL"),
        )
        batch_op.create_index(
            "ix_jobs_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("published_at IS NULL AND status IN ('queued', 'retrying')"),
            sqlite_where=sa.text("published_at IS NULL AND status IN ('queued', 'retrying')"),
        )
        batch_op.create_index("ix_jobs_finished_at", ["finished_at"], unique=False)
        batch_op.create_index(
            "ix_jobs_lease",
            ["lease_expires_at"],
            unique=False,
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )
        batch_op.create_index("ix_jobs_status_id", ["status", "id"], unique=False)
        batch_op.create_index(
            "ix_jobs_tenant_entity_id", ["tenant", "entity_id", "id"], unique=False
        )
        batch_op.create_index("ix_jobs_tenant_id", ["tenant", "id"], unique=False)
        batch_op.create_index("ix_jobs_tenant_status_id", ["tenant", "status", "id"], unique=False)
        batch_op.create_index("ix_jobs_tenant_type_id", ["tenant", "type", "id"], unique=False)
        batch_op.create_index(
            "uq_jobs_active_entity",
            ["tenant", "type", "entity_id"],
            unique=True,
            postgresql_where=sa.text("status IN ('queued', 'running', 'retrying')"),
            sqlite_where=sa.text("status IN ('queued', 'running', 'retrying')"),
        )
        batch_op.create_index(
            "uq_jobs_idempotency",
            ["tenant", "idempotency_key"],
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        )

    op.create_table(
        "attempts",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=True),
        sa.Column("error_type", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("retry_in_ms", sa.BigInteger(), nullable=True),
        sa.Column("started_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_attempts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "number", name=op.f("pk_attempts")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The audit log is append-only for everyone, not only for well-behaved code.
        op.execute(
            """
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only';
            END $$;
            CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
                FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
            """
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")

    op.drop_table("attempts")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_jobs_idempotency",
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "uq_jobs_active_entity",
            postgresql_where=sa.text("status IN ('queued', 'running', 'retrying')"),
            sqlite_where=sa.text("status IN ('queued', 'running', 'retrying')"),
        )
        batch_op.drop_index("ix_jobs_tenant_type_id")
        batch_op.drop_index("ix_jobs_tenant_status_id")
        batch_op.drop_index("ix_jobs_tenant_id")
        batch_op.drop_index("ix_jobs_tenant_entity_id")
        batch_op.drop_index("ix_jobs_status_id")
        batch_op.drop_index(
            "ix_jobs_lease",
            postgresql_where=sa.text("status = 'running'"),
            sqlite_where=sa.text("status = 'running'"),
        )
        batch_op.drop_index("ix_jobs_finished_at")
        batch_op.drop_index(
            "ix_jobs_due",
            postgresql_where=sa.text("published_at IS NULL AND status IN ('queued', 'retrying')"),
            sqlite_where=sa.text("published_at IS NULL AND status IN ('queued', 'retrying')"),
        )
        batch_op.drop_index(
            "ix_jobs_dead",
            postgresql_where=sa.text("status = 'dead' AND replayed_by IS NULL"),
            sqlite_where=sa.text("status = 'dead' AND replayed_by IS NULL"),
        )

    op.drop_table("jobs")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_job_id")

    op.drop_table("audit_log")
    op.drop_table("api_tokens")
