"""tenants, webhook deliveries, attempt totals, trace context

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import store.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_CALLBACK_DUE = (
    "callback_url IS NOT NULL AND callback_queued_at IS NULL"
    " AND status IN ('succeeded', 'failed', 'dead', 'cancelled')"
)


def upgrade() -> None:
    op.create_table(
        "attempt_totals",
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("type", "decision", "shard", name=op.f("pk_attempt_totals")),
    )
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("webhook_secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tenants")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), nullable=False),
        sa.Column("next_attempt_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_webhook_deliveries_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_job_id_id", "webhook_deliveries", ["job_id", "id"], unique=False
    )
    op.add_column("jobs", sa.Column("traceparent", sa.String(length=55), nullable=True))
    op.add_column("jobs", sa.Column("callback_url", sa.String(length=2048), nullable=True))
    op.add_column(
        "jobs",
        sa.Column("callback_queued_at", store.types.UtcDateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_jobs_callback_due",
        "jobs",
        ["finished_at"],
        unique=False,
        postgresql_where=sa.text(_CALLBACK_DUE),
        sqlite_where=sa.text(_CALLBACK_DUE),
    )
    op.create_index(
        "ix_jobs_dead_finished_at",
        "jobs",
        ["finished_at"],
        unique=False,
        postgresql_where=sa.text("status = 'dead' AND replayed_by IS NULL"),
        sqlite_where=sa.text("status = 'dead' AND replayed_by IS NULL"),
    )
    op.create_index(
        "ix_jobs_ready_since",
        "jobs",
        ["queue", sa.literal_column("coalesce(next_attempt_at, created_at)")],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_jobs_ready_since",
        table_name="jobs",
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.drop_index(
        "ix_jobs_dead_finished_at",
        table_name="jobs",
        postgresql_where=sa.text("status = 'dead' AND replayed_by IS NULL"),
        sqlite_where=sa.text("status = 'dead' AND replayed_by IS NULL"),
    )
    op.drop_index(
        "ix_jobs_callback_due",
        table_name="jobs",
        postgresql_where=sa.text(_CALLBACK_DUE),
        sqlite_where=sa.text(_CALLBACK_DUE),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("callback_queued_at")
        batch_op.drop_column("callback_url")
        batch_op.drop_column("traceparent")
    op.drop_index("ix_webhook_deliveries_job_id_id", table_name="webhook_deliveries")
    op.drop_index(
        "ix_webhook_deliveries_due",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.drop_table("webhook_deliveries")
    op.drop_table("tenants")
    op.drop_table("attempt_totals")
