"""schedules, schedule runs, the jobs of a schedule

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import store.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=256), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("max_attempts", sa.SmallInteger(), nullable=False),
        sa.Column("cron", sa.String(length=128), nullable=True),
        sa.Column("interval_s", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("jitter_s", sa.Integer(), nullable=False),
        sa.Column("overlap", sa.String(length=8), nullable=False),
        sa.Column("missed", sa.String(length=8), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("next_occurrence", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("next_fire_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("skipped_runs", sa.Integer(), nullable=False),
        sa.Column("last_job_id", sa.Uuid(), nullable=True),
        sa.Column("last_scheduled_for", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_fire_at"],
        unique=False,
        postgresql_where=sa.text("NOT paused"),
        sqlite_where=sa.text("NOT paused"),
    )
    op.create_index("ix_schedules_tenant_id", "schedules", ["tenant", "id"], unique=False)
    op.create_index("uq_schedules_tenant_name", "schedules", ["tenant", "name"], unique=True)
    op.create_table(
        "schedule_runs",
        sa.Column("schedule_id", sa.Uuid(), nullable=False),
        sa.Column("scheduled_for", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_runs_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("schedule_id", "scheduled_for", name=op.f("pk_schedule_runs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schedule_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("scheduled_for", store.types.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_jobs_schedule_id_id",
            ["schedule_id", "id"],
            unique=False,
            postgresql_where=sa.text("schedule_id IS NOT NULL"),
            sqlite_where=sa.text("schedule_id IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_jobs_schedule_id_id",
            postgresql_where=sa.text("schedule_id IS NOT NULL"),
            sqlite_where=sa.text("schedule_id IS NOT NULL"),
        )
        batch_op.drop_column("scheduled_for")
        batch_op.drop_column("schedule_id")
    op.drop_table("schedule_runs")
    op.drop_index("uq_schedules_tenant_name", table_name="schedules")
    op.drop_index("ix_schedules_tenant_id", table_name="schedules")
    op.drop_index(
        "ix_schedules_due",
        table_name="schedules",
        postgresql_where=sa.text("NOT paused"),
        sqlite_where=sa.text("NOT paused"),
    )
    op.drop_table("schedules")
