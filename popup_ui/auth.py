"""Staff login: the signed session cookie, the login rate limit, and ``current_staff``.

Owns ``POST /api/session`` and ``DELETE /api/session`` and the dependency every other
``/api/`` route and ``/ws`` use to find who is asking. Passwords are checked by
``db.staff.authenticate`` (argon2) in a worker thread; this module never sees a hash.
It knows nothing of SIP or of calls.

The cookie holds only the staff id, signed with a timestamp (itsdangerous); it is
checked against the database on every request, so a deactivated account loses its
sessions at once.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from db.staff import authenticate, get_staff
from popup_ui.context import get_web
from popup_ui.schemas import SessionOut, StaffOut

COOKIE_NAME = "callpop_session"
_SALT = "callpop.session.v1"
# The same text for an unknown login and a wrong password: no login enumeration.
_LOGIN_FAILED = "ログインIDまたはパスワードが違います"


def _info(staff: Any) -> StaffOut:
    return StaffOut.model_validate(staff, from_attributes=True)


class SessionCodec:
    """Signs and checks session cookie values; ``max_age`` bounds a session's life."""

    def __init__(self, secret: str, *, max_age: int) -> None:
        # An empty secret means a random one per start: sessions end on restart, which is
        # safer than a well-known default.
        self._serializer = URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), salt=_SALT)
        self.max_age = max_age

    def issue(self, staff_id: int) -> str:
        return self._serializer.dumps({"sid": staff_id})

    def staff_id(self, value: str | None) -> int | None:
        if not value:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:  # includes SignatureExpired
            return None
        sid = data.get("sid") if isinstance(data, dict) else None
        return sid if isinstance(sid, int) else None


class LoginLimiter:
    """At most ``limit`` failed logins per (login, client address) in ``window`` seconds."""

    def __init__(
        self,
        *,
        limit: int = 10,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, login: str, address: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        now = self._clock()
        failures = self._failures.get((login.casefold(), address))
        if failures is None:
            return 0
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.limit:
            return 0
        return max(1, int(failures[0] + self.window - now) + 1)

    def record_failure(self, login: str, address: str) -> None:
        now = self._clock()
        if len(self._failures) >= self._max_keys:
            # Bounded memory under a spray of logins: forget keys with no recent failure.
            self._failures = {
                key: q for key, q in self._failures.items() if q and q[-1] > now - self.window
            }
        self._failures.setdefault((login.casefold(), address), deque()).append(now)

    def reset(self, login: str, address: str) -> None:
        self._failures.pop((login.casefold(), address), None)


def load_staff(session_factory: sessionmaker[Session], staff_id: int) -> StaffOut | None:
    """The active staff member with this id, or None (blocking: call from a thread)."""
    with session_factory() as session:
        staff = get_staff(session, staff_id)
        if staff is None or not staff.active:
            return None
        return _info(staff)


def _check_login(
    session_factory: sessionmaker[Session], login: str, password: str
) -> StaffOut | None:
    with session_factory() as session:
        staff = authenticate(session, login, password)
        if staff is None or not staff.active:
            return None
        info = _info(staff)
        session.commit()  # authenticate may rehash an outdated argon2 hash
        return info


async def staff_for_connection(conn: HTTPConnection) -> StaffOut | None:
    """Who holds this request's or WebSocket's session cookie, or None."""
    web = get_web(conn)
    staff_id = web.sessions.staff_id(conn.cookies.get(COOKIE_NAME))
    if staff_id is None:
        return None
    return await run_in_threadpool(load_staff, web.services.session_factory, staff_id)


async def current_staff(request: Request) -> StaffOut:
    """Dependency for staff-only routes: 401 without a valid session."""
    staff = await staff_for_connection(request)
    if staff is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="ログインしてください",
            headers={"WWW-Authenticate": "Cookie"},
        )
    return staff


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


class LoginRequest(BaseModel):
    login: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


router = APIRouter(prefix="/api", tags=["session"])


@router.post(
    "/session",
    response_model=SessionOut,
    responses={401: {"description": "wrong login or password"}, 429: {"description": "too many"}},
)
async def login(body: LoginRequest, request: Request, response: Response) -> SessionOut:
    web = get_web(request)
    address = _client_address(request)
    limiter = web.login_limiter
    wait = limiter.retry_after(body.login, address)
    if wait:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail="ログインの試行が多すぎます。しばらくしてからお試しください",
            headers={"Retry-After": str(wait)},
        )
    staff = await run_in_threadpool(
        _check_login, web.services.session_factory, body.login, body.password
    )
    if staff is None:
        limiter.record_failure(body.login, address)
        raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=_LOGIN_FAILED)
    limiter.reset(body.login, address)
    config = web.config
    response.set_cookie(
        COOKIE_NAME,
        web.sessions.issue(staff.id),
        max_age=config.session_max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=config.cookie_secure,
    )
    return SessionOut(staff=staff)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request) -> Response:
    config = get_web(request).config
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=config.cookie_secure
    )
    return response


CurrentStaff = Depends(current_staff)
