"""Customer fields an office's spreadsheet carries: code, honorific, department, address,
e-mail, contact hours.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``customers`` gains ``code`` (the office's own customer number, optional; unique where
set, so that importing the same list again updates the customer instead of adding a
second), ``honorific`` (様 / 御中 …), ``department``, ``postal_code``, ``address``,
``email`` and ``contact_hours`` (連絡可能な時間帯, free text).

Plain nullable columns and a partial unique index: ``ADD COLUMN`` keeps SQLite from
copying the table, and existing customers simply have no code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    ("code", sa.String(length=32)),
    ("honorific", sa.String(length=16)),
    ("department", sa.String(length=200)),
    ("postal_code", sa.String(length=16)),
    ("address", sa.Text()),
    ("email", sa.String(length=254)),
    ("contact_hours", sa.String(length=200)),
)
_CODE_SET = sa.text("code IS NOT NULL")


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("customers", sa.Column(name, type_, nullable=True))
    op.create_index(
        "ix_customers_code",
        "customers",
        ["code"],
        unique=True,
        sqlite_where=_CODE_SET,
        postgresql_where=_CODE_SET,
    )


def downgrade() -> None:
    op.drop_index("ix_customers_code", table_name="customers")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("customers", name)
