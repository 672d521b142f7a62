"""Records staff keep current: search columns, follow-ups, family, note kinds, audit log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- ``customers`` gains ``search_text`` and ``search_digits`` (what search-as-you-type
  matches, ``db.search``; filled here for every existing customer) and
  ``next_follow_up_on``, and an index on ``updated_at`` (search with nothing typed lists
  the most recently updated);
- ``notes`` gains ``kind`` (call | visit | email | other; every existing note was written
  after a call), ``follow_up_done_at`` / ``follow_up_done_by`` and an index on
  ``follow_up_on`` for 今日のフォロー;
- ``family_members``: name, furigana, relation, birthday of a customer's family;
- ``audit_log``: who changed which record when, before and after.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("next_follow_up_on", sa.Date(), nullable=True))
    op.add_column("customers", sa.Column("search_text", sa.Text(), nullable=True))
    op.add_column("customers", sa.Column("search_digits", sa.Text(), nullable=True))
    op.create_index("ix_customers_updated_at", "customers", ["updated_at", "id"])
    op.add_column(
        "notes",
        sa.Column("kind", sa.String(length=16), server_default=sa.text("'call'"), nullable=False),
    )
    op.add_column(
        "notes", sa.Column("follow_up_done_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("notes", sa.Column("follow_up_done_by", sa.Integer(), nullable=True))
    op.create_index("ix_notes_follow_up_on", "notes", ["follow_up_on"])
    op.create_table(
        "family_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("furigana", sa.String(length=100), nullable=True),
        sa.Column("relation", sa.String(length=32), nullable=True),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_family_members_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_family_members")),
    )
    op.create_index(
        op.f("ix_family_members_customer_id"), "family_members", ["customer_id"], unique=False
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_customer_at", "audit_log", ["customer_id", "at", "id"])
    op.create_index("ix_audit_log_at", "audit_log", ["at", "id"])

    # Existing customers become searchable at once.
    from db.search import refresh_search

    refresh_search(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_index("ix_audit_log_customer_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index(op.f("ix_family_members_customer_id"), table_name="family_members")
    op.drop_table("family_members")
    op.drop_index("ix_notes_follow_up_on", table_name="notes")
    for column in ("kind", "follow_up_done_by", "follow_up_done_at"):
        op.drop_column("notes", column)
    op.drop_index("ix_customers_updated_at", table_name="customers")
    for column in ("search_digits", "search_text", "next_follow_up_on"):
        op.drop_column("customers", column)
