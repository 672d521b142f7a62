"""Notes written from a pop, who answered a call, and the missed-call follow-up.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

``notes`` gains the browser's ``idempotency_key`` (unique: a retried save finds its
row), ``tags`` and ``follow_up_on``; ``note_revisions`` keeps each earlier text of a
corrected note. ``calls`` gains who answered (``answered_staff_id``, ``answered_at``,
``answered_how``, ``talk_seconds``) and the missed-call follow-up (``missed_*``), with
a partial index for the missed list.

On SQLite the new ``calls`` columns go in by batch mode's copy of the table, since
SQLite cannot add a named foreign key to a table. Dropping the old ``calls`` with
foreign keys on (they are, per connection, and cannot be turned off inside the
migration's transaction) runs ``ON DELETE SET NULL`` on ``notes.call_id``: the links
are kept aside in a temporary table and put back once the copy is in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_MISSED = sa.text(
    "outcome IN ('abandoned', 'timeout') AND answered_by IS NULL AND answered_staff_id IS NULL"
)


@contextmanager
def _note_call_links_kept() -> Iterator[None]:
    """Around a batch copy of ``calls`` on SQLite: put back the notes' links to calls."""
    if op.get_bind().dialect.name != "sqlite":
        yield
        return
    op.execute(
        "CREATE TEMPORARY TABLE note_call_links AS "
        "SELECT id, call_id FROM notes WHERE call_id IS NOT NULL"
    )
    yield
    op.execute(
        "UPDATE notes SET call_id = "
        "(SELECT l.call_id FROM note_call_links l WHERE l.id = notes.id) "
        "WHERE id IN (SELECT id FROM note_call_links)"
    )
    op.execute("DROP TABLE note_call_links")


def upgrade() -> None:
    op.add_column("notes", sa.Column("idempotency_key", sa.String(64), nullable=True))
    op.add_column(
        "notes", sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
    )
    op.add_column("notes", sa.Column("follow_up_on", sa.Date(), nullable=True))
    op.create_index("ix_notes_idempotency_key", "notes", ["idempotency_key"], unique=True)

    op.create_table(
        "note_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("note_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_note_revisions"),
        sa.ForeignKeyConstraint(
            ["note_id"],
            ["notes.id"],
            name="fk_note_revisions_note_id_notes",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staff.id"],
            name="fk_note_revisions_staff_id_staff",
            ondelete="SET NULL",
        ),
    )
    op.create_index(
        "ix_note_revisions_note_changed", "note_revisions", ["note_id", "changed_at", "id"]
    )

    with _note_call_links_kept(), op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("answered_staff_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("answered_how", sa.String(16), nullable=True))
        batch.add_column(sa.Column("talk_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("missed_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("missed_resolved_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("missed_resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("missed_note", sa.Text(), nullable=True))
        for column in ("answered_staff_id", "missed_resolved_by"):
            batch.create_foreign_key(
                f"fk_calls_{column}_staff", "staff", [column], ["id"], ondelete="SET NULL"
            )
    op.create_index(
        "ix_calls_missed",
        "calls",
        ["missed_status", "started_at"],
        sqlite_where=_MISSED,
        postgresql_where=_MISSED,
    )


def downgrade() -> None:
    op.drop_index("ix_calls_missed", table_name="calls")
    with _note_call_links_kept(), op.batch_alter_table("calls") as batch:
        for column in ("missed_resolved_by", "answered_staff_id"):
            batch.drop_constraint(f"fk_calls_{column}_staff", type_="foreignkey")
        for column in (
            "missed_note",
            "missed_resolved_at",
            "missed_resolved_by",
            "missed_status",
            "talk_seconds",
            "answered_how",
            "answered_at",
            "answered_staff_id",
        ):
            batch.drop_column(column)
    op.drop_index("ix_note_revisions_note_changed", table_name="note_revisions")
    op.drop_table("note_revisions")
    op.drop_index("ix_notes_idempotency_key", table_name="notes")
    with op.batch_alter_table("notes") as batch:
        for column in ("follow_up_on", "tags", "idempotency_key"):
            batch.drop_column(column)
