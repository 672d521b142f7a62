"""Customer records for the staff API: one customer with phones, transactions and notes.

Returns a plain dict of native values (dates as ``date``, times aware in Tokyo time) that
the web's response model validates; knows nothing of HTTP. Soft-deleted rows are left
out (they stay in the database, restorable).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Customer, CustomerPhone, Note, Staff, Transaction

TOKYO = ZoneInfo("Asia/Tokyo")


def customer_detail(session: Session, customer_id: int) -> dict[str, Any] | None:
    """The customer with every live phone, transaction and note (newest first), or None."""
    row = session.execute(
        select(Customer, Staff)
        .outerjoin(Staff, Staff.id == Customer.assigned_staff_id)
        .where(Customer.id == customer_id, Customer.deleted_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    customer, staff = row
    phones = session.scalars(
        select(CustomerPhone)
        .where(CustomerPhone.customer_id == customer_id, CustomerPhone.deleted_at.is_(None))
        .order_by(CustomerPhone.id)
    )
    transactions = session.scalars(
        select(Transaction)
        .where(Transaction.customer_id == customer_id, Transaction.deleted_at.is_(None))
        .order_by(Transaction.date.desc(), Transaction.id.desc())
    )
    notes = session.execute(
        select(Note, Staff.name)
        .outerjoin(Staff, Staff.id == Note.staff_id)
        .where(Note.customer_id == customer_id, Note.deleted_at.is_(None))
        .order_by(Note.created_at.desc(), Note.id.desc())
    )
    return {
        "id": customer.id,
        "name": customer.name,
        "furigana": customer.furigana,
        "company": customer.company,
        "rank": customer.rank,
        "tags": list(customer.tags or []),
        "preferences": customer.preferences,
        "memo": customer.memo,
        "birthday": customer.birthday,
        "assigned_staff": (
            {
                "id": staff.id,
                "name": staff.name,
                "furigana": staff.furigana,
                "extension": staff.extension,
            }
            if staff is not None
            else None
        ),
        "phones": [
            {
                "id": phone.id,
                "number": phone.e164,
                "raw": phone.raw,
                "label": phone.label,
                "owner_name": phone.owner_name,
            }
            for phone in phones
        ],
        "transactions": [
            {
                "id": t.id,
                "date": t.date,
                "title": t.title,
                "amount": t.amount_yen,
                "memo": t.memo,
            }
            for t in transactions
        ],
        "notes": [
            {
                "id": note.id,
                "at": note.created_at.astimezone(TOKYO),
                "staff_name": staff_name,
                "body": note.body,
                "call_id": note.call_id,
            }
            for note, staff_name in notes
        ],
    }
