"""Customer records under ``/api/``: reading one customer with its timeline, and every
write a staff member makes to it (the customer, phones, family, transactions; deleting
a note written by hand or after a call).

Each route runs a ``db.records``/``db.customers`` function in a worker thread with the
logged-in staff member as the writer of the audit entry, and answers with a typed body
(``popup_ui.schemas``). Numbers are normalised with the office's numbering plan, as the
lookup does. ``RecordRefused`` becomes 404 / 409 / 422 with its Japanese message.
Restoring and purging are the admin's (``popup_ui.trash``). Knows nothing of SIP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from fastapi import Path, Query, Request, Response, status
from sqlalchemy.orm import Session

from db import records
from db.audit import Entity
from db.customers import (
    TIMELINE_PAGE,
    TIMELINE_PAGE_MAX,
    BadCursor,
    customer_detail,
    is_live_customer,
    timeline_page,
    transaction_detail,
)
from db.records import RecordRefused
from lookup.numbers import Number
from popup_ui.auth import CurrentStaff, access_router
from popup_ui.context import get_web, in_session
from popup_ui.schemas import (
    CustomerIn,
    CustomerOut,
    CustomerPatchIn,
    FamilyIn,
    FamilyOut,
    FamilyPatchIn,
    PhoneIn,
    PhoneOut,
    PhonePatchIn,
    StaffOut,
    TimelineOut,
    TransactionIn,
    TransactionOut,
    TransactionPatchIn,
)

MAX_ID = 2**31 - 1  # INTEGER ids (see popup_ui.api)
T = TypeVar("T")

router = access_router(
    "staff",
    prefix="/api",
    tags=["customers"],
    responses={401: {"description": "no valid session"}},
)

_NOT_FOUND = "顧客が見つかりません"


def _ids(description: str) -> Any:
    # An id beyond the column's range is no record of ours: refused here (422), not
    # left to overflow in the driver (a 500) or the database (a 503).
    return Path(ge=1, le=MAX_ID, description=description)


class Numbering(Protocol):
    """The office's numbering plan, as the lookup holds it (``lookup.numbers.Numbering``)."""

    def normalise(self, raw: str | None) -> Number: ...


def _numbering(request: Request) -> Numbering:
    return get_web(request).services.lookup.numbering


def national_of(numbering: Numbering) -> Callable[[str], str | None]:
    def national(e164: str) -> str | None:
        return numbering.normalise(e164).national

    return national


def detail_out(session: Session, customer_id: int, numbering: Numbering) -> CustomerOut:
    found = customer_detail(session, customer_id, national=national_of(numbering))
    if found is None:
        raise RecordRefused("not_found", _NOT_FOUND)
    return CustomerOut.model_validate(found)


def _phone_out(session: Session, customer_id: int, phone_id: int, numbering: Numbering) -> PhoneOut:
    detail = detail_out(session, customer_id, numbering)
    return next(phone for phone in detail.phones if phone.id == phone_id)


@router.get("/customers/{customer_id}", responses={404: {"description": "no such customer"}})
async def customer(request: Request, customer_id: int = _ids("a customer id")) -> CustomerOut:
    """One customer with everything on file and the first page of its timeline."""
    numbering = _numbering(request)
    return await in_session(request, lambda session: detail_out(session, customer_id, numbering))


@router.get(
    "/customers/{customer_id}/timeline",
    responses={404: {"description": "no such customer"}, 422: {"description": "bad cursor"}},
)
async def timeline(
    request: Request,
    customer_id: int = _ids("a customer id"),
    before: str | None = Query(
        default=None, max_length=64, description="the ``next`` of the previous page"
    ),
    limit: int = Query(default=TIMELINE_PAGE, ge=1, le=TIMELINE_PAGE_MAX),
) -> TimelineOut:
    """Calls, notes and transactions, newest first, a page at a time."""

    def work(session: Session) -> TimelineOut:
        if not is_live_customer(session, customer_id):
            raise RecordRefused("not_found", _NOT_FOUND)
        try:
            items, after = timeline_page(session, customer_id, before=before, limit=limit)
        except BadCursor:
            raise RecordRefused("invalid", "ページの指定が正しくありません") from None
        return TimelineOut.model_validate({"items": items, "next": after})

    return await in_session(request, work)


@router.post(
    "/customers",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "code in use"}, 422: {"description": "a bad number"}},
)
async def create_customer(
    body: CustomerIn, request: Request, staff: StaffOut = CurrentStaff
) -> CustomerOut:
    """A new customer with its phones; every write is in the audit log."""
    numbering = _numbering(request)
    values = body.model_dump(exclude={"phones"}, exclude_unset=True)
    phones = [phone.model_dump() for phone in body.phones]

    def work(session: Session) -> CustomerOut:
        new_id = records.create_customer(
            session, values, phones, staff_id=staff.id, normalise=numbering.normalise
        )
        return detail_out(session, new_id, numbering)

    return await in_session(request, work)


@router.patch(
    "/customers/{customer_id}",
    responses={404: {"description": "no such customer"}, 409: {"description": "code in use"}},
)
async def update_customer(
    body: CustomerPatchIn,
    request: Request,
    customer_id: int = _ids("a customer id"),
    staff: StaffOut = CurrentStaff,
) -> CustomerOut:
    """Change the fields sent (null clears one); unchanged values write nothing."""
    numbering = _numbering(request)
    changes = body.model_dump(exclude_unset=True)

    def work(session: Session) -> CustomerOut:
        records.update_customer(session, customer_id, changes, staff_id=staff.id)
        return detail_out(session, customer_id, numbering)

    return await in_session(request, work)


async def _soft_delete(
    request: Request, entity: Entity, record_id: int, staff: StaffOut
) -> Response:
    await in_session(
        request,
        lambda session: records.soft_delete(session, entity, record_id, staff_id=staff.id),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/customers/{customer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such customer"}},
)
async def delete_customer(
    request: Request, customer_id: int = _ids("a customer id"), staff: StaffOut = CurrentStaff
) -> Response:
    """Soft delete: the customer leaves the lists, the search and the pop; an admin can
    restore it."""
    return await _soft_delete(request, "customer", customer_id, staff)


# --- phones --------------------------------------------------------------------------


@router.post(
    "/customers/{customer_id}/phones",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"description": "no such customer"}, 422: {"description": "a bad number"}},
)
async def add_phone(
    body: PhoneIn,
    request: Request,
    customer_id: int = _ids("a customer id"),
    staff: StaffOut = CurrentStaff,
) -> PhoneOut:
    numbering = _numbering(request)

    def work(session: Session) -> PhoneOut:
        phone_id = records.add_phone(
            session,
            customer_id,
            body.model_dump(),
            staff_id=staff.id,
            normalise=numbering.normalise,
        )
        return _phone_out(session, customer_id, phone_id, numbering)

    return await in_session(request, work)


@router.patch(
    "/phones/{phone_id}",
    responses={404: {"description": "no such phone"}, 422: {"description": "a bad number"}},
)
async def update_phone(
    body: PhonePatchIn,
    request: Request,
    phone_id: int = _ids("a phone id"),
    staff: StaffOut = CurrentStaff,
) -> PhoneOut:
    numbering = _numbering(request)

    def work(session: Session) -> PhoneOut:
        customer_id, _ = records.update_phone(
            session,
            phone_id,
            body.model_dump(exclude_unset=True),
            staff_id=staff.id,
            normalise=numbering.normalise,
        )
        return _phone_out(session, customer_id, phone_id, numbering)

    return await in_session(request, work)


@router.delete(
    "/phones/{phone_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such phone"}},
)
async def delete_phone(
    request: Request, phone_id: int = _ids("a phone id"), staff: StaffOut = CurrentStaff
) -> Response:
    return await _soft_delete(request, "phone", phone_id, staff)


# --- family --------------------------------------------------------------------------


def _family_out(session: Session, customer_id: int, family_id: int) -> FamilyOut:
    found = customer_detail(session, customer_id, timeline_limit=1)
    assert found is not None
    return FamilyOut.model_validate(next(m for m in found["family"] if m["id"] == family_id))


@router.post(
    "/customers/{customer_id}/family",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"description": "no such customer"}},
)
async def add_family(
    body: FamilyIn,
    request: Request,
    customer_id: int = _ids("a customer id"),
    staff: StaffOut = CurrentStaff,
) -> FamilyOut:
    def work(session: Session) -> FamilyOut:
        family_id = records.add_family(
            session, customer_id, body.model_dump(exclude_unset=True), staff_id=staff.id
        )
        return _family_out(session, customer_id, family_id)

    return await in_session(request, work)


@router.patch("/family/{family_id}", responses={404: {"description": "no such family member"}})
async def update_family(
    body: FamilyPatchIn,
    request: Request,
    family_id: int = _ids("a family member's id"),
    staff: StaffOut = CurrentStaff,
) -> FamilyOut:
    def work(session: Session) -> FamilyOut:
        customer_id, _ = records.update_family(
            session, family_id, body.model_dump(exclude_unset=True), staff_id=staff.id
        )
        return _family_out(session, customer_id, family_id)

    return await in_session(request, work)


@router.delete(
    "/family/{family_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such family member"}},
)
async def delete_family(
    request: Request, family_id: int = _ids("a family member's id"), staff: StaffOut = CurrentStaff
) -> Response:
    return await _soft_delete(request, "family", family_id, staff)


# --- transactions --------------------------------------------------------------------


def _transaction_out(session: Session, transaction_id: int) -> TransactionOut:
    found = transaction_detail(session, transaction_id)
    if found is None:
        raise RecordRefused("not_found", "取引が見つかりません")
    return TransactionOut.model_validate(found)


@router.post(
    "/customers/{customer_id}/transactions",
    status_code=status.HTTP_201_CREATED,
    responses={404: {"description": "no such customer"}, 422: {"description": "unknown staff"}},
)
async def add_transaction(
    body: TransactionIn,
    request: Request,
    customer_id: int = _ids("a customer id"),
    staff: StaffOut = CurrentStaff,
) -> TransactionOut:
    def work(session: Session) -> TransactionOut:
        transaction_id = records.add_transaction(
            session, customer_id, body.model_dump(exclude_unset=True), staff_id=staff.id
        )
        return _transaction_out(session, transaction_id)

    return await in_session(request, work)


@router.patch(
    "/transactions/{transaction_id}", responses={404: {"description": "no such transaction"}}
)
async def update_transaction(
    body: TransactionPatchIn,
    request: Request,
    transaction_id: int = _ids("a transaction id"),
    staff: StaffOut = CurrentStaff,
) -> TransactionOut:
    def work(session: Session) -> TransactionOut:
        records.update_transaction(
            session, transaction_id, body.model_dump(exclude_unset=True), staff_id=staff.id
        )
        return _transaction_out(session, transaction_id)

    return await in_session(request, work)


@router.delete(
    "/transactions/{transaction_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such transaction"}},
)
async def delete_transaction(
    request: Request, transaction_id: int = _ids("a transaction id"), staff: StaffOut = CurrentStaff
) -> Response:
    return await _soft_delete(request, "transaction", transaction_id, staff)


@router.delete(
    "/notes/{note_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such note"}},
)
async def delete_note(
    request: Request, note_id: int = _ids("a note id"), staff: StaffOut = CurrentStaff
) -> Response:
    """Soft delete: the note leaves the record and the pop; an admin can restore it."""
    return await _soft_delete(request, "note", note_id, staff)
