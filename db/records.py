"""Every write a person makes to a customer's record: the customer, its phones, family,
transactions and notes; deleting one (soft), restoring it, purging it for good.

Each function does its change and its :mod:`db.audit` entry (the record before and
after) in one transaction and commits. Deleting only sets ``deleted_at``: the row
leaves the lists, the search and the pop (every reader filters it) and
:func:`restore` brings it back exactly. :func:`purge` removes a deleted record for
good (a customer with its phones, family, transactions and notes; its calls stay in
the log without it); the audit trail stays. Raises :class:`RecordRefused` for what
was asked wrongly, with a Japanese message for the UI.

Numbers are normalised by the caller's numbering plan (``normalise``, the office's
``lookup.numbers.Numbering.normalise``); this module knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db.audit import Action, Entity, record, snapshot
from db.customer_import import TEXT_FIELDS
from db.models import (
    AuditEntry,
    Call,
    Customer,
    CustomerPhone,
    FamilyMember,
    Note,
    NoteRevision,
    Staff,
    Transaction,
    utcnow,
)
from db.refused import Refused
from lookup.numbers import Number

Normalise = Callable[[str], Number]
Model = Customer | CustomerPhone | FamilyMember | Transaction | Note

MODELS: dict[Entity, type[Model]] = {
    "customer": Customer,
    "phone": CustomerPhone,
    "family": FamilyMember,
    "transaction": Transaction,
    "note": Note,
}
ENTITIES: tuple[Entity, ...] = tuple(MODELS)

# What a person may set on a customer (the API's names are the columns'): the text an
# import fills, and what only a person sets.
CUSTOMER_FIELDS = (
    *TEXT_FIELDS,
    "tags",
    "birthday",
    "next_follow_up_on",
    "assigned_staff_id",
)
PHONE_FIELDS = ("number", "label", "owner_name")
FAMILY_FIELDS = ("name", "furigana", "relation", "birthday")
# The API says amount/detail; the columns are amount_yen/memo.
TRANSACTION_FIELDS = {
    "date": "date",
    "title": "title",
    "amount": "amount_yen",
    "staff_id": "staff_id",
    "detail": "memo",
}
DELETED_LIST_MAX = 500

_NOT_FOUND = {
    "customer": "顧客が見つかりません",
    "phone": "電話番号が見つかりません",
    "family": "家族が見つかりません",
    "transaction": "取引が見つかりません",
    "note": "メモが見つかりません",
}


class RecordRefused(Refused):
    """The write cannot be done as asked: ``reason`` is ``not_found``, ``conflict`` (not
    deleted, a code in use, the customer is deleted) or ``invalid`` (a number that is no
    phone number, an unknown staff member)."""


# --- reading what a write works on ----------------------------------------------------


def _get(session: Session, entity: Entity, record_id: int, *, deleted: bool = False) -> Any:
    """The live row (``deleted``: the deleted row) or :class:`RecordRefused` not_found."""
    model: Any = MODELS[entity]
    row = session.get(model, record_id)
    if row is None or (row.deleted_at is not None) != deleted:
        raise RecordRefused("not_found", _NOT_FOUND[entity])
    return row


def _live_customer(session: Session, customer_id: int) -> Customer:
    found: Customer = _get(session, "customer", customer_id)
    return found


def _customer_id_of(row: Model) -> int:
    return row.id if isinstance(row, Customer) else row.customer_id


def _check_staff(session: Session, staff_id: int | None) -> None:
    if staff_id is not None and session.get(Staff, staff_id) is None:
        raise RecordRefused("invalid", "担当者が見つかりません")


def _check_code(session: Session, code: str | None, customer_id: int | None) -> None:
    if not code:
        return
    other = session.scalar(
        select(Customer).where(Customer.code == code, Customer.id != (customer_id or 0))
    )
    if other is not None:
        where = "削除済みの顧客" if other.deleted_at is not None else f"{other.name} 様"
        raise RecordRefused("conflict", f"顧客番号 {code} は{where}が使っています")


def phone_number(normalise: Normalise, raw: str) -> str:
    """The E.164 of a number typed for a customer, or :class:`RecordRefused` invalid."""
    found = normalise(raw)
    if found.kind == "extension":
        raise RecordRefused("invalid", f"「{raw}」は内線番号です。外線の電話番号を入れてください")
    if found.kind != "e164" or found.e164 is None:
        raise RecordRefused("invalid", f"「{raw}」は電話番号として読めません")
    return found.e164


def _apply(row: Any, values: Mapping[str, Any]) -> bool:
    changed = False
    for key, value in values.items():
        if key == "tags":
            value = list(value or [])
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def _write_update(
    session: Session, entity: Entity, row: Any, values: Mapping[str, Any], staff_id: int
) -> bool:
    """Apply ``values``; when anything changed, audit and commit. Returns whether it did."""
    before = snapshot(row)
    if not _apply(row, values):
        return False
    _audit(session, "update", entity, row, before, staff_id)
    session.commit()
    return True


def _write_create(session: Session, entity: Entity, row: Any, staff_id: int) -> None:
    session.add(row)
    _audit(session, "create", entity, row, None, staff_id)


def _audit(
    session: Session,
    action: Action,
    entity: Entity,
    row: Any,
    before: dict[str, Any] | None,
    staff_id: int,
) -> None:
    """Write the change out, then its audit entry: ``before``, and the row as it is now."""
    session.flush()
    record(
        session,
        staff_id=staff_id,
        action=action,
        entity=entity,
        entity_id=row.id,
        customer_id=_customer_id_of(row),
        before=before,
        after=snapshot(row),
    )


# --- customers --------------------------------------------------------------------------


def create_customer(
    session: Session,
    values: Mapping[str, Any],
    phones: Sequence[Mapping[str, Any]] = (),
    *,
    staff_id: int,
    normalise: Normalise,
) -> int:
    """A new customer (``values``: :data:`CUSTOMER_FIELDS`, name required) with its
    phones (``number``, ``label``, ``owner_name``); every number is checked before
    anything is written. Returns the new id."""
    fields = {key: values[key] for key in CUSTOMER_FIELDS if key in values}
    if not fields.get("name"):
        raise RecordRefused("invalid", "名前を入れてください")
    fields["tags"] = list(fields.get("tags") or [])
    numbers = [phone_number(normalise, str(phone["number"])) for phone in phones]
    _check_staff(session, fields.get("assigned_staff_id"))
    _check_code(session, fields.get("code"), None)
    customer = Customer(**fields)
    _write_create(session, "customer", customer, staff_id)
    for phone, e164 in zip(phones, numbers, strict=True):
        _write_create(session, "phone", _phone_row(customer.id, phone, e164), staff_id)
    session.commit()
    return customer.id


def update_customer(
    session: Session, customer_id: int, changes: Mapping[str, Any], *, staff_id: int
) -> bool:
    """Change the given fields (None clears one; the name cannot be cleared). Values equal
    to the stored ones are no change: nothing is written, not even an audit entry."""
    customer = _live_customer(session, customer_id)
    values = {key: changes[key] for key in CUSTOMER_FIELDS if key in changes}
    if "name" in values and not values["name"]:
        raise RecordRefused("invalid", "名前は空にできません")
    if "assigned_staff_id" in values and values["assigned_staff_id"] != customer.assigned_staff_id:
        _check_staff(session, values["assigned_staff_id"])
    if "code" in values and values["code"] != customer.code:
        _check_code(session, values["code"], customer_id)
    return _write_update(session, "customer", customer, values, staff_id)


# --- phones, family, transactions ------------------------------------------------------------


def _phone_row(customer_id: int, phone: Mapping[str, Any], e164: str) -> CustomerPhone:
    return CustomerPhone(
        customer_id=customer_id,
        e164=e164,
        raw=str(phone["number"])[:64],
        label=phone.get("label") or None,
        owner_name=phone.get("owner_name") or None,
    )


def add_phone(
    session: Session,
    customer_id: int,
    phone: Mapping[str, Any],
    *,
    staff_id: int,
    normalise: Normalise,
) -> int:
    _live_customer(session, customer_id)
    row = _phone_row(customer_id, phone, phone_number(normalise, str(phone["number"])))
    _write_create(session, "phone", row, staff_id)
    session.commit()
    return row.id


def update_phone(
    session: Session,
    phone_id: int,
    changes: Mapping[str, Any],
    *,
    staff_id: int,
    normalise: Normalise,
) -> tuple[int, bool]:
    """Change a phone's number, label or owner; returns ``(customer_id, changed)``."""
    row: CustomerPhone = _get(session, "phone", phone_id)
    _live_customer(session, row.customer_id)
    values: dict[str, Any] = {k: changes[k] for k in ("label", "owner_name") if k in changes}
    if changes.get("number") is not None:
        e164 = phone_number(normalise, str(changes["number"]))
        if e164 != row.e164:  # the same number spelled otherwise is no change
            values.update(e164=e164, raw=str(changes["number"])[:64])
    elif "number" in changes:
        raise RecordRefused("invalid", "電話番号は空にできません。削除してください")
    return row.customer_id, _write_update(session, "phone", row, values, staff_id)


def add_family(
    session: Session, customer_id: int, values: Mapping[str, Any], *, staff_id: int
) -> int:
    _live_customer(session, customer_id)
    fields = {key: values[key] for key in FAMILY_FIELDS if key in values}
    if not fields.get("name"):
        raise RecordRefused("invalid", "名前を入れてください")
    row = FamilyMember(customer_id=customer_id, **fields)
    _write_create(session, "family", row, staff_id)
    session.commit()
    return row.id


def update_family(
    session: Session, family_id: int, changes: Mapping[str, Any], *, staff_id: int
) -> tuple[int, bool]:
    row: FamilyMember = _get(session, "family", family_id)
    _live_customer(session, row.customer_id)
    values = {key: changes[key] for key in FAMILY_FIELDS if key in changes}
    if "name" in values and not values["name"]:
        raise RecordRefused("invalid", "名前は空にできません")
    return row.customer_id, _write_update(session, "family", row, values, staff_id)


def _transaction_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {column: changes[key] for key, column in TRANSACTION_FIELDS.items() if key in changes}


def add_transaction(
    session: Session, customer_id: int, values: Mapping[str, Any], *, staff_id: int
) -> int:
    """A transaction (``date``, ``title``, ``amount``, ``staff_id``, ``detail``)."""
    _live_customer(session, customer_id)
    fields = _transaction_values(values)
    if not fields.get("title") or fields.get("date") is None:
        raise RecordRefused("invalid", "日付と件名を入れてください")
    _check_staff(session, fields.get("staff_id"))
    row = Transaction(customer_id=customer_id, **fields)
    _write_create(session, "transaction", row, staff_id)
    session.commit()
    return row.id


def update_transaction(
    session: Session, transaction_id: int, changes: Mapping[str, Any], *, staff_id: int
) -> tuple[int, bool]:
    row: Transaction = _get(session, "transaction", transaction_id)
    _live_customer(session, row.customer_id)
    values = _transaction_values(changes)
    if ("title" in values and not values["title"]) or ("date" in values and not values["date"]):
        raise RecordRefused("invalid", "日付と件名は空にできません")
    if "staff_id" in values and values["staff_id"] != row.staff_id:
        _check_staff(session, values["staff_id"])
    return row.customer_id, _write_update(session, "transaction", row, values, staff_id)


# --- delete, restore, purge ------------------------------------------------------------------


def soft_delete(session: Session, entity: Entity, record_id: int, *, staff_id: int) -> int:
    """Set ``deleted_at``; returns the customer id. A record of a deleted customer is
    not found (the customer is deleted as a whole)."""
    row = _get(session, entity, record_id)
    if entity != "customer":
        _live_customer(session, row.customer_id)
    before = snapshot(row)
    row.deleted_at = utcnow()
    _audit(session, "delete", entity, row, before, staff_id)
    session.commit()
    return _customer_id_of(row)


def restore(session: Session, entity: Entity, record_id: int, *, staff_id: int) -> int:
    """Bring a deleted record back as it was; returns the customer id. A phone, family
    member, transaction or note of a deleted customer waits for the customer (409)."""
    row = _get(session, entity, record_id, deleted=True)
    if entity != "customer":
        parent = session.get(Customer, row.customer_id)
        if parent is not None and parent.deleted_at is not None:
            raise RecordRefused("conflict", "顧客が削除されています。先に顧客を元に戻してください")
    before = snapshot(row)
    row.deleted_at = None
    _audit(session, "restore", entity, row, before, staff_id)
    session.commit()
    return _customer_id_of(row)


def purge(session: Session, entity: Entity, record_id: int, *, staff_id: int) -> None:
    """Remove a deleted record for good (a live one: 409). A customer goes with its
    phones, family, transactions and notes (each audited); its calls stay in the call
    log without a customer. The audit trail stays."""
    model: Any = MODELS[entity]
    row = session.get(model, record_id)
    if row is None:
        raise RecordRefused("not_found", _NOT_FOUND[entity])
    if row.deleted_at is None:
        raise RecordRefused("conflict", "削除済みのものだけを完全に削除できます")
    customer_id = _customer_id_of(row)
    if isinstance(row, Customer):
        for child_entity in ("phone", "family", "transaction", "note"):
            child_model = cast(Any, MODELS[child_entity])
            for child in session.scalars(
                select(child_model)
                .where(child_model.customer_id == customer_id)
                .order_by(child_model.id)
            ):
                _audit_purge(session, child_entity, child, staff_id)
        note_ids = select(Note.id).where(Note.customer_id == customer_id)
        # Explicit, not left to ON DELETE: the same on every backend and connection.
        session.execute(
            update(Call).where(Call.customer_id == customer_id).values(customer_id=None)
        )
        session.execute(delete(NoteRevision).where(NoteRevision.note_id.in_(note_ids)))
        for child in (Note, Transaction, FamilyMember, CustomerPhone):
            session.execute(delete(child).where(child.customer_id == customer_id))
    elif isinstance(row, Note):
        session.execute(delete(NoteRevision).where(NoteRevision.note_id == row.id))
    _audit_purge(session, entity, row, staff_id)
    session.execute(delete(model).where(model.id == record_id))
    session.commit()
    session.expunge_all()


def _audit_purge(session: Session, entity: Entity, row: Any, staff_id: int) -> None:
    record(
        session,
        staff_id=staff_id,
        action="purge",
        entity=entity,
        entity_id=row.id,
        customer_id=_customer_id_of(row),
        before=snapshot(row),
        after=None,
    )


def _label(entity: Entity, row: Any) -> str:
    if entity == "customer":
        return f"{row.name}（{row.company}）" if row.company else str(row.name)
    if entity == "phone":
        return f"{row.e164} {row.label}" if row.label else str(row.e164)
    if entity == "family":
        return f"{row.name}（{row.relation}）" if row.relation else str(row.name)
    if entity == "transaction":
        return f"{row.date.isoformat()} {row.title}"
    body = str(row.body).replace("\n", " ")
    return body if len(body) <= 40 else body[:40] + "…"


def deleted_records(
    session: Session, entity: Entity, *, limit: int = DELETED_LIST_MAX
) -> tuple[list[dict[str, Any]], bool]:
    """The deleted records of one kind, most recently deleted first, with who deleted
    each (the latest delete in the audit log); and whether more were left out."""
    model = cast(Any, MODELS[entity])
    rows = list(
        session.scalars(
            select(model)
            .where(model.deleted_at.is_not(None))
            .order_by(model.deleted_at.desc(), model.id.desc())
            .limit(limit + 1)
        )
    )
    truncated = len(rows) > limit
    rows = rows[:limit]
    ids = [row.id for row in rows]
    who: dict[int, str | None] = {}
    for entity_id, name in session.execute(
        select(AuditEntry.entity_id, Staff.name)
        .outerjoin(Staff, Staff.id == AuditEntry.staff_id)
        .where(
            AuditEntry.entity == entity,
            AuditEntry.action == "delete",
            AuditEntry.entity_id.in_(ids),
        )
        .order_by(AuditEntry.id)
    ):
        who[entity_id] = name  # the latest delete wins
    customer_ids = {_customer_id_of(row) for row in rows}
    names = dict(
        session.execute(
            select(Customer.id, Customer.name).where(Customer.id.in_(customer_ids))
        ).all()
    )
    return [
        {
            "entity": entity,
            "id": row.id,
            "customer_id": _customer_id_of(row),
            "customer_name": names.get(_customer_id_of(row)),
            "label": _label(entity, row),
            "deleted_at": row.deleted_at,
            "deleted_by_name": who.get(row.id),
        }
        for row in rows
    ], truncated


__all__ = [
    "CUSTOMER_FIELDS",
    "DELETED_LIST_MAX",
    "ENTITIES",
    "MODELS",
    "Normalise",
    "RecordRefused",
    "add_family",
    "add_phone",
    "add_transaction",
    "create_customer",
    "deleted_records",
    "phone_number",
    "purge",
    "restore",
    "soft_delete",
    "update_customer",
    "update_family",
    "update_phone",
    "update_transaction",
]
