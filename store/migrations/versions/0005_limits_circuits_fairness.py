"""waiting jobs, upstream circuits, indexes for limits and fairness

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DUE = "published_at IS NULL AND status IN ('queued', 'retrying')"
_IN_BROKER = "published_at IS NOT NULL AND status IN ('queued', 'retrying')"


def upgrade() -> None:
    op.create_table(
        "circuits",
        sa.Column("upstream", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("retry_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("probes_left", sa.SmallInteger(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("upstream", name=op.f("pk_circuits")),
    )
    op.add_column("jobs", sa.Column("waiting_for", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_jobs_due_by_tenant",
        "jobs",
        ["queue", "tenant", "next_attempt_at"],
        unique=False,
        postgresql_where=sa.text(_DUE),
        sqlite_where=sa.text(_DUE),
    )
    op.create_index(
        "ix_jobs_in_broker_by_tenant",
        "jobs",
        ["queue", "tenant"],
        unique=False,
        postgresql_where=sa.text(_IN_BROKER),
        sqlite_where=sa.text(_IN_BROKER),
    )
    op.create_index(
        "ix_jobs_running_type_entity",
        "jobs",
        ["type", "entity_id"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "ix_jobs_running_type_tenant",
        "jobs",
        ["type", "tenant"],
        unique=False,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_jobs_running_type_tenant",
        table_name="jobs",
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.drop_index(
        "ix_jobs_running_type_entity",
        table_name="jobs",
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.drop_index(
        "ix_jobs_in_broker_by_tenant",
        table_name="jobs",
        postgresql_where=sa.text(_IN_BROKER),
        sqlite_where=sa.text(_IN_BROKER),
    )
    op.drop_index(
        "ix_jobs_due_by_tenant",
        table_name="jobs",
        postgresql_where=sa.text(_DUE),
        sqlite_where=sa.text(_DUE),
    )
    # Not in batch mode: SQLite's copy of the table would lose ix_jobs_ready_since, an
    # expression index it cannot reflect; both engines drop an unindexed column in place.
    op.drop_column("jobs", "waiting_for")
    op.drop_table("circuits")
