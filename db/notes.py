"""Notes (対応履歴): writing one once however often the browser retries, correcting one
without losing what it said, and reading one back with its earlier texts.

A note always belongs to a customer: given, the call's customer, or a customer created
here from the call's caller number. Each note written or corrected (and a customer
created with one) adds its entry to the audit trail (``db.audit``) in the same
transaction. Returns plain dicts of native values; raises
:class:`NoteRefused` for what the caller asked wrongly. Knows nothing of HTTP or of how
numbers are normalised (the call row holds the caller's E.164).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.audit import plain_row, record, snapshot
from db.models import Call, Customer, CustomerPhone, Note, NoteRevision, Staff, utcnow
from db.refused import Refused

_note_table = cast(Table, Note.__table__)
_notes = _note_table.c
_revision_table = cast(Table, NoteRevision.__table__)
_CORRECTION_ATTEMPTS = 5

NoteKind = Literal["call", "visit", "email", "other"]

# The label of the phone a note from an unknown caller files the caller's number under.
NEW_CUSTOMER_PHONE_LABEL = "電話"


class NoteRefused(Refused):
    """The note cannot be written as asked: ``reason`` is ``not_found``, ``no_customer``,
    or ``busy`` (corrected by others again and again while this one tried)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewCustomer:
    name: str
    furigana: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteDraft:
    """What a browser sends to save a note."""

    idempotency_key: str
    staff_id: int
    body: str
    call_id: str | None = None
    customer_id: int | None = None
    tags: Sequence[str] = ()
    follow_up_on: dt.date | None = None
    new_customer: NewCustomer | None = None
    # call: after a call (or about one); visit / email / other: written by hand.
    kind: NoteKind = "call"


def save_note(session: Session, draft: NoteDraft) -> tuple[dict[str, Any], bool]:
    """Write the note once per idempotency key and commit; ``(note, created)``.

    The same key again returns the note written the first time (``created`` False),
    whatever the rest of the draft says: it is the browser retrying. Two saves with the
    same key at once both end with that one note: the unique index refuses the second
    insert, which then finds the first.
    """
    found = note_by_key(session, draft.idempotency_key)
    if found is not None:
        return found, False
    call = None
    if draft.call_id is not None:
        call = session.get(Call, draft.call_id)
        if call is None:
            raise NoteRefused("not_found", "通話が見つかりません")
    customer_id = draft.customer_id
    if customer_id is not None:
        live = session.scalar(
            select(Customer.id).where(Customer.id == customer_id, Customer.deleted_at.is_(None))
        )
        if live is None:
            raise NoteRefused("not_found", "顧客が見つかりません")
    elif draft.new_customer is not None:
        customer_id = _create_customer(session, draft.new_customer, call, draft.staff_id)
    elif call is not None and call.customer_id is not None:
        customer_id = call.customer_id
    if customer_id is None:
        raise NoteRefused("no_customer", "顧客を選ぶか、新しい顧客の名前を入れてください")
    now = utcnow()
    note = Note(
        customer_id=customer_id,
        staff_id=draft.staff_id,
        body=draft.body,
        call_id=draft.call_id,
        idempotency_key=draft.idempotency_key,
        tags=list(draft.tags),
        follow_up_on=draft.follow_up_on,
        kind=draft.kind,
        created_at=now,
        updated_at=now,
    )
    session.add(note)
    try:
        session.flush()  # the id for the audit entry; a duplicate key is refused here
        record(
            session,
            staff_id=draft.staff_id,
            action="create",
            entity="note",
            entity_id=note.id,
            customer_id=customer_id,
            before=None,
            after=snapshot(note),
        )
        session.commit()
    except IntegrityError:
        session.rollback()  # the customer created above goes too: the first save made one
        found = note_by_key(session, draft.idempotency_key)
        if found is None:
            raise  # another constraint: a real error
        return found, False
    created = note_detail(session, note.id)
    assert created is not None
    return created, True


def _create_customer(session: Session, new: NewCustomer, call: Call | None, staff_id: int) -> int:
    customer = Customer(name=new.name, furigana=new.furigana, tags=[])
    session.add(customer)
    session.flush()
    _audit_created(session, "customer", customer, customer.id, staff_id)
    if call is not None and call.caller_e164 is not None and not call.withheld:
        phone = CustomerPhone(
            customer_id=customer.id,
            e164=call.caller_e164,
            raw=(call.caller_raw or "")[:64] or None,
            label=NEW_CUSTOMER_PHONE_LABEL,
        )
        session.add(phone)
        session.flush()
        _audit_created(session, "phone", phone, customer.id, staff_id)
    if call is not None and call.customer_id is None:
        call.customer_id = customer.id  # the call log now says whose call it was
    return customer.id


def _audit_created(
    session: Session,
    entity: Literal["customer", "phone"],
    row: Any,
    customer_id: int,
    staff_id: int,
) -> None:
    record(
        session,
        staff_id=staff_id,
        action="create",
        entity=entity,
        entity_id=row.id,
        customer_id=customer_id,
        before=None,
        after=snapshot(row),
    )


def correct_note(session: Session, note_id: int, *, body: str, staff_id: int) -> dict[str, Any]:
    """Replace a note's text, keeping the earlier one as a revision, and commit.

    The same text again changes nothing. Two corrections at once both keep their
    earlier text: the text is replaced only if it is still the one read (SQLite has no
    ``SELECT … FOR UPDATE``), else it is read again. Raises :class:`NoteRefused` for a
    note that does not exist or was deleted.
    """
    for _ in range(_CORRECTION_ATTEMPTS):
        row = (
            session.execute(
                select(_note_table).where(_notes.id == note_id, _notes.deleted_at.is_(None))
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise NoteRefused("not_found", "メモが見つかりません")
        current = row["body"]
        if current == body:
            break
        now = utcnow()
        replaced = session.execute(
            update(_note_table)
            .where(_notes.id == note_id, _notes.body == current)
            .values(body=body, updated_at=now)
        )
        if getattr(replaced, "rowcount", 0) == 1:
            session.execute(
                insert(_revision_table).values(
                    note_id=note_id, body=current, staff_id=staff_id, changed_at=now
                )
            )
            before = plain_row(row)
            record(
                session,
                staff_id=staff_id,
                action="update",
                entity="note",
                entity_id=note_id,
                customer_id=row["customer_id"],
                before=before,
                after={**before, "body": body},
            )
            session.commit()
            break
        session.rollback()  # changed meanwhile: read it again
    else:
        raise NoteRefused("busy", "メモが同時に編集されています。もう一度お試しください")
    session.expire_all()
    found = note_detail(session, note_id)
    assert found is not None
    return found


def note_by_key(session: Session, key: str) -> dict[str, Any] | None:
    note_id = session.scalar(select(Note.id).where(Note.idempotency_key == key))
    return None if note_id is None else note_detail(session, note_id)


def note_detail(session: Session, note_id: int) -> dict[str, Any] | None:
    """The note with its writer's name and its earlier texts (oldest first), or None."""
    found = notes_detail(session, [note_id])
    return found[0] if found else None


def notes_detail(session: Session, note_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The live ones of ``note_ids`` as :func:`note_detail` gives them, in id order:
    two queries whatever their number (a page of the call log)."""
    if not note_ids:
        return []
    rows = session.execute(
        select(Note, Staff.name)
        .outerjoin(Staff, Staff.id == Note.staff_id)
        .where(Note.id.in_(set(note_ids)), Note.deleted_at.is_(None))
        .order_by(Note.id)
    ).all()
    earlier: dict[int, list[dict[str, Any]]] = {}
    for revision, name in session.execute(
        select(NoteRevision, Staff.name)
        .outerjoin(Staff, Staff.id == NoteRevision.staff_id)
        .where(NoteRevision.note_id.in_([note.id for note, _ in rows]))
        .order_by(NoteRevision.changed_at, NoteRevision.id)
    ):
        earlier.setdefault(revision.note_id, []).append(
            {"body": revision.body, "staff_name": name, "at": revision.changed_at}
        )
    return [
        {
            "id": note.id,
            "at": note.created_at,
            "staff_name": staff_name,
            "body": note.body,
            "call_id": note.call_id,
            "customer_id": note.customer_id,
            "tags": list(note.tags or []),
            "follow_up_on": note.follow_up_on,
            "kind": note.kind,
            "revisions": earlier.get(note.id, []),
        }
        for note, staff_name in rows
    ]
