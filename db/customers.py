"""Customer records for the staff API: one customer with everything on file, and its
timeline (calls, notes and transactions merged, newest first, a page at a time).

Returns plain dicts of native values (dates as ``date``, times aware in Tokyo time) that
the web's response models validate; knows nothing of HTTP. Soft-deleted rows are left
out (they stay in the database, restorable: ``db.records``). How a number reads
(``national``) is the caller's numbering plan's, passed in. The queries are fixed in
number whatever the customer holds: no query per phone, note or call.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from db.models import (
    Call,
    Customer,
    CustomerPhone,
    FamilyMember,
    Note,
    NoteRevision,
    Staff,
    Transaction,
)

TOKYO = ZoneInfo("Asia/Tokyo")
TIMELINE_PAGE = 50
TIMELINE_PAGE_MAX = 200

TimelineKind = Literal["call", "note", "transaction"]
# Among items at the same moment: calls first, then notes, then transactions.
_RANK: dict[TimelineKind, int] = {"call": 2, "note": 1, "transaction": 0}
_KIND_OF_RANK = {rank: kind for kind, rank in _RANK.items()}
_CURSOR = re.compile(r"^(-?\d{1,20})\.([012])\.([0-9A-Za-z]{1,32})$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
_MAX_ID = 2**31 - 1  # INTEGER ids


def _staff_ref(staff: Staff | None) -> dict[str, Any] | None:
    if staff is None:
        return None
    return {
        "id": staff.id,
        "name": staff.name,
        "furigana": staff.furigana,
        "extension": staff.extension,
    }


def _tokyo(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(TOKYO)


def customer_detail(
    session: Session,
    customer_id: int,
    *,
    national: Callable[[str], str | None] = lambda e164: e164,
    timeline_limit: int = TIMELINE_PAGE,
) -> dict[str, Any] | None:
    """The live customer with every live phone (and the other live customers on the same
    number), family member, transaction and note (newest first), and the first page of
    its timeline; or None."""
    row = session.execute(
        select(Customer, Staff)
        .outerjoin(Staff, Staff.id == Customer.assigned_staff_id)
        .where(Customer.id == customer_id, Customer.deleted_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    customer, staff = row
    phones = list(
        session.scalars(
            select(CustomerPhone)
            .where(CustomerPhone.customer_id == customer_id, CustomerPhone.deleted_at.is_(None))
            .order_by(CustomerPhone.id)
        )
    )
    shared = _shared_numbers(session, customer_id, {phone.e164 for phone in phones})
    family = session.scalars(
        select(FamilyMember)
        .where(FamilyMember.customer_id == customer_id, FamilyMember.deleted_at.is_(None))
        .order_by(FamilyMember.id)
    )
    transactions = session.execute(
        select(Transaction, Staff)
        .outerjoin(Staff, Staff.id == Transaction.staff_id)
        .where(Transaction.customer_id == customer_id, Transaction.deleted_at.is_(None))
        .order_by(Transaction.date.desc(), Transaction.id.desc())
    )
    notes = session.execute(
        select(Note, Staff.name)
        .outerjoin(Staff, Staff.id == Note.staff_id)
        .where(Note.customer_id == customer_id, Note.deleted_at.is_(None))
        .order_by(Note.created_at.desc(), Note.id.desc())
    )
    items, more = timeline_page(session, customer_id, limit=timeline_limit)
    return {
        "id": customer.id,
        "code": customer.code,
        "name": customer.name,
        "furigana": customer.furigana,
        "honorific": customer.honorific,
        "company": customer.company,
        "department": customer.department,
        "postal_code": customer.postal_code,
        "address": customer.address,
        "email": customer.email,
        "contact_hours": customer.contact_hours,
        "rank": customer.rank,
        "tags": list(customer.tags or []),
        "preferences": customer.preferences,
        "memo": customer.memo,
        "birthday": customer.birthday,
        "next_follow_up_on": customer.next_follow_up_on,
        "assigned_staff": _staff_ref(staff),
        "created_at": _tokyo(customer.created_at),
        "updated_at": _tokyo(customer.updated_at),
        "phones": [
            {
                "id": phone.id,
                "number": phone.e164,
                "national": national(phone.e164),
                "raw": phone.raw,
                "label": phone.label,
                "owner_name": phone.owner_name,
                "shared_with": shared.get(phone.e164, []),
            }
            for phone in phones
        ],
        "family": [
            {
                "id": member.id,
                "name": member.name,
                "furigana": member.furigana,
                "relation": member.relation,
                "birthday": member.birthday,
            }
            for member in family
        ],
        "transactions": [transaction_out(t, by) for t, by in transactions],
        "notes": [
            {
                "id": note.id,
                "at": _tokyo(note.created_at),
                "staff_name": staff_name,
                "body": note.body,
                "call_id": note.call_id,
                "kind": note.kind,
                "follow_up_on": note.follow_up_on,
                "follow_up_done_at": _tokyo(note.follow_up_done_at),
            }
            for note, staff_name in notes
        ],
        "timeline": items,
        "timeline_more": more is not None,
    }


def is_live_customer(session: Session, customer_id: int) -> bool:
    found = session.scalar(
        select(Customer.id).where(Customer.id == customer_id, Customer.deleted_at.is_(None))
    )
    return found is not None


def transaction_out(transaction: Transaction, staff: Staff | None) -> dict[str, Any]:
    return {
        "id": transaction.id,
        "date": transaction.date,
        "title": transaction.title,
        "amount": transaction.amount_yen,
        "staff": _staff_ref(staff),
        "detail": transaction.memo,
    }


def transaction_detail(session: Session, transaction_id: int) -> dict[str, Any] | None:
    """One live transaction as the customer's record lists it, or None."""
    row = session.execute(
        select(Transaction, Staff)
        .outerjoin(Staff, Staff.id == Transaction.staff_id)
        .where(Transaction.id == transaction_id, Transaction.deleted_at.is_(None))
    ).one_or_none()
    return None if row is None else transaction_out(*row)


def _shared_numbers(
    session: Session, customer_id: int, numbers: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """For each of ``numbers``, the other live customers with a live phone on it."""
    if not numbers:
        return {}
    shared: dict[str, list[dict[str, Any]]] = {}
    for e164, other_id, name in session.execute(
        select(CustomerPhone.e164, Customer.id, Customer.name)
        .join(Customer, Customer.id == CustomerPhone.customer_id)
        .where(
            CustomerPhone.e164.in_(numbers),
            CustomerPhone.deleted_at.is_(None),
            Customer.deleted_at.is_(None),
            Customer.id != customer_id,
        )
        .order_by(CustomerPhone.e164, Customer.id)
    ):
        others = shared.setdefault(e164, [])
        if all(one["id"] != other_id for one in others):
            others.append({"id": other_id, "name": name})
    return shared


# --- the timeline ---------------------------------------------------------------------


class BadCursor(ValueError):
    """A timeline cursor this module did not write."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a timeline page ended: the last item's moment, kind and id."""

    at: dt.datetime
    rank: int
    key: str

    def text(self) -> str:
        micros = (self.at - _EPOCH) // dt.timedelta(microseconds=1)
        return f"{micros}.{self.rank}.{self.key}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.fullmatch(text)
        if match is None:
            raise BadCursor(text)
        try:
            at = _EPOCH + dt.timedelta(microseconds=int(match[1]))
        except OverflowError:
            raise BadCursor(text) from None
        rank, key = int(match[2]), match[3]
        numeric = rank != _RANK["call"]
        # Beyond these no row of ours: refused here, not left to overflow in the database.
        if not _EARLIEST <= at <= _LATEST or (
            numeric and (not key.isdigit() or int(key) > _MAX_ID)
        ):
            raise BadCursor(text)
        return cls(at, rank, key)


def _midnight(day: dt.date) -> dt.datetime:
    """A transaction's moment on the timeline: the start of its day in Tokyo."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=TOKYO)


def _before(column: Any, id_column: Any, rank: int, cursor: Cursor | None, key: Any) -> Any:
    """Rows of one kind that come after ``cursor`` in newest-first order."""
    if cursor is None:
        return True
    if rank < cursor.rank:
        return column <= cursor.at
    if rank > cursor.rank:
        return column < cursor.at
    return or_(column < cursor.at, and_(column == cursor.at, id_column < key))


def _transactions_before(cursor: Cursor | None) -> Any:
    """Transactions after ``cursor``, on the date column: a transaction's moment is the
    midnight of its date, and it ranks last among items of the same moment."""
    if cursor is None:
        return True
    day = cursor.at.astimezone(TOKYO).date()
    if cursor.rank != _RANK["transaction"]:
        return Transaction.date <= day  # midnight(date) <= the cursor's moment
    return or_(
        Transaction.date < day, and_(Transaction.date == day, Transaction.id < int(cursor.key))
    )


def timeline_page(
    session: Session, customer_id: int, *, before: str | None = None, limit: int = TIMELINE_PAGE
) -> tuple[list[dict[str, Any]], str | None]:
    """The customer's calls, live notes and live transactions, newest first, ``limit``
    at most after the cursor ``before``; and the cursor of the next page (None at the
    end). A transaction stands at the start of its day (Tokyo). Raises
    :class:`BadCursor` for a cursor not written here. Five queries at most."""
    limit = max(1, min(limit, TIMELINE_PAGE_MAX))
    cursor = Cursor.parse(before) if before is not None else None
    answerer = aliased(Staff)
    calls = session.execute(
        select(Call, answerer.name)
        .outerjoin(answerer, answerer.id == Call.answered_staff_id)
        .where(
            Call.customer_id == customer_id,
            _before(Call.started_at, Call.id, _RANK["call"], cursor, cursor and cursor.key),
        )
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(limit + 1)
    ).all()
    note_key = int(cursor.key) if cursor is not None and cursor.key.isdigit() else 0
    notes = session.execute(
        select(Note, Staff.name)
        .outerjoin(Staff, Staff.id == Note.staff_id)
        .where(
            Note.customer_id == customer_id,
            Note.deleted_at.is_(None),
            _before(Note.created_at, Note.id, _RANK["note"], cursor, note_key),
        )
        .order_by(Note.created_at.desc(), Note.id.desc())
        .limit(limit + 1)
    ).all()
    transactions = session.execute(
        select(Transaction, Staff.name)
        .outerjoin(Staff, Staff.id == Transaction.staff_id)
        .where(
            Transaction.customer_id == customer_id,
            Transaction.deleted_at.is_(None),
            _transactions_before(cursor),
        )
        .order_by(Transaction.date.desc(), Transaction.id.desc())
        .limit(limit + 1)
    ).all()
    items: list[tuple[tuple[dt.datetime, int, Any], dict[str, Any]]] = []
    for call, answered_by_name in calls:
        items.append(
            (
                (call.started_at, _RANK["call"], call.id),
                {
                    "kind": "call",
                    "at": _tokyo(call.started_at),
                    "id": call.id,
                    "direction": "in",
                    "outcome": call.outcome,
                    "answered_by_name": answered_by_name or call.answered_by,
                    "talk_seconds": call.talk_seconds,
                    "note_ids": [],
                },
            )
        )
    for note, staff_name in notes:
        items.append(
            (
                (note.created_at, _RANK["note"], note.id),
                {
                    "kind": "note",
                    "at": _tokyo(note.created_at),
                    "id": note.id,
                    "note_kind": note.kind,
                    "body": note.body,
                    "staff_name": staff_name,
                    "follow_up_on": note.follow_up_on,
                    "corrected_at": None,
                },
            )
        )
    for transaction, staff_name in transactions:
        at = _midnight(transaction.date)
        items.append(
            (
                (at, _RANK["transaction"], transaction.id),
                {
                    "kind": "transaction",
                    "at": at,
                    "id": transaction.id,
                    "date": transaction.date,
                    "title": transaction.title,
                    "amount": transaction.amount_yen,
                    "staff_name": staff_name,
                    "detail": transaction.memo,
                },
            )
        )
    items.sort(key=lambda item: item[0], reverse=True)
    page = items[:limit]
    _fill_call_notes(session, [i for _, i in page if i["kind"] == "call"])
    _fill_corrections(session, [i for _, i in page if i["kind"] == "note"])
    next_cursor = None
    if len(items) > limit:
        at, rank, key = page[-1][0]
        next_cursor = Cursor(at, rank, str(key)).text()
    return [item for _, item in page], next_cursor


def _fill_call_notes(session: Session, calls: list[dict[str, Any]]) -> None:
    if not calls:
        return
    by_id = {call["id"]: call for call in calls}
    for call_id, note_id in session.execute(
        select(Note.call_id, Note.id)
        .where(Note.call_id.in_(list(by_id)), Note.deleted_at.is_(None))
        .order_by(Note.id)
    ):
        by_id[call_id]["note_ids"].append(note_id)


def _fill_corrections(session: Session, notes: list[dict[str, Any]]) -> None:
    """``corrected_at``: when each note's text last changed (its newest revision)."""
    if not notes:
        return
    by_id = {note["id"]: note for note in notes}
    for note_id, changed_at in session.execute(
        select(NoteRevision.note_id, func.max(NoteRevision.changed_at))
        .where(NoteRevision.note_id.in_(list(by_id)))
        .group_by(NoteRevision.note_id)
    ):
        by_id[note_id]["corrected_at"] = _tokyo(_aware(changed_at))


def _aware(value: Any) -> dt.datetime | None:
    """``max()`` bypasses the column type on SQLite: a naive UTC text or datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value  # type: ignore[no-any-return]
