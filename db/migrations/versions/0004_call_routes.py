"""Where a call went: the hand-over (転送メモ) and known-customer routing, in the call log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

``calls`` gains the hand-over (``handover_from_staff_id``, ``handover_to_staff_id``,
``handover_to_extension``, ``handover_state``, ``handover_note``) and the routing
decision (``routed_to``, the extension or URI of the 302's Contact, ``routed_staff_id``
and ``routing_reason``), so that the log says "answered by 佐藤, transferred to 鈴木" and
"routed to 佐藤 (担当者 idle)" after the board has forgotten the call.

Plain nullable columns without foreign keys: staff rows are deactivated, never deleted,
and a plain ``ADD COLUMN`` / ``DROP COLUMN`` keeps SQLite from copying the whole ``calls``
table (which 0003 had to do, with the notes' links kept aside).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    ("handover_from_staff_id", sa.Integer()),
    ("handover_to_staff_id", sa.Integer()),
    ("handover_to_extension", sa.String(length=32)),
    ("handover_state", sa.String(length=16)),
    ("handover_note", sa.Text()),
    ("routed_to", sa.String(length=255)),
    ("routed_staff_id", sa.Integer()),
    ("routing_reason", sa.String(length=32)),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("calls", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+): a batch copy would drop ``calls`` and, with
    # foreign keys on, null every note's link to its call.
    for name, _ in reversed(_COLUMNS):
        op.drop_column("calls", name)
