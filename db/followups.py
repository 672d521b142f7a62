"""Follow-ups (今日のフォロー) and dormant customers (休眠のお客様), read and ticked off.

A follow-up is due on a note (``Note.follow_up_on``, open while ``follow_up_done_at``
is NULL) or on the customer itself (``Customer.next_follow_up_on``, open while set).
:func:`today` lists those due today or before; :func:`mark_note_done` and
:func:`mark_customer_done` tick one off, with an audit entry, and commit.

A customer is dormant when their last contact — the latest of a transaction's date,
a note written and a call logged for them — is at least the rank's number of days
ago (``[followups] dormant_days``); one never contacted counts from when the
customer was entered. :func:`dormant` answers that with one grouped subquery per
table (a scan of each table's customer index, not a query per customer) and reads
the details of the page it returns only.

Dates are the office's (Asia/Tokyo): the caller passes ``today``. Knows nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Date, and_, case, cast, func, literal, select, text
from sqlalchemy.orm import Session

from db.audit import record, snapshot
from db.models import Call, Customer, Note, Staff, Transaction, utcnow
from db.refused import Refused

TOKYO = ZoneInfo("Asia/Tokyo")
LIST_MAX = 500  # rows a follow-up or dormant list returns at most (the caller's limit)


class FollowupRefused(Refused):
    """Nothing to tick off (``not_found``): no such live note with a follow-up, or no
    such customer."""


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    truncated: bool


# --- 今日のフォロー ---------------------------------------------------------------------


def today(session: Session, today: dt.date, *, limit: int = 100) -> Page:
    """Open follow-ups due on ``today`` or before, the oldest due first (then notes
    before customers, then by id); ``limit`` at most, ``truncated`` when there were more.

    Items: ``{kind: "note"|"customer", note_id, customer: {...}, due, overdue, body}``.
    """
    limit = max(1, min(limit, LIST_MAX))
    notes = session.execute(
        select(Note.id, Note.customer_id, Note.follow_up_on, Note.body)
        .join(Customer, Customer.id == Note.customer_id)
        .where(
            Note.follow_up_on <= today,
            Note.follow_up_done_at.is_(None),
            Note.deleted_at.is_(None),
            Customer.deleted_at.is_(None),
        )
        .order_by(Note.follow_up_on, Note.id)
        .limit(limit + 1)
    ).all()
    customers = session.execute(
        select(Customer.id, Customer.next_follow_up_on)
        .where(Customer.next_follow_up_on <= today, Customer.deleted_at.is_(None))
        .order_by(Customer.next_follow_up_on, Customer.id)
        .limit(limit + 1)
    ).all()
    due: list[tuple[dt.date, int, int, dict[str, Any]]] = [
        (n.follow_up_on, 0, n.id, {"kind": "note", "note_id": n.id, "cid": n.customer_id})
        for n in notes
    ] + [
        (c.next_follow_up_on, 1, c.id, {"kind": "customer", "note_id": None, "cid": c.id})
        for c in customers
    ]
    body_of = {n.id: n.body for n in notes}
    due.sort(key=lambda d: (d[0], d[1], d[2]))
    page = due[:limit]
    cards = _customer_refs(session, [d[3]["cid"] for d in page])
    items = [
        {
            "kind": info["kind"],
            "note_id": info["note_id"],
            "customer": cards[info["cid"]],
            "due": on,
            "overdue": on < today,
            "body": body_of.get(info["note_id"]) if info["kind"] == "note" else None,
        }
        for on, _, _, info in page
    ]
    return Page(items=items, truncated=len(due) > limit)


def mark_note_done(
    session: Session, note_id: int, *, staff_id: int, now: dt.datetime | None = None
) -> None:
    """Tick off a note's follow-up (once: ticking it again changes nothing) and commit."""
    note = session.scalar(
        select(Note)
        .join(Customer, Customer.id == Note.customer_id)
        .where(
            Note.id == note_id,
            Note.deleted_at.is_(None),
            Note.follow_up_on.is_not(None),
            Customer.deleted_at.is_(None),
        )
    )
    if note is None:
        raise FollowupRefused("not_found", "フォロー予定のあるメモが見つかりません")
    if note.follow_up_done_at is not None:
        return
    before = snapshot(note)
    note.follow_up_done_at = now or utcnow()
    note.follow_up_done_by = staff_id
    session.flush()
    record(
        session,
        staff_id=staff_id,
        action="update",
        entity="note",
        entity_id=note.id,
        customer_id=note.customer_id,
        before=before,
        after=snapshot(note),
    )
    session.commit()


def mark_customer_done(session: Session, customer_id: int, *, staff_id: int) -> None:
    """Tick off the customer's own follow-up: clear ``next_follow_up_on``, and commit."""
    customer = session.scalar(
        select(Customer).where(Customer.id == customer_id, Customer.deleted_at.is_(None))
    )
    if customer is None:
        raise FollowupRefused("not_found", "顧客が見つかりません")
    if customer.next_follow_up_on is None:
        return
    before = snapshot(customer)
    customer.next_follow_up_on = None
    session.flush()
    record(
        session,
        staff_id=staff_id,
        action="update",
        entity="customer",
        entity_id=customer.id,
        customer_id=customer.id,
        before=before,
        after=snapshot(customer),
    )
    session.commit()


# --- 休眠のお客様 -----------------------------------------------------------------------


def dormant(
    session: Session,
    today: dt.date,
    days_by_rank: Mapping[str, int],
    default_days: int,
    *,
    rank: str | None = None,
    limit: int = 100,
) -> Page:
    """Live customers without contact for at least their rank's days (``days_by_rank``,
    else ``default_days``), longest without contact first; ``rank`` keeps one rank.

    Items: ``{customer: {...}, rank, last_contact_on (null: never), days, threshold_days}``;
    ``days`` counts from the last contact, or from when a never-contacted customer was
    entered. The filter, the order and the limit are the database's: only the page
    comes back.
    """
    limit = max(1, min(limit, LIST_MAX))
    dialect = session.get_bind().dialect.name
    last_tx = (
        select(Transaction.customer_id, func.max(Transaction.date).label("last"))
        .where(Transaction.deleted_at.is_(None))
        .group_by(Transaction.customer_id)
        .subquery("last_tx")
    )
    last_note = (
        select(Note.customer_id, func.max(Note.created_at).label("last"))
        .where(Note.deleted_at.is_(None))
        .group_by(Note.customer_id)
        .subquery("last_note")
    )
    last_call = (
        select(Call.customer_id, func.max(Call.started_at).label("last"))
        .where(Call.customer_id.is_not(None))
        .group_by(Call.customer_id)
        .subquery("last_call")
    )
    # The day of the last contact (Tokyo), NULL when never; ``since`` falls back to the
    # day the customer was entered.
    last_day = _latest_day(
        dialect,
        last_tx.c.last,
        _tokyo_day(dialect, last_note.c.last),
        _tokyo_day(dialect, last_call.c.last),
    )
    since = func.coalesce(last_day, _tokyo_day(dialect, Customer.__table__.c.created_at))
    ranks = dict(days_by_rank)

    def cut(days: int) -> ColumnElement[dt.date]:
        return literal(today - dt.timedelta(days=days), Date)

    if rank is not None:
        rule: ColumnElement[bool] = and_(
            Customer.rank == rank, since <= cut(ranks.get(rank, default_days))
        )
    else:
        threshold = case(
            *((Customer.rank == r, cut(d)) for r, d in ranks.items()),
            else_=cut(default_days),
        )
        rule = since <= threshold if ranks else since <= cut(default_days)
    if dialect == "postgresql":
        # Without statistics (a fresh import, before autovacuum's ANALYZE) PostgreSQL
        # guesses one row per table and re-aggregates a whole table per customer in a
        # nested loop: over a minute at 100,000 customers, 0.2 s as hash joins.
        session.execute(text("SET LOCAL enable_nestloop = off"))
    statement = (
        select(Customer.id, Customer.rank, last_day.label("last"), since.label("since"))
        .select_from(Customer)
        .outerjoin(last_tx, last_tx.c.customer_id == Customer.id)
        .outerjoin(last_note, last_note.c.customer_id == Customer.id)
        .outerjoin(last_call, last_call.c.customer_id == Customer.id)
        .where(Customer.deleted_at.is_(None), rule)
        .order_by(since, Customer.id)
        .limit(limit + 1)
    )
    rows = session.execute(statement).all()
    if dialect == "postgresql":  # (a failed statement ends the transaction, and the SET)
        session.execute(text("SET LOCAL enable_nestloop TO DEFAULT"))
    page = rows[:limit]
    cards = _customer_refs(session, [row.id for row in page])
    items = []
    for row in page:
        on = _day(row.since)
        assert on is not None
        items.append(
            {
                "customer": cards[row.id],
                "rank": row.rank,
                "last_contact_on": _day(row.last),
                "days": (today - on).days,
                "threshold_days": ranks.get(row.rank, default_days)
                if row.rank is not None
                else default_days,
            }
        )
    return Page(items=items, truncated=len(rows) > limit)


def _tokyo_day(dialect: str, moment: ColumnElement[Any]) -> ColumnElement[Any]:
    """The Tokyo date of a stored moment (UTC), as the database writes a date."""
    if dialect == "sqlite":  # naive UTC text (db.models.UTCDateTime); Tokyo has no DST
        return func.date(moment, "+9 hours")
    return cast(func.timezone("Asia/Tokyo", moment), Date)


def _latest_day(dialect: str, *days: ColumnElement[Any]) -> ColumnElement[Any]:
    """The latest of ``days``, NULLs ignored; NULL when all are."""
    if dialect == "sqlite":
        # SQLite's max(a, b, …) is NULL when one is: compare '' for none (ISO dates
        # sort as text), and turn an all-'' back into NULL.
        return func.nullif(func.max(*(func.coalesce(d, "") for d in days)), "")
    return func.greatest(*days)  # PostgreSQL's GREATEST ignores NULLs


# --- helpers ------------------------------------------------------------------------


def _customer_refs(session: Session, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """What a list shows of each customer (one query for the page, not one per row)."""
    if not ids:
        return {}
    rows = session.execute(
        select(
            Customer.id,
            Customer.name,
            Customer.furigana,
            Customer.honorific,
            Customer.company,
            Staff.id.label("staff_id"),
            Staff.name.label("staff_name"),
            Staff.furigana.label("staff_furigana"),
            Staff.extension.label("staff_extension"),
        )
        .outerjoin(Staff, Staff.id == Customer.assigned_staff_id)
        .where(Customer.id.in_(sorted(set(ids))))
    ).all()
    return {
        row.id: {
            "id": row.id,
            "name": row.name,
            "furigana": row.furigana,
            "honorific": row.honorific,
            "company": row.company,
            "assigned_staff": (
                {
                    "id": row.staff_id,
                    "name": row.staff_name,
                    "furigana": row.staff_furigana,
                    "extension": row.staff_extension,
                }
                if row.staff_id is not None
                else None
            ),
        }
        for row in rows
    }


def _day(value: dt.date | str | None) -> dt.date | None:
    # An aggregate (max) on SQLite comes back as the stored text.
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value[:10])
