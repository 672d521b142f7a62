"""Staff login: server-side sessions, the login limits, and ``current_staff``.

Owns ``POST /api/session`` and ``DELETE /api/session`` and the dependency every other
``/api/`` route and ``/ws`` use to find who is asking. It knows nothing of SIP or of
calls, and never sees a password hash: ``db.staff`` checks passwords, ``db.sessions``
keeps the sessions.

- **Sessions** live in the database (``db.sessions``): the cookie is an opaque random
  token, the table holds its SHA-256. Logout, expiry, deactivation and a password change
  end a session; the next request with it gets 401, and an open ``/ws`` on it is closed
  within a few seconds (``popup_ui.sessions.SessionStore``).
- **Limits** on login attempts (``popup_ui.login_guard.LoginLimiter``) are counted
  *before* the password is checked, per client address across logins and per login
  across addresses; the address is ``request.client.host`` as uvicorn resolved it
  (forwarded headers only from the proxies in ``http.trusted_proxies``, see
  ``callpop.cli.server_config``).
- **Password checks** (argon2: a core and 64 MiB each for tens of milliseconds) run in a
  small pool of their own with a short queue (``popup_ui.login_guard.PasswordCheck``);
  beyond it a login gets 503 at once, so strangers posting logins cannot starve the pops.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Mount

from db.sessions import (
    start_session,
    token_hash,
)
from db.staff import authenticate
from popup_ui.context import get_web
from popup_ui.login_guard import LoginBusy, LoginLimiter, PasswordCheck
from popup_ui.schemas import AuthHealth, SessionOut, StaffOut
from popup_ui.sessions import SessionStore

log = logging.getLogger(__name__)
T = TypeVar("T")

COOKIE_NAME = "callpop_session"
# The same text for an unknown login and a wrong password: no login enumeration.
_LOGIN_FAILED = "ログインIDまたはパスワードが違います"
_TOO_MANY = "ログインの試行が多すぎます。しばらくしてからお試しください"
_BUSY = "ログインが混み合っています。しばらくしてからお試しください"


def _info(staff: Any) -> StaffOut:
    return StaffOut.model_validate(staff, from_attributes=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def auth_health(limiter: LoginLimiter, check: PasswordCheck, store: SessionStore) -> AuthHealth:
    """The counters of this module, for ``/healthz``."""
    return AuthHealth(
        logins=store.logins,
        login_failures=store.login_failures,
        refused_limit=limiter.refused,
        refused_load=check.refused,
        password_checks_pending=check.pending,
        sessions_ended=dict(store.ended),
        websockets_closed=store.websockets_closed,
    )


# --- dependencies ----------------------------------------------------------------------------


async def staff_for_connection(conn: HTTPConnection) -> StaffOut | None:
    """Who holds this request's or WebSocket's session cookie, or None.

    Raises SQLAlchemyError when the database cannot say.
    """
    web = get_web(conn)
    return await web.sessions.staff_for(conn.cookies.get(COOKIE_NAME), web.services.session_factory)


async def current_staff(request: Request) -> StaffOut:
    """Dependency for staff-only routes: 401 without a live session."""
    staff = await staff_for_connection(request)
    if staff is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="ログインしてください",
            headers={"WWW-Authenticate": "Cookie"},
        )
    return staff


CurrentStaff = Depends(current_staff)


async def current_admin(staff: StaffOut = CurrentStaff) -> StaffOut:
    """Dependency for admin routes: 401 without a live session, 403 for a non-admin."""
    if staff.role != "admin":
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail="管理者だけが使える操作です"
        )
    return staff


CurrentAdmin = Depends(current_admin)


# --- access levels -----------------------------------------------------------------------
#
# Every route of the app declares who may use it: ``public`` (no login), ``staff`` (a
# live session) or ``admin`` (a live session of an admin). A route gets its level from
# the router it is on (:func:`access_router`: the level's dependency on every route,
# and a route class that carries the level) or, for the few that check on their own
# (login, ``/ws``, static files), from :func:`declare_access`. ``tests/web/test_roles.py``
# walks the app's routes: one without a level fails, and each is tried without a
# session, as staff and as admin against its level.

Access = Literal["public", "staff", "admin"]
_ACCESS_ATTRIBUTE = "callpop_access"


class _StaffRoute(APIRoute):
    access: Access = "staff"


class _AdminRoute(APIRoute):
    access: Access = "admin"


def access_router(access: Literal["staff", "admin"], **kwargs: Any) -> APIRouter:
    """An ``APIRouter`` whose every route requires ``access`` (and declares it)."""
    if access == "admin":
        return APIRouter(dependencies=[CurrentAdmin], route_class=_AdminRoute, **kwargs)
    return APIRouter(dependencies=[CurrentStaff], route_class=_StaffRoute, **kwargs)


def declare_access(access: Access) -> Callable[[T], T]:
    """Declare the level of an endpoint (or a mounted app) that enforces it itself."""

    def mark(target: T) -> T:
        setattr(target, _ACCESS_ATTRIBUTE, access)
        return target

    return mark


def access_of(route: BaseRoute) -> Access | None:
    """The declared level of one of the app's routes; None when it has none."""
    level: Access | None = getattr(route, "access", None)
    if level is None:
        target = route.app if isinstance(route, Mount) else getattr(route, "endpoint", None)
        level = getattr(target, _ACCESS_ATTRIBUTE, None)
    return level


def _client_address(request: Request) -> str:
    # The peer as uvicorn resolved it: X-Forwarded-For counts only from a proxy in
    # http.trusted_proxies (callpop.cli.server_config), never from anyone who sends it.
    return request.client.host if request.client else "?"


class LoginRequest(BaseModel):
    login: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1000)


@dataclass(frozen=True, slots=True)
class _Started:
    staff: StaffOut
    token: str
    expires_at: dt.datetime


def _check_login(
    factory: sessionmaker[Session], login: str, password: str, max_age: int
) -> _Started | None:
    """Check the password and, when right, start a session (blocking: in the login pool)."""
    with factory() as session:
        staff = authenticate(session, login, password)
        if staff is None or not staff.active:
            return None
        info = _info(staff)
        token, row = start_session(session, staff.id, now=_now(), max_age=max_age)
        session.commit()  # the session, and a rehash of an outdated argon2 hash
        return _Started(info, token, row.expires_at)


router = APIRouter(prefix="/api", tags=["session"])


@router.post(
    "/session",
    response_model=SessionOut,
    responses={
        401: {"description": "wrong login or password"},
        429: {"description": "too many attempts from this address or for this login"},
        503: {"description": "too many logins being checked right now; retry"},
    },
)
@declare_access("public")
async def login(body: LoginRequest, request: Request, response: Response) -> SessionOut:
    web = get_web(request)
    limiter, store = web.login_limiter, web.sessions
    address = _client_address(request)
    attempt = limiter.reserve(body.login, address)
    if isinstance(attempt, int):
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=_TOO_MANY,
            headers={"Retry-After": str(attempt)},
        )
    try:
        started = await web.password_check.run(
            address,
            _check_login,
            web.services.session_factory,
            body.login,
            body.password,
            web.config.session_max_age,
        )
    except LoginBusy:
        limiter.release(attempt)  # never checked: not a failure
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=_BUSY,
            headers={"Retry-After": "1"},
        ) from None
    except SQLAlchemyError:
        limiter.release(attempt)
        raise
    if started is None:
        store.login_failures += 1
        raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=_LOGIN_FAILED)
    limiter.release(attempt)
    web.password_check.succeeded(address)
    store.logins += 1
    store.remember(token_hash(started.token), started.staff, started.expires_at)
    config = web.config
    response.set_cookie(
        COOKIE_NAME,
        started.token,
        max_age=config.session_max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=config.cookie_secure,
    )
    return SessionOut(staff=started.staff)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
@declare_access("public")
async def logout(request: Request) -> Response:
    """Ends the session on the server (its WebSockets close) and clears the cookie."""
    web = get_web(request)
    await web.sessions.end(request.cookies.get(COOKIE_NAME), web.services.session_factory)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=web.config.cookie_secure
    )
    return response
