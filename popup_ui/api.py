"""The staff REST API under ``/api/`` (besides the session routes in ``auth``).

Each route translates HTTP into a call on a part the app factory built (the call
service, the caller lookup, a ``db`` query) and back; every one needs a session.
Knows nothing of SIP.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from starlette.concurrency import run_in_threadpool

from db.customers import customer_detail
from popup_ui.auth import CurrentStaff, StaffInfo, get_services
from popup_ui.calls import TOKYO

router = APIRouter(
    prefix="/api",
    tags=["staff"],
    dependencies=[CurrentStaff],
    responses={401: {"description": "no valid session"}},
)


@router.get("/me")
async def me(staff: StaffInfo = CurrentStaff) -> dict[str, Any]:
    """The logged-in staff member."""
    return staff.to_json()


@router.get("/ui")
async def ui_settings(request: Request) -> dict[str, Any]:
    """The ``[ui]`` settings the browser applies: company name and default language."""
    ui = get_services(request).settings.ui
    return {"company_name": ui.company_name, "language": ui.language}


@router.get("/calls/active")
async def active_calls(request: Request) -> dict[str, Any]:
    """Calls still ringing, as their ``call.ringing`` WebSocket messages (with card)."""
    return {"calls": get_services(request).calls.active_messages()}


@router.get("/lookup")
async def lookup_number(
    request: Request,
    number: str = Query(min_length=1, max_length=64, description="a phone number as typed"),
) -> dict[str, Any]:
    """The caller card for a number, as a pop would show it."""
    card = await get_services(request).lookup.card_for(
        number, withheld=None, now=datetime.now(TOKYO)
    )
    return card.to_json()


@router.get("/customers/{customer_id}", responses={404: {"description": "no such customer"}})
async def customer(request: Request, customer_id: int) -> dict[str, Any]:
    """One customer with phones, transactions and notes."""
    factory = get_services(request).session_factory

    def load() -> dict[str, Any] | None:
        with factory() as session:
            return customer_detail(session, customer_id)

    detail = await run_in_threadpool(load)
    if detail is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="顧客が見つかりません")
    return detail
