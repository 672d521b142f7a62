"""Server-side staff sessions: the ``sessions`` table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

The session cookie used to be a signed staff id that nothing could revoke. Each login
is now a row here, found by the SHA-256 of the cookie's random token; logout, expiry,
deactivation and a password change end it (``ended_at``, ``end_reason``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff.id"],
            name="fk_sessions_staff_id_staff",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sessions_staff_id", "sessions", ["staff_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_staff_id", table_name="sessions")
    op.drop_table("sessions")
