"""The audit trail (``audit_log``): who changed which customer record, when, and how.

Every write to a customer, phone, family member, transaction or note (``db.records``,
``db.notes``, the import) adds one :class:`~db.models.AuditEntry` in the same
transaction as the change, holding the record before and after as plain JSON values
(:func:`snapshot`). The trail outlives the records: entries name the customer by a
plain id, so a purge leaves them in place. Knows nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from db.models import AuditEntry, Staff

Action = Literal["create", "update", "delete", "restore", "purge"]
Entity = Literal["customer", "phone", "family", "transaction", "note"]
Source = Literal["web", "import", "cli"]

# Derived or bookkeeping columns: they say nothing a person changed.
_LEFT_OUT = frozenset({"search_text", "search_digits", "created_at", "updated_at"})
AUDIT_PAGE_MAX = 200


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(one) for one in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def snapshot(obj: Any) -> dict[str, Any]:
    """The row's columns as plain JSON values (dates and times as ISO strings), without
    the derived search columns and the created/updated times."""
    table: Table = obj.__table__
    return {
        column.key: _plain(getattr(obj, column.key))
        for column in table.columns
        if column.key not in _LEFT_OUT
    }


def plain_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """:func:`snapshot` of a row read with Core (a column-name mapping)."""
    return {str(key): _plain(value) for key, value in row.items() if key not in _LEFT_OUT}


def record(
    session: Session,
    *,
    staff_id: int | None,
    action: Action,
    entity: Entity,
    entity_id: int,
    customer_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source: Source = "web",
) -> AuditEntry:
    """Add one entry to the session (written with the change, when the caller commits)."""
    entry = AuditEntry(
        staff_id=staff_id,
        source=source,
        action=action,
        entity=entity,
        entity_id=entity_id,
        customer_id=customer_id,
        before=before,
        after=after,
    )
    session.add(entry)
    return entry


def audit_page(
    session: Session, *, customer_id: int | None = None, before: int | None = None, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Entries newest first (by id: the order they were written), ``limit`` at most,
    with the staff member's name; and the cursor for the next page (None at the end).

    ``before`` is the cursor a previous page returned: entries with a smaller id.
    """
    limit = max(1, min(limit, AUDIT_PAGE_MAX))
    audit = cast(Table, AuditEntry.__table__).c
    query = (
        select(AuditEntry, Staff.name)
        .outerjoin(Staff, Staff.id == audit.staff_id)
        .order_by(audit.id.desc())
        .limit(limit + 1)
    )
    if customer_id is not None:
        query = query.where(audit.customer_id == customer_id)
    if before is not None:
        query = query.where(audit.id < before)
    rows = session.execute(query).all()
    entries = [
        {
            "id": entry.id,
            "at": entry.at,
            "staff_id": entry.staff_id,
            "staff_name": name,
            "source": entry.source,
            "action": entry.action,
            "entity": entry.entity,
            "entity_id": entry.entity_id,
            "customer_id": entry.customer_id,
            "before": entry.before,
            "after": entry.after,
        }
        for entry, name in rows[:limit]
    ]
    more = len(rows) > limit
    return entries, (rows[limit - 1][0].id if more else None)


__all__ = [
    "AUDIT_PAGE_MAX",
    "Action",
    "Entity",
    "Source",
    "audit_page",
    "plain_row",
    "record",
    "snapshot",
]
