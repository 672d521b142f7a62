"""Staff accounts over HTTP: admins manage them, everyone changes their own password.

- ``/api/admin/staff`` (admin only): list the accounts, add one, change one (name,
  extension, role, active). Deactivating ends that person's sessions at once, as
  ``callpop user deactivate`` does (``db.staff``); the last active admin cannot be
  demoted or deactivated (409). Every change is logged at info: who did what to whom.
- ``POST /api/admin/staff/{id}/password`` (admin): a new password for someone who forgot
  theirs (``callpop user passwd``); all their sessions end.
- ``POST /api/me/password`` (any staff): the current password and a new one; the other
  sessions of that person end, the one that asked stays.
- ``POST /api/admin/import/customers`` and ``GET /api/admin/export/customers.csv``
  (admin): ``callpop import customers`` / ``export customers`` from the browser, with the
  same engine (``db.customer_import``): a dry run with a preview, then the whole file or
  nothing. The body is the raw file, read up to ``MAX_IMPORT_BYTES`` (413 beyond).

Passwords are hashed and checked (argon2) in the login's bounded pool
(``popup_ui.login_guard.PasswordCheck``): beyond it, 503 at once. Knows nothing of SIP.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from db.customer_import import ImportFileError, decode, export_customers, import_customers
from db.models import Staff
from db.sessions import token_hash
from db.staff import (
    LastAdmin,
    StaffChange,
    change_own_password,
    create_staff,
    last_login,
    set_password,
    staff_accounts,
    update_staff,
)
from lookup.numbers import Numbering
from popup_ui.auth import COOKIE_NAME, CurrentAdmin, CurrentStaff, access_router
from popup_ui.context import get_web, in_session
from popup_ui.login_guard import LoginBusy
from popup_ui.schemas import (
    PasswordChangeIn,
    StaffAccountList,
    StaffAccountOut,
    StaffCreateIn,
    StaffOut,
    StaffUpdateIn,
)

log = logging.getLogger(__name__)

MAX_ID = 2**31 - 1  # INTEGER ids (see popup_ui.api)
MAX_ACCOUNTS_LISTED = 500  # StaffAccountList.truncated
_BUSY = "混み合っています。しばらくしてからお試しください"
TOKYO = ZoneInfo("Asia/Tokyo")
# An uploaded customer file: far above an office's list (10,000 customers are about
# 1 MB), and the whole of it is held in memory while it is checked.
MAX_IMPORT_BYTES = 20 * 1024 * 1024
PREVIEW_ROWS = 20  # the first rows shown before 取り込む

router = access_router(
    "admin",
    prefix="/api/admin",
    tags=["admin"],
    responses={
        401: {"description": "no valid session"},
        403: {"description": "the logged-in person is not an admin"},
    },
)
me_router = access_router(
    "staff",
    prefix="/api/me",
    tags=["staff"],
    responses={401: {"description": "no valid session"}},
)


def _account(staff: Staff, last_login: Any = None) -> StaffAccountOut:
    return StaffAccountOut(
        id=staff.id,
        login=staff.login,
        name=staff.name,
        furigana=staff.furigana,
        extension=staff.extension,
        role="admin" if staff.role == "admin" else "staff",
        active=staff.active,
        last_login=last_login,
    )


def _address(request: Request) -> str:
    return request.client.host if request.client else "?"


def _busy() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail=_BUSY, headers={"Retry-After": "1"}
    )


@router.get("/staff")
async def list_accounts(request: Request) -> StaffAccountList:
    """Every account with its role, whether it can log in, and its last login."""

    def load(session: Session) -> StaffAccountList:
        rows = staff_accounts(session, limit=MAX_ACCOUNTS_LISTED + 1)
        return StaffAccountList(
            staff=[_account(staff, last) for staff, last in rows[:MAX_ACCOUNTS_LISTED]],
            truncated=len(rows) > MAX_ACCOUNTS_LISTED,
        )

    return await in_session(request, load)


def _create(factory: sessionmaker[Session], body: StaffCreateIn) -> StaffAccountOut | None:
    with factory() as session:
        try:
            staff = create_staff(
                session,
                login=body.login,
                name=body.name,
                password=body.password,
                extension=body.extension or None,
                role=body.role,
                furigana=body.furigana or None,
            )
            session.commit()
        except IntegrityError:
            return None
        return _account(staff)


@router.post(
    "/staff",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "the login is taken"}, 503: {"description": "busy; retry"}},
)
async def create_account(
    body: StaffCreateIn, request: Request, admin: StaffOut = CurrentAdmin
) -> StaffAccountOut:
    """A new account (argon2 like ``callpop user add``): it can log in at once."""
    web = get_web(request)
    try:
        created = await web.password_check.run(
            _address(request), _create, web.services.session_factory, body
        )
    except LoginBusy:
        raise _busy() from None
    if created is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="そのログインIDは使われています")
    log.info(
        "admin %s added staff %s (role %s, extension %s)",
        admin.login,
        created.login,
        created.role,
        created.extension or "-",
    )
    return created


@router.patch(
    "/staff/{staff_id}",
    responses={
        404: {"description": "no such account"},
        409: {"description": "it would leave no active admin"},
    },
)
async def change_account(
    body: StaffUpdateIn,
    request: Request,
    staff_id: int = Path(ge=1, le=MAX_ID, description="a staff id"),
    admin: StaffOut = CurrentAdmin,
) -> StaffAccountOut:
    """Name, furigana, extension, role, active; deactivating ends their sessions."""
    factory = get_web(request).services.session_factory
    sent = body.model_dump(exclude_unset=True)
    change = StaffChange(**{key: value for key, value in sent.items() if value is not None})

    def work() -> tuple[StaffAccountOut, dict[str, tuple[Any, Any]]] | None:
        with factory() as session:
            found = session.get(Staff, staff_id)
            if found is None:
                return None
            before = {key: getattr(found, key) for key in sent}
            staff = update_staff(session, staff_id, change)
            assert staff is not None  # found above, in this transaction
            changed = {
                key: (before[key], getattr(staff, key))
                for key in sent
                if before[key] != getattr(staff, key)
            }
            session.commit()
            return _account(staff, last_login(session, staff.id)), changed

    try:
        done = await run_in_threadpool(work)
    except LastAdmin:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="最後の管理者は変更・無効化できません"
        ) from None
    if done is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="スタッフが見つかりません")
    account, changed = done
    if changed:
        log.info(
            "admin %s changed staff %s: %s%s",
            admin.login,
            account.login,
            ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items()),
            "; all their sessions ended" if changed.get("active") == (True, False) else "",
        )
    return account


@me_router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        400: {"description": "the current password is wrong"},
        429: {"description": "too many wrong attempts"},
        503: {"description": "busy; retry"},
    },
)
async def change_password(
    body: PasswordChangeIn, request: Request, staff: StaffOut = CurrentStaff
) -> None:
    """The logged-in person's own password; their other sessions end, this one stays."""
    web = get_web(request)
    address = _address(request)
    # Counted like a login: a stolen session cannot guess the password behind it.
    attempt = web.login_limiter.reserve(staff.login, address)
    if isinstance(attempt, int):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="試行が多すぎます。しばらくしてからお試しください",
            headers={"Retry-After": str(attempt)},
        )
    keep = token_hash(request.cookies.get(COOKIE_NAME, ""))
    factory = web.services.session_factory

    def work() -> bool:
        with factory() as session:
            changed = change_own_password(
                session,
                staff.id,
                body.current_password,
                body.new_password,
                keep_token_hash=keep,
            )
            session.commit()
            return changed

    try:
        changed = await web.password_check.run(address, work)
    except LoginBusy:
        web.login_limiter.release(attempt)
        raise _busy() from None
    if not changed:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="現在のパスワードが違います")
    web.login_limiter.release(attempt)
    log.info("staff %s changed their password; their other sessions ended", staff.login)


class StaffPasswordIn(BaseModel):
    """``POST /api/admin/staff/{id}/password``: the new password, told to the person."""

    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=8, max_length=1000)


def _reset(factory: sessionmaker[Session], staff_id: int, password: str) -> str | None:
    with factory() as session:
        found = session.get(Staff, staff_id)
        if found is None:
            return None
        set_password(session, found.login, password)
        session.commit()
        return found.login


@router.post(
    "/staff/{staff_id}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such account"}, 503: {"description": "busy; retry"}},
)
async def reset_password(
    body: StaffPasswordIn,
    request: Request,
    staff_id: int = Path(ge=1, le=MAX_ID, description="a staff id"),
    admin: StaffOut = CurrentAdmin,
) -> None:
    """A new password for someone who forgot theirs; every session of theirs ends."""
    web = get_web(request)
    try:
        login = await web.password_check.run(
            _address(request), _reset, web.services.session_factory, staff_id, body.password
        )
    except LoginBusy:
        raise _busy() from None
    if login is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="スタッフが見つかりません")
    log.info(
        "admin %s set a new password for staff %s; all their sessions ended", admin.login, login
    )


# --- customers in and out as CSV ---------------------------------------------------------


class ImportErrorOut(BaseModel):
    line: int = Field(description="the file's line; the header is line 1")
    column: str | None = Field(description="the column's header; null for the whole row")
    message: str


class ImportRepairOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    line: int
    from_: str = Field(alias="from", description="the cell as written: 312345678")
    to: str = Field(description="read as: 03-1234-5678")


class ImportPreviewOut(BaseModel):
    line: int
    action: Literal["create", "update", "unchanged"]
    code: str | None
    name: str | None
    furigana: str | None
    company: str | None
    phones: list[str] = Field(description="national format: 03-1234-5678")


class ImportReportOut(BaseModel):
    """``callpop import customers --json`` plus the first rows (``preview``)."""

    dry_run: bool
    written: bool = Field(description="true when the rows are in the database now")
    rows: int
    created: int
    updated: int
    unchanged: int
    errors: list[ImportErrorOut] = Field(description="every row error; any means nothing written")
    repaired: list[ImportRepairOut] = Field(description="numbers read with their trunk 0 restored")
    preview: list[ImportPreviewOut] = Field(description=f"the first {PREVIEW_ROWS} good rows")


async def _read_file(request: Request, limit: int = MAX_IMPORT_BYTES) -> bytes:
    """The request body, refused (413) as soon as it grows past ``limit``."""
    too_big = HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"ファイルが大きすぎます（上限 {limit // (1024 * 1024)} MB）",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise too_big
    return bytes(data)


@router.post(
    "/import/customers",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the CSV file as Excel saved it (the raw bytes, not a form)",
            "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={
        413: {"description": f"the file is larger than {MAX_IMPORT_BYTES // 2**20} MB"},
        422: {"description": "an empty or unreadable file (not CSV text, no name column)"},
    },
)
async def import_customers_file(
    request: Request,
    dry_run: bool = Query(True, description="check every row and report; write nothing"),
    encoding: Literal["auto", "utf-8", "utf-8-sig", "cp932"] = Query(
        "auto", description="auto: a UTF-8 BOM, else UTF-8, else CP932 (Shift_JIS)"
    ),
    admin: StaffOut = CurrentAdmin,
) -> ImportReportOut:
    """Customers from a CSV file: all rows or none, as ``callpop import customers``.

    Row errors answer 200 with ``errors`` and nothing written; run it with
    ``dry_run=true`` first to see them, the counts and the first rows.
    """
    data = await _read_file(request)
    if not data:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="ファイルが空です")
    # The lookup's numbering plan is the office's (callpop.service.numbering_of).
    numbering = cast(Numbering, get_web(request).services.lookup.numbering)

    def work(session: Session) -> ImportReportOut:
        report = import_customers(
            session,
            decode(data, encoding),
            numbering=numbering,
            write=not dry_run,
            preview=PREVIEW_ROWS,
            staff_id=admin.id,  # the audit entries name who imported
        )
        written = not dry_run and not report.errors
        if written:
            session.commit()
        else:
            session.rollback()
        return ImportReportOut.model_validate(
            {**report.as_dict(), "preview": report.preview, "dry_run": dry_run, "written": written}
        )

    try:
        result = await in_session(request, work)
    except ImportFileError as exc:
        log.info("admin %s: customer import refused, unreadable file: %s", admin.login, exc)
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"ファイルを読めません: {exc}"
        ) from None
    log.info(
        "admin %s imported customers (%s): %d rows, %d created, %d updated, %d unchanged,"
        " %d errors, %d numbers repaired",
        admin.login,
        "dry run" if dry_run else ("written" if result.written else "nothing written"),
        result.rows,
        result.created,
        result.updated,
        result.unchanged,
        len(result.errors),
        len(result.repaired),
    )
    return result


@router.get(
    "/export/customers.csv",
    response_class=Response,
    responses={
        # No "content" here: /openapi.json documents JSON bodies only (tests/web/test_app.py).
        200: {"description": "every live customer as a text/csv download"},
        422: {"description": "a customer's text cannot be written in CP932"},
    },
)
async def export_customers_file(
    request: Request,
    encoding: Literal["utf-8-sig", "cp932"] = Query(
        "utf-8-sig", description="utf-8-sig: Excel's UTF-8 with BOM; cp932: Shift_JIS"
    ),
    admin: StaffOut = CurrentAdmin,
) -> Response:
    """The bytes ``callpop export customers`` writes: the columns the import reads."""
    numbering = cast(Numbering, get_web(request).services.lookup.numbering)

    try:
        data = await in_session(
            request, lambda session: export_customers(session, numbering, encoding)
        )
    except ValueError as exc:
        cause = exc.__cause__
        bad = cause.object[cause.start : cause.end] if isinstance(cause, UnicodeEncodeError) else ""
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"「{bad}」は Shift_JIS (CP932) で書けません。UTF-8 で書き出してください",
        ) from None
    today = dt.datetime.now(TOKYO).date().isoformat()
    log.info("admin %s exported customers (%s, %d bytes)", admin.login, encoding, len(data))
    charset = "utf-8" if encoding == "utf-8-sig" else "shift_jis"
    return Response(
        content=data,
        media_type=f"text/csv; charset={charset}",
        headers={
            "Content-Disposition": f'attachment; filename="customers-{today}.csv"',
            "Cache-Control": "no-store",  # customer data stays out of caches
        },
    )
