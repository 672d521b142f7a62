"""Follow-ups under ``/api/followups``: 今日のフォロー, ticking one off, 休眠のお客様.

Each route runs a ``db.followups`` function in a worker thread and returns the typed
response below; "today" is the office's date (Asia/Tokyo) at the time of the request,
and the dormant rules are the ``[followups]`` settings (``WebConfig.followups``).
Knows HTTP; the queries are db.followups'.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal, TypeVar
from zoneinfo import ZoneInfo

from fastapi import Path, Query, Request
from pydantic import BaseModel, ConfigDict

from db import followups
from db.followups import LIST_MAX
from lookup.card import StaffRef
from popup_ui.auth import CurrentStaff, access_router
from popup_ui.context import get_web, in_session
from popup_ui.schemas import StaffOut

TOKYO = ZoneInfo("Asia/Tokyo")
MAX_ID = 2**31 - 1  # INTEGER ids (see popup_ui.api)
T = TypeVar("T")

router = access_router(
    "staff",
    prefix="/api/followups",
    tags=["followups"],
    responses={401: {"description": "no valid session"}},
)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FollowupCustomer(_Out):
    id: int
    name: str
    furigana: str | None
    honorific: str | None
    company: str | None
    assigned_staff: StaffRef | None


class FollowupItem(_Out):
    kind: Literal["note", "customer"]
    note_id: int | None
    customer: FollowupCustomer
    due: date
    overdue: bool
    body: str | None


class FollowupList(_Out):
    date: date
    items: list[FollowupItem]
    truncated: bool


class DormantItem(_Out):
    customer: FollowupCustomer
    rank: str | None
    last_contact_on: date | None
    days: int
    threshold_days: int


class DormantList(_Out):
    date: date
    items: list[DormantItem]
    truncated: bool


class Done(_Out):
    ok: bool = True


def _today() -> date:
    return datetime.now(TOKYO).date()


@router.get("/today")
async def followups_today(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX)] = 100,
) -> FollowupList:
    """Open follow-ups due today or before (overdue marked), the oldest first."""
    today = _today()
    page = await in_session(request, lambda session: followups.today(session, today, limit=limit))
    return FollowupList.model_validate(
        {"date": today, "items": page.items, "truncated": page.truncated}
    )


@router.post("/notes/{note_id}/done", responses={404: {"description": "no such follow-up"}})
async def note_done(
    request: Request,
    note_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    staff: StaffOut = CurrentStaff,
) -> Done:
    """Tick off a note's follow-up (done again: still 200)."""
    await in_session(
        request, lambda session: followups.mark_note_done(session, note_id, staff_id=staff.id)
    )
    return Done()


@router.post("/customers/{customer_id}/done", responses={404: {"description": "no such customer"}})
async def customer_done(
    request: Request,
    customer_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    staff: StaffOut = CurrentStaff,
) -> Done:
    """Tick off the customer's own follow-up (clears 次回フォロー日)."""
    await in_session(
        request,
        lambda session: followups.mark_customer_done(session, customer_id, staff_id=staff.id),
    )
    return Done()


@router.get("/dormant")
async def followups_dormant(
    request: Request,
    rank: Annotated[str | None, Query(max_length=16, description="empty: every rank")] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX)] = 100,
) -> DormantList:
    """Customers without contact for their rank's dormant days, the longest first."""
    rules = get_web(request).config.followups
    today = _today()
    page = await in_session(
        request,
        lambda session: followups.dormant(
            session,
            today,
            rules.dormant_days,
            rules.dormant_days_default,
            rank=rank or None,
            limit=limit,
        ),
    )
    return DormantList.model_validate(
        {"date": today, "items": page.items, "truncated": page.truncated}
    )
