"""What the web app is given: its settings and the parts it serves, as plain types.

The composition (the ``callpop`` package) builds these; ``popup_ui`` only uses them.
Routes reach the parts through :func:`get_web` (``app.state``, no module
globals). Nothing here knows SIP or how the parts are made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar, cast

from fastapi import HTTPException
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from db.refused import Refused, RefusedReason
from lookup.numbers import Number
from lookup.openers import OpenerRules

if TYPE_CHECKING:
    from lookup.service import Lookup
    from popup_ui.hub import Hub
    from popup_ui.login_guard import LoginLimiter, PasswordCheck
    from popup_ui.messages import AnsweredBy, Call
    from popup_ui.schemas import Health, StaffOut
    from popup_ui.sessions import SessionStore


class StartupError(Exception):
    """The service cannot start; the message is one line a person can act on."""


class CallNotFound(LookupError):
    """No call with this id that can still be claimed."""


class CallTaken(Exception):
    """Someone else already took this call."""

    def __init__(self, by: AnsweredBy) -> None:
        super().__init__(f"answered by {by.name or by.extension}")
        self.by = by


class CallNotYours(Exception):
    """Only the person who has the call may hand it over."""


class CallControl(Protocol):
    """What the web needs of the call service: staff acting on a call."""

    async def claim(self, call_id: str, staff: StaffOut) -> Call:
        """Mark the call as taken by ``staff``; CallNotFound / CallTaken otherwise."""
        ...

    async def hand_over(self, call_id: str, by: StaffOut, to: StaffOut, note: str) -> Call:
        """転送メモ for ``to``; CallNotFound / CallNotYours otherwise."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    """The ``[http]`` and ``[ui]`` settings the web side needs."""

    session_secret: str = ""  # unused: sessions live in the database (kept for old configs)
    session_max_age: int = 12 * 3600
    cookie_secure: bool = False
    allowed_origins: tuple[str, ...] = ()
    language: Literal["ja", "en"] = "ja"
    company_name: str = ""
    # [followups]: when a customer is dormant (休眠), per rank.
    followups: OpenerRules = field(default_factory=OpenerRules)


class CardLookup(Protocol):
    """What the web needs of ``lookup.service.CallerLookup``."""

    async def card_for(
        self,
        number: Number,
        *,
        withheld: str | None = None,
        now: dt.datetime,
        keep_late: bool = True,
    ) -> Lookup: ...

    @property
    def numbering(self) -> _Normaliser: ...


class _Normaliser(Protocol):
    def normalise(self, raw: str | None) -> Number: ...

    def line_name(self, e164: str | None) -> str | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class WebServices:
    """The running parts the routes use, built by the composition's lifespan."""

    session_factory: sessionmaker[Session]
    lookup: CardLookup
    hub: Hub
    calls: CallControl
    health: Callable[[], Awaitable[Health]]


@dataclass(frozen=True, slots=True, kw_only=True)
class WebState:
    """``app.state.services``: the running parts plus the web's own session machinery."""

    config: WebConfig
    services: WebServices
    sessions: SessionStore
    login_limiter: LoginLimiter
    password_check: PasswordCheck


def get_web(conn: HTTPConnection) -> WebState:
    """The parts of this app, kept on ``app.state`` (no module globals)."""
    return cast("WebState", conn.app.state.web)


T = TypeVar("T")

# How a refusal of the database layer (db.refused) answers over HTTP.
REFUSED_STATUS: dict[RefusedReason, int] = {
    "not_found": 404,
    "conflict": 409,
    "busy": 409,
    "invalid": 422,
    "no_customer": 422,
}


async def in_session(conn: HTTPConnection, work: Callable[[Session], T]) -> T:
    """``work`` in a worker thread with a session of its own (the event loop never waits
    on the database); a :class:`db.refused.Refused` becomes its HTTP status with the
    Japanese message as ``detail``."""
    factory = get_web(conn).services.session_factory

    def run() -> T:
        with factory() as session:
            return work(session)

    try:
        return await run_in_threadpool(run)
    except Refused as refused:
        raise HTTPException(REFUSED_STATUS[refused.reason], detail=str(refused)) from None
