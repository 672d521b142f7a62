"""Initial schema: staff, customers, customer phones, transactions, notes, calls.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Indexes are the lookup's query path (see ``lookup.service``): live phones by
number, each customer's transactions and notes newest first, and calls by caller
and time. "Newest first" reads the (customer, date) indexes backwards, which both
SQLite and PostgreSQL do, so they are plain ascending.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _timestamps(*, soft_delete: bool) -> list[sa.Column[object]]:
    columns: list[sa.Column[object]] = [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]
    if soft_delete:
        columns.append(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    return columns


def upgrade() -> None:
    op.create_table(
        "staff",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("furigana", sa.String(100), nullable=True),
        sa.Column("extension", sa.String(16), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        *_timestamps(soft_delete=False),
        sa.PrimaryKeyConstraint("id", name="pk_staff"),
        sa.UniqueConstraint("login", name="uq_staff_login"),
        sa.CheckConstraint("role IN ('admin', 'staff')", name="ck_staff_role"),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("furigana", sa.String(200), nullable=True),
        sa.Column("company", sa.String(200), nullable=True),
        sa.Column("rank", sa.String(16), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("preferences", sa.Text(), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("assigned_staff_id", sa.Integer(), nullable=True),
        *_timestamps(soft_delete=True),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
        sa.ForeignKeyConstraint(
            ["assigned_staff_id"],
            ["staff.id"],
            name="fk_customers_assigned_staff_id_staff",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_customers_assigned_staff_id", "customers", ["assigned_staff_id"])

    op.create_table(
        "customer_phones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("e164", sa.String(20), nullable=False),
        sa.Column("label", sa.String(32), nullable=True),
        sa.Column("owner_name", sa.String(100), nullable=True),
        sa.Column("raw", sa.String(64), nullable=True),
        *_timestamps(soft_delete=True),
        sa.PrimaryKeyConstraint("id", name="pk_customer_phones"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_customer_phones_customer_id_customers",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_customer_phones_customer_id", "customer_phones", ["customer_id"])
    # Not unique: a family landline or a switchboard is shared. Partial, so deleted
    # numbers cost the lookup nothing.
    op.create_index(
        "ix_customer_phones_e164_live",
        "customer_phones",
        ["e164", "customer_id"],
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )

    op.create_table(
        "calls",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("sip_call_id", sa.String(255), nullable=False),
        sa.Column("caller_e164", sa.String(20), nullable=True),
        sa.Column("caller_raw", sa.String(255), nullable=True),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("withheld", sa.String(16), nullable=True),
        sa.Column("dialed_e164", sa.String(20), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("answered_by", sa.String(16), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        *_timestamps(soft_delete=False),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_calls_customer_id_customers",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_calls_sip_call_id", "calls", ["sip_call_id"])
    op.create_index("ix_calls_customer_started", "calls", ["customer_id", "started_at"])
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_caller_started", "calls", ["caller_e164", "started_at"])

    op.create_table(
        "transactions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("amount_yen", sa.Integer(), nullable=True),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        *_timestamps(soft_delete=True),
        sa.PrimaryKeyConstraint("id", name="pk_transactions"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_transactions_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name="fk_transactions_staff_id_staff", ondelete="SET NULL"
        ),
    )
    op.create_index(
        "ix_transactions_customer_date",
        "transactions",
        ["customer_id", "date", "id"],
    )

    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("call_id", sa.String(32), nullable=True),
        *_timestamps(soft_delete=True),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_notes_customer_id_customers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name="fk_notes_staff_id_staff", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_notes_call_id_calls", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_notes_call_id", "notes", ["call_id"])
    op.create_index(
        "ix_notes_customer_created",
        "notes",
        ["customer_id", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_table("notes")
    op.drop_table("transactions")
    op.drop_table("calls")
    op.drop_table("customer_phones")
    op.drop_table("customers")
    op.drop_table("staff")
