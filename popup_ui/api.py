"""The staff REST API under ``/api/`` (besides the session routes in ``auth``).

Each route translates HTTP into a call on a part the composition built (the hub's
board, the caller lookup, a ``db`` query) and back, with a typed response; every
one needs a session. Knows nothing of SIP.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from db.models import Staff
from db.staff import get_staff
from lookup.card import CallerCard
from popup_ui.auth import CurrentStaff, access_router
from popup_ui.context import CallNotFound, CallNotYours, CallTaken, get_web
from popup_ui.messages import BoardSnapshot, Call
from popup_ui.schemas import StaffList, StaffListEntry, StaffOut, UiOut

TOKYO = ZoneInfo("Asia/Tokyo")
# Row ids are INTEGER columns (db/migrations): 32-bit on PostgreSQL, where a larger
# value is an error in the database, not "no such row".
MAX_ID = 2**31 - 1
MAX_STAFF_LISTED = 500  # GET /api/staff: a picker, not an export (StaffList.truncated)

router = access_router(
    "staff",
    prefix="/api",
    tags=["staff"],
    responses={401: {"description": "no valid session"}},
)


@router.get("/me")
async def me(staff: StaffOut = CurrentStaff) -> StaffOut:
    """The logged-in staff member."""
    return staff


@router.get("/staff")
async def staff_list(request: Request) -> StaffList:
    """Active staff with extension and presence: whom a call can be handed to (転送メモ)."""
    services = get_web(request).services
    factory = services.session_factory

    def load() -> list[Staff]:
        with factory() as session:
            return list(
                session.scalars(
                    select(Staff)
                    .where(Staff.active.is_(True))
                    .order_by(Staff.extension.is_(None), Staff.extension, Staff.name, Staff.id)
                    .limit(MAX_STAFF_LISTED + 1)
                )
            )

    rows = await run_in_threadpool(load)
    # Presence is the board's, per extension (an in-memory dict, no database).
    presence = {one.extension: one.presence for one in (await services.hub.snapshot()).staff}
    return StaffList(
        staff=[
            StaffListEntry(
                id=row.id,
                name=row.name,
                furigana=row.furigana,
                extension=row.extension,
                presence=presence.get(row.extension, "unknown") if row.extension else "unknown",
            )
            for row in rows[:MAX_STAFF_LISTED]
        ],
        truncated=len(rows) > MAX_STAFF_LISTED,
    )


@router.get("/ui")
async def ui_settings(request: Request) -> UiOut:
    """The ``[ui]`` settings the browser applies: company name and default language."""
    config = get_web(request).config
    return UiOut(company_name=config.company_name, language=config.language)


@router.get("/calls/active")
async def active_calls(request: Request) -> BoardSnapshot:
    """The board now: every active call with its card, as the WebSocket's first message."""
    return await get_web(request).services.hub.snapshot()


@router.post(
    "/calls/{call_id}/claim",
    responses={
        404: {"description": "no such call, or too old to claim"},
        409: {"description": "someone else took the call"},
    },
)
async def claim_call(
    request: Request,
    call_id: str = Path(pattern=r"^[0-9a-f]{32}$", description="callpop's call id"),
    staff: StaffOut = CurrentStaff,
) -> Call:
    """応答しました: the logged-in person took this call; every browser sees who has it."""
    try:
        return await get_web(request).services.calls.claim(call_id, staff)
    except CallNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="通話が見つかりません") from None
    except CallTaken as taken:
        who = taken.by.name or taken.by.extension or "他の人"
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"{who}が応答済みです") from None


class HandoverIn(BaseModel):
    """転送メモ: who the call goes to, and the one line they see when it rings."""

    to_staff_id: int = Field(ge=1, le=2**31 - 1)
    note: str = Field(min_length=1, max_length=200)


@router.post(
    "/calls/{call_id}/handover",
    responses={
        404: {"description": "no such call or staff member"},
        409: {"description": "only the person who has the call can hand it over"},
    },
)
async def hand_over_call(
    request: Request,
    body: HandoverIn,
    call_id: str = Path(pattern=r"^[0-9a-f]{32}$", description="callpop's call id"),
    staff: StaffOut = CurrentStaff,
) -> Call:
    """転送メモ: before transferring on the phone, leave one line for the next person."""
    web = get_web(request)
    factory = web.services.session_factory

    def target() -> StaffOut | None:
        with factory() as session:
            found = get_staff(session, body.to_staff_id)
            if found is None or not found.active or not found.extension:
                return None
            return StaffOut.model_validate(found, from_attributes=True)

    to = await run_in_threadpool(target)
    if to is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="転送先が見つかりません")
    try:
        return await web.services.calls.hand_over(call_id, staff, to, body.note)
    except CallNotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="通話が見つかりません") from None
    except CallNotYours:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="この通話を受けた人だけが転送メモを残せます"
        ) from None


@router.get("/lookup")
async def lookup_number(
    request: Request,
    number: str = Query(min_length=1, max_length=64, description="a phone number as typed"),
) -> CallerCard:
    """The caller card for a number, as a pop would show it."""
    lookup = get_web(request).services.lookup
    found = await lookup.card_for(
        lookup.numbering.normalise(number), now=datetime.now(TOKYO), keep_late=False
    )
    return found.card
