"""Notes and the call log under ``/api/``: writing a note after a call, correcting it,
the call history, and the missed calls with their follow-up.

Each route translates HTTP into a ``db.notes``/``db.calls`` function run in a worker
thread, and back into a typed response (``popup_ui.schemas``); every one needs a
session, and the logged-in staff member is the writer. Numbers typed into a search
are normalised with the office's numbering plan, as the lookup does. Knows nothing of
SIP.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Path, Query, Request, Response, status
from sqlalchemy.orm import Session

from db.calls import PAGE_SIZE_MAX, CallFilter, call_page, missed_calls, resolve_missed
from db.notes import (
    NewCustomer,
    NoteDraft,
    NoteRefused,
    correct_note,
    note_detail,
    notes_detail,
    save_note,
)
from popup_ui.auth import CurrentStaff, access_router
from popup_ui.context import get_web, in_session
from popup_ui.schemas import (
    CallPage,
    CallRecordOut,
    MissedList,
    MissedOut,
    MissedResolved,
    MissedResolveIn,
    NoteCorrectionIn,
    NoteIn,
    NoteOut,
    NoteRevisionsOut,
    StaffOut,
)

TOKYO = ZoneInfo("Asia/Tokyo")
MAX_ID = 2**31 - 1  # INTEGER ids (see popup_ui.api)
MAX_PAGE = 100_000
# Times a query can name: beyond these a datetime is no call of ours (and year 1 or
# 9999 overflows once moved to UTC).
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
T = TypeVar("T")

router = access_router(
    "staff",
    prefix="/api",
    tags=["records"],
    responses={401: {"description": "no valid session"}},
)


def _note(found: dict[str, Any]) -> NoteOut:
    return NoteOut.model_validate(
        {
            **found,
            "at": found["at"].astimezone(TOKYO),
            "revisions": [{**r, "at": r["at"].astimezone(TOKYO)} for r in found["revisions"]],
        }
    )


@router.post(
    "/notes",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": NoteOut, "description": "this key was saved before: that note"},
        404: {"description": "no such call or customer"},
        422: {"description": "no customer: give customer_id, new_customer, or a matched call"},
    },
)
async def create_note(
    body: NoteIn, request: Request, response: Response, staff: StaffOut = CurrentStaff
) -> NoteOut:
    """Save a note once per ``idempotency_key``: 201 the first time, 200 with the same
    note on a retry."""
    new = body.new_customer
    draft = NoteDraft(
        idempotency_key=body.idempotency_key,
        staff_id=staff.id,
        body=body.body,
        call_id=body.call_id,
        customer_id=body.customer_id,
        tags=tuple(dict.fromkeys(body.tags)),  # once each, in the order given
        follow_up_on=body.follow_up_on,
        new_customer=None if new is None else NewCustomer(name=new.name, furigana=new.furigana),
        kind=body.kind,
    )
    found, created = await in_session(request, lambda session: save_note(session, draft))
    if not created:
        response.status_code = status.HTTP_200_OK
    return _note(found)


@router.patch("/notes/{note_id}", responses={404: {"description": "no such note"}})
async def correct(
    body: NoteCorrectionIn,
    request: Request,
    note_id: int = Path(ge=1, le=MAX_ID),
    staff: StaffOut = CurrentStaff,
) -> NoteOut:
    """Correct a note's text; the earlier text is kept in ``revisions`` with who changed it."""
    found = await in_session(
        request, lambda session: correct_note(session, note_id, body=body.body, staff_id=staff.id)
    )
    return _note(found)


@router.get("/notes/{note_id}/revisions", responses={404: {"description": "no such note"}})
async def revisions(request: Request, note_id: int = Path(ge=1, le=MAX_ID)) -> NoteRevisionsOut:
    """A note's earlier texts, oldest first: each with who replaced it and when."""

    def work(session: Session) -> dict[str, Any]:
        found = note_detail(session, note_id)
        if found is None:
            raise NoteRefused("not_found", "メモが見つかりません")
        return found

    note = _note(await in_session(request, work))
    return NoteRevisionsOut(
        note_id=note.id,
        body=note.body,
        staff_name=note.staff_name,
        at=note.at,
        revisions=note.revisions,
    )


def _moment(value: datetime | date | None, name: str) -> datetime | None:
    """A query's time as an aware datetime: a date is its midnight, naive is Tokyo time."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=TOKYO)
    if not _EARLIEST <= value <= _LATEST:
        raise HTTPException(status_code=422, detail=f"{name}: out of range")
    return value


def _national(request: Request, e164: str | None, raw: str | None) -> str | None:
    normalise = get_web(request).services.lookup.numbering.normalise
    found = normalise(e164) if e164 else normalise(raw)
    return found.national if found.kind in ("e164", "extension") else None


@router.get("/calls", responses={422: {"description": "a number that is no phone number"}})
async def calls(
    request: Request,
    since: Annotated[
        datetime | date | None,
        Query(description="started at or after (a date is its midnight, Tokyo time)"),
    ] = None,
    until: Annotated[datetime | date | None, Query(description="started before")] = None,
    number: str | None = Query(
        default=None, min_length=1, max_length=64, description="the caller, as typed"
    ),
    page: int = Query(default=1, ge=1, le=MAX_PAGE),
    page_size: int = Query(default=50, ge=1, le=PAGE_SIZE_MAX),
) -> CallPage:
    """The call log, newest first, a page at a time; ``number`` in any spelling."""
    where = CallFilter(since=_moment(since, "since"), until=_moment(until, "until"))
    if number is not None:
        found = get_web(request).services.lookup.numbering.normalise(number)
        if found.kind == "e164":
            where = CallFilter(since=where.since, until=where.until, caller_e164=found.e164)
        elif found.kind == "extension":
            where = CallFilter(since=where.since, until=where.until, caller_raw=found.national)
        else:
            raise HTTPException(status_code=422, detail="電話番号として読めません")

    def work(session: Session) -> tuple[int, list[dict[str, Any]], dict[int, NoteOut]]:
        total, rows = call_page(session, where, page=page, page_size=page_size)
        wanted = [note_id for row in rows for note_id in row["note_ids"]]
        notes = {found["id"]: _note(found) for found in notes_detail(session, wanted)}
        return total, rows, notes

    total, rows, notes = await in_session(request, work)
    numbering = get_web(request).services.lookup.numbering
    return CallPage(
        page=page,
        page_size=page_size,
        total=total,
        calls=[
            CallRecordOut(
                id=row["id"],
                started_at=row["started_at"].astimezone(TOKYO),
                ended_at=row["ended_at"].astimezone(TOKYO) if row["ended_at"] else None,
                caller_number=row["caller_e164"],
                caller_national=(
                    None
                    if row["withheld"]
                    else _national(request, row["caller_e164"], row["caller_raw"])
                ),
                display_name=row["display_name"],
                withheld=row["withheld"],
                dialed_number=row["dialed_e164"],
                dialed_national=_national(request, row["dialed_e164"], None),
                dialed_name=numbering.line_name(row["dialed_e164"]) if row["dialed_e164"] else None,
                outcome=row["outcome"],
                answered_by=row["answered_by"],
                handover=row["handover"],
                routing=row["routing"],
                talk_seconds=row["talk_seconds"],
                customer=row["customer"],
                note_ids=row["note_ids"],
                notes=[notes[i] for i in row["note_ids"] if i in notes],
            )
            for row in rows
        ],
    )


@router.get("/calls/missed")
async def missed(
    request: Request,
    include_resolved: bool = Query(default=False, description="also the calls followed up"),
) -> MissedList:
    """Calls nobody answered, grouped by caller, newest first; open ones unless asked."""
    groups = await in_session(
        request, lambda session: missed_calls(session, include_resolved=include_resolved)
    )
    return MissedList(
        missed=[
            MissedOut(
                number=group["number"],
                national=_national(request, group["number"], group["raw"]),
                customer=group["customer"],
                first_at=group["first_at"].astimezone(TOKYO),
                last_at=group["last_at"].astimezone(TOKYO),
                attempts=group["attempts"],
                call_ids=group["call_ids"],
                status=group["status"],
                resolved_by=group["resolved_by"],
                resolved_at=(
                    group["resolved_at"].astimezone(TOKYO) if group["resolved_at"] else None
                ),
                resolution_note=group["resolution_note"],
            )
            for group in groups
        ]
    )


@router.post("/calls/missed/resolve")
async def resolve(
    body: MissedResolveIn, request: Request, staff: StaffOut = CurrentStaff
) -> MissedResolved:
    """Mark missed calls followed up (``called_back`` or ``no_action``); they leave the list."""
    now = datetime.now(UTC)

    def work(session: Session) -> int:
        resolved = resolve_missed(
            session,
            call_ids=list(dict.fromkeys(body.call_ids)),
            status=body.status,
            staff_id=staff.id,
            at=now,
            note=body.note,
        )
        session.commit()
        return resolved

    return MissedResolved(resolved=await in_session(request, work))
