"""Staff accounts over HTTP: admins manage them, everyone changes their own password.

- ``/api/admin/staff`` (admin only): list the accounts, add one, change one (name,
  extension, role, active). Deactivating ends that person's sessions at once, as
  ``callpop user deactivate`` does (``db.staff``); the last active admin cannot be
  demoted or deactivated (409). Every change is logged at info: who did what to whom.
- ``POST /api/me/password`` (any staff): the current password and a new one; the other
  sessions of that person end, the one that asked stays.

Passwords are hashed and checked (argon2) in the login's bounded pool
(``popup_ui.login_guard.PasswordCheck``): beyond it, 503 at once. Knows nothing of SIP.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, Path, Request, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from db.models import Staff
from db.sessions import token_hash
from db.staff import (
    LastAdmin,
    StaffChange,
    change_own_password,
    create_staff,
    last_login,
    staff_accounts,
    update_staff,
)
from popup_ui.auth import COOKIE_NAME, CurrentAdmin, CurrentStaff, access_router
from popup_ui.context import get_web
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
    factory = get_web(request).services.session_factory

    def load() -> StaffAccountList:
        with factory() as session:
            rows = staff_accounts(session, limit=MAX_ACCOUNTS_LISTED + 1)
            return StaffAccountList(
                staff=[_account(staff, last) for staff, last in rows[:MAX_ACCOUNTS_LISTED]],
                truncated=len(rows) > MAX_ACCOUNTS_LISTED,
            )

    return await run_in_threadpool(load)


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
