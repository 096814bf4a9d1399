"""reconciler index, dashboard sessions, token expiry and last use

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_WAITING_IN_BROKER = "published_at IS NOT NULL AND status IN ('queued', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expires_at", store.types.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("last_used_at", store.types.UtcDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", store.types.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name=op.f("fk_dashboard_sessions_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_dashboard_sessions")),
    )
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_dashboard_sessions_token_id", ["token_id"], unique=False)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_waiting_in_broker",
            ["queue", "published_at"],
            unique=False,
            postgresql_where=sa.text(_WAITING_IN_BROKER),
            sqlite_where=sa.text(_WAITING_IN_BROKER),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_jobs_waiting_in_broker",
            postgresql_where=sa.text(_WAITING_IN_BROKER),
            sqlite_where=sa.text(_WAITING_IN_BROKER),
        )
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_dashboard_sessions_token_id")
    op.drop_table("dashboard_sessions")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
