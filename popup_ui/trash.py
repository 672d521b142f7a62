"""The admin's side of customer records under ``/api/admin/``: the audit trail, the
deleted records (ゴミ箱), restoring one, and purging one for good.

Admin only (``access_router("admin")``). Each route runs a ``db.audit``/``db.records``
function in a worker thread, the logged-in admin being the writer of the audit entry;
``RecordRefused`` becomes 404 / 409 / 422 with its Japanese message. A purge must be
confirmed by sending the record's id again: it cannot be undone. Knows nothing of SIP.
"""

from __future__ import annotations

import logging
from typing import Literal
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Path, Query, Request, Response, status
from sqlalchemy.orm import Session

from db import records
from db.audit import AUDIT_PAGE_MAX, audit_page
from popup_ui.auth import CurrentAdmin, access_router
from popup_ui.context import in_session
from popup_ui.schemas import AuditPage, DeletedList, PurgeIn, RestoredOut, StaffOut

log = logging.getLogger(__name__)

TOKYO = ZoneInfo("Asia/Tokyo")
MAX_ID = 2**31 - 1  # INTEGER ids (see popup_ui.api)
EntityParam = Literal["customer", "phone", "family", "transaction", "note"]

router = access_router(
    "admin",
    prefix="/api/admin",
    tags=["admin"],
    responses={
        401: {"description": "no valid session"},
        403: {"description": "the logged-in person is not an admin"},
    },
)


@router.get("/audit")
async def audit(
    request: Request,
    customer_id: int | None = Query(default=None, ge=1, le=MAX_ID),
    before: int | None = Query(default=None, ge=1, le=MAX_ID, description="the previous next"),
    limit: int = Query(default=50, ge=1, le=AUDIT_PAGE_MAX),
) -> AuditPage:
    """Every change to customer records, newest first (one customer's with customer_id)."""

    def work(session: Session) -> AuditPage:
        entries, after = audit_page(session, customer_id=customer_id, before=before, limit=limit)
        return AuditPage.model_validate(
            {
                "entries": [
                    {
                        **{k: v for k, v in entry.items() if k != "staff_id"},
                        "at": entry["at"].astimezone(TOKYO),
                    }
                    for entry in entries
                ],
                "next": after,
            }
        )

    return await in_session(request, work)


@router.get("/deleted")
async def deleted(request: Request, entity: EntityParam) -> DeletedList:
    """The deleted records of one kind, most recently deleted first, with who deleted them."""

    def work(session: Session) -> DeletedList:
        items, truncated = records.deleted_records(session, entity)
        return DeletedList.model_validate(
            {
                "items": [
                    {**item, "deleted_at": item["deleted_at"].astimezone(TOKYO)} for item in items
                ],
                "truncated": truncated,
            }
        )

    return await in_session(request, work)


@router.post(
    "/restore/{entity}/{record_id}",
    responses={
        404: {"description": "no such deleted record"},
        409: {"description": "its customer is deleted: restore the customer first"},
    },
)
async def restore(
    request: Request,
    entity: EntityParam,
    record_id: int = Path(ge=1, le=MAX_ID),
    admin: StaffOut = CurrentAdmin,
) -> RestoredOut:
    """Bring a deleted record back exactly as it was."""
    customer_id = await in_session(
        request, lambda session: records.restore(session, entity, record_id, staff_id=admin.id)
    )
    log.info("admin %s restored %s %d", admin.login, entity, record_id)
    return RestoredOut(entity=entity, id=record_id, customer_id=customer_id)


@router.post(
    "/purge/{entity}/{record_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        404: {"description": "no such record"},
        409: {"description": "not deleted: only deleted records can be purged"},
        422: {"description": "confirm is not the record's id"},
    },
)
async def purge(
    body: PurgeIn,
    request: Request,
    entity: EntityParam,
    record_id: int = Path(ge=1, le=MAX_ID),
    admin: StaffOut = CurrentAdmin,
) -> Response:
    """Remove a deleted record for good (a customer with everything it holds; its calls
    stay in the log). The audit trail keeps what it was."""
    if body.confirm.strip() != str(record_id):
        raise HTTPException(
            422,
            detail="確認のため、完全に削除するものの番号を入れてください",
        )
    await in_session(
        request, lambda session: records.purge(session, entity, record_id, staff_id=admin.id)
    )
    log.info("admin %s purged %s %d", admin.login, entity, record_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
