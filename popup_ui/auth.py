"""Staff login: server-side sessions, the login limits, and ``current_staff``.

Owns ``POST /api/session`` and ``DELETE /api/session`` and the dependency every other
``/api/`` route and ``/ws`` use to find who is asking. It knows nothing of SIP or of
calls, and never sees a password hash: ``db.staff`` checks passwords, ``db.sessions``
keeps the sessions.

- **Sessions** live in the database (``db.sessions``): the cookie is an opaque random
  token, the table holds its SHA-256. Logout, expiry, deactivation and a password change
  end a session; the next request with it gets 401, and an open ``/ws`` on it is closed
  within :attr:`SessionStore.check_every` seconds (:meth:`SessionStore.watch`).
- **Limits** on login attempts (:class:`LoginLimiter`) are counted *before* the password
  is checked, per client address across logins and per login across addresses; the
  address is ``request.client.host`` as uvicorn resolved it (forwarded headers only from
  the proxies in ``http.trusted_proxies``, see ``callpop.cli.server_config``).
- **Password checks** (argon2: a core and 64 MiB each for tens of milliseconds) run in a
  small pool of their own with a short queue (:class:`PasswordCheck`); beyond it a login
  gets 503 at once, so strangers posting logins cannot starve the pops.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from db.sessions import (
    SessionState,
    check_sessions,
    end_session,
    start_session,
    token_hash,
)
from db.staff import authenticate
from popup_ui.context import get_web
from popup_ui.schemas import AuthHealth, SessionOut, StaffOut

log = logging.getLogger(__name__)
T = TypeVar("T")

COOKIE_NAME = "callpop_session"
# The same text for an unknown login and a wrong password: no login enumeration.
_LOGIN_FAILED = "ログインIDまたはパスワードが違います"
_TOO_MANY = "ログインの試行が多すぎます。しばらくしてからお試しください"
_BUSY = "ログインが混み合っています。しばらくしてからお試しください"
_MAX_TOKEN = 100  # new_token() makes 43 characters; anything much longer is not ours


def _info(staff: Any) -> StaffOut:
    return StaffOut.model_validate(staff, from_attributes=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- login attempts -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """A reserved login attempt: given back by :meth:`LoginLimiter.release` on success."""

    keys: tuple[str, str]
    at: float


class LoginLimiter:
    """Login attempts per client address and per login, in a sliding window.

    An attempt is counted when it starts (:meth:`reserve`), before the password check
    awaits: checked first and recorded after, 200 parallel guesses all passed the check
    before the first failure was written. A successful login gives its attempt back
    (:meth:`release`); failures stay for ``window`` seconds. Per address across logins
    stops one host spraying many logins; per login across addresses stops many hosts
    guessing one. The price of the second: strangers can hold a login closed for up to
    ``window`` seconds; the person can still wait it out, and it is logged.
    """

    def __init__(
        self,
        *,
        per_login: int = 10,
        per_address: int = 30,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.per_login = per_login
        self.per_address = per_address
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self.refused = 0
        self.keys_forgotten = 0

    @property
    def limit(self) -> int:
        """The smaller limit: at most this many failures for one login from one address."""
        return min(self.per_login, self.per_address)

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def reserve(self, login: str, address: str) -> Attempt | int:
        """Count an attempt now, or refuse it: the seconds to wait (``Retry-After``).

        No ``await`` between the check and the count, so it is atomic on the event loop.
        """
        now = self._clock()
        keys = (f"login:{login.casefold()}", f"address:{address}")
        limits = (self.per_login, self.per_address)
        recent = [self._recent(key, now) for key in keys]
        full = [hits for hits, limit in zip(recent, limits, strict=True) if len(hits) >= limit]
        if full:
            self.refused += 1
            return max(1, max(int(hits[0] + self.window - now) + 1 for hits in full))
        self._make_room(now)
        for key, hits, limit in zip(keys, recent, limits, strict=True):
            hits.append(now)
            self._hits[key] = hits
            if len(hits) == limit:
                kind, _, who = key.partition(":")
                log.warning(
                    "login limit reached for %s %r: %d attempts in %g s; refusing more",
                    kind,
                    who[:64],
                    limit,
                    self.window,
                )
        return Attempt(keys, now)

    def release(self, attempt: Attempt) -> None:
        """Give a reserved attempt back (it succeeded, or never reached the check)."""
        for key in attempt.keys:
            hits = self._hits.get(key)
            if hits is not None and attempt.at in hits:
                hits.remove(attempt.at)

    def _make_room(self, now: float) -> None:
        if len(self._hits) < self._max_keys:
            return
        # Bounded memory under a spray of logins: forget keys with no recent attempt,
        # then, if a flood keeps them all recent, the oldest keys (logged and counted).
        self._hits = {k: q for k, q in self._hits.items() if q and q[-1] > now - self.window}
        excess = len(self._hits) - self._max_keys * 9 // 10
        if excess > 0:
            for key in list(self._hits)[:excess]:
                del self._hits[key]
            self.keys_forgotten += excess
            log.warning("login limiter full: forgot the %d oldest of its keys", excess)


class LoginBusy(Exception):
    """Too many password checks running and waiting: answer 503 at once."""


def _lower_priority() -> None:
    """Run this worker thread at the lowest CPU priority (Linux: nice is per thread, and
    the threads argon2 starts for its lanes inherit it), so hashing takes only the CPU
    the event loop leaves: pops first, logins with what is left."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class _Lane:
    """A pool of ``workers`` threads with ``queue`` places to wait; no more."""

    def __init__(self, name: str, workers: int, queue: int) -> None:
        self.workers = workers
        self.queue = queue
        self.executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name, initializer=_lower_priority
        )
        self.pending = 0  # running + waiting, decremented when the thread is done


class PasswordCheck:
    """Password checks off the event loop, a few at a time, at the lowest CPU priority.

    argon2id with callpop's parameters takes 64 MiB and all cores for tens of
    milliseconds: in Starlette's shared pool (40 threads) a flood of logins ran 40 at a
    time, took the CPU from the pops and a gigabyte of memory. Here they get ``workers``
    threads of their own and ``queue`` places to wait; one more is refused at once
    (:class:`LoginBusy`) without touching the database or the hasher.

    An address someone logged in from successfully in the last ``known_for`` seconds
    gets a lane of its own (``known_workers`` + ``known_queue``): strangers filling the
    main lane do not keep the office's own PCs out. Its addresses are the peer as
    uvicorn resolved it, which a stranger cannot choose (docs/security.md).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        queue: int = 8,
        known_workers: int = 1,
        known_queue: int = 3,
        known_for: float = 24 * 3600.0,
        max_known: int = 1000,
        log_every: float = 10.0,
    ) -> None:
        self.workers = workers
        self.queue = queue
        self._main = _Lane("login", workers, queue)
        self._known_lane = _Lane("login-known", known_workers, known_queue)
        self._known: OrderedDict[str, float] = OrderedDict()
        self._known_for = known_for
        self._max_known = max_known
        self._lock = threading.Lock()
        self.refused = 0
        self._log_every = log_every
        self._logged_at = -log_every
        self._refused_at_log = 0

    @property
    def pending(self) -> int:
        return self._main.pending + self._known_lane.pending

    def succeeded(self, address: str) -> None:
        """A login from ``address`` succeeded: it gets the known lane from now on."""
        self._known[address] = time.monotonic() + self._known_for
        self._known.move_to_end(address)
        while len(self._known) > self._max_known:
            self._known.popitem(last=False)

    def _lanes(self, address: str) -> list[_Lane]:
        until = self._known.get(address)
        if until is not None and until > time.monotonic():
            return [self._known_lane, self._main]
        return [self._main]

    async def run(self, address: str, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            lane = next(
                (lane for lane in self._lanes(address) if lane.pending < lane.workers + lane.queue),
                None,
            )
            if lane is None:
                self.refused += 1
                self._say_refused()
                raise LoginBusy
            lane.pending += 1
        future: ThreadFuture[T] = lane.executor.submit(fn, *args)

        def done(_future: ThreadFuture[Any]) -> None:
            # Counted until the thread finishes, even when the request is cancelled first.
            with self._lock:
                lane.pending -= 1

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def _say_refused(self) -> None:
        now = time.monotonic()
        if now - self._logged_at >= self._log_every:
            log.warning(
                "login refused for load: %d password checks running or waiting "
                "(%d refused since the last line)",
                self.pending,
                self.refused - self._refused_at_log,
            )
            self._logged_at, self._refused_at_log = now, self.refused

    def close(self) -> None:
        for lane in (self._main, self._known_lane):
            lane.executor.shutdown(wait=False, cancel_futures=True)


# --- sessions -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Known:
    staff: StaffOut
    expires_at: dt.datetime
    checked_at: float  # monotonic


def _check(
    factory: sessionmaker[Session], hashes: list[str], now: dt.datetime, *, touch: bool
) -> dict[str, SessionState]:
    # Runs in a worker thread: check_sessions may end expired sessions, so commit.
    with factory() as session:
        states = check_sessions(session, hashes, now=now, touch=touch)
        if session.dirty:
            session.commit()
        return states


class SessionStore:
    """The web side of the database's sessions: checks, ends, remembers and watches them.

    - :meth:`staff_for` checks a cookie's token against the database (every request).
    - A short cache of sessions the database recently said were live lets a browser open
      ``/ws`` while the database is down (the pops still go out, with degraded cards);
      only ``/ws`` uses it, never a REST route. A session ended in this process (logout)
      is dropped from it and remembered as revoked, so it stays ended even then.
    - :meth:`watch` gives each open ``/ws`` a future that resolves with the reason when
      its session ends. One task re-checks every watched session in one query every
      ``check_every`` seconds; logout in this process resolves it at once.
    """

    def __init__(
        self,
        *,
        max_age: int,
        check_every: float = 2.0,
        cache_ttl: float = 900.0,
        max_cached: int = 10_000,
    ) -> None:
        self.max_age = max_age
        self.check_every = check_every
        self.cache_ttl = cache_ttl
        self._max_cached = max_cached
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._revoked: OrderedDict[str, None] = OrderedDict()
        self._watched: dict[str, set[asyncio.Future[str]]] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._database_down = False
        self.logins = 0
        self.login_failures = 0
        self.ended: Counter[str] = Counter()
        self.websockets_closed = 0

    # -- checking

    async def staff_for(self, token: str | None, factory: sessionmaker[Session]) -> StaffOut | None:
        """The staff member this token's live session belongs to, or None.

        Raises SQLAlchemyError when the database cannot say (the caller decides).
        """
        if not token or len(token) > _MAX_TOKEN:
            return None
        hashed = token_hash(token)
        if hashed in self._revoked:
            return None
        states = await run_in_threadpool(_check, factory, [hashed], _now(), touch=True)
        state = states.get(hashed)
        if state is None:
            return None
        if not state.live:
            self._note_ended(state)
            return None
        info = _info(state.staff)
        self.remember(hashed, info, state.expires_at)
        return info

    def cached_staff(self, token: str | None) -> StaffOut | None:
        """The staff member of a session the database said was live within ``cache_ttl``
        and that has not expired or been revoked since: for ``/ws`` while it is down."""
        if not token or len(token) > _MAX_TOKEN:
            return None
        hashed = token_hash(token)
        known = self._known.get(hashed)
        if known is None or hashed in self._revoked:
            return None
        if known.expires_at <= _now() or time.monotonic() - known.checked_at > self.cache_ttl:
            return None
        return known.staff

    def remember(self, hashed: str, staff: StaffOut, expires_at: dt.datetime) -> None:
        self._known[hashed] = _Known(staff, expires_at, time.monotonic())
        self._known.move_to_end(hashed)
        while len(self._known) > self._max_cached:
            self._known.popitem(last=False)

    def _note_ended(self, state: SessionState) -> None:
        """Count and log a session this process ended, or learnt had ended."""
        reason = state.end_reason or "ended"
        if state.newly_ended or self._known.pop(state.token_hash, None) is not None:
            self.ended[reason] += 1
            log.info("session of staff %s ended: %s", state.staff.login, reason)
        self._end_watched(state.token_hash, reason)

    # -- ending

    async def end(self, token: str | None, factory: sessionmaker[Session]) -> None:
        """Logout: the session ends here at once, then in the database."""
        if not token or len(token) > _MAX_TOKEN:
            return
        hashed = token_hash(token)
        known = self._known.pop(hashed, None)
        self._revoked[hashed] = None
        while len(self._revoked) > self._max_cached:
            self._revoked.popitem(last=False)
        self._end_watched(hashed, "logout")
        ended = await run_in_threadpool(_end, factory, hashed, _now())
        if ended:
            self.ended["logout"] += 1
            who = known.staff.login if known else "?"
            log.info("session of staff %s ended: logout", who)

    # -- watching open WebSockets

    def watch(self, token: str, factory: sessionmaker[Session]) -> asyncio.Future[str]:
        """A future that resolves with the reason when this token's session ends."""
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._watched.setdefault(token_hash(token), set()).add(ended)
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.ensure_future(self._watch_loop(factory))
        return ended

    def unwatch(self, token: str, ended: asyncio.Future[str]) -> None:
        hashed = token_hash(token)
        futures = self._watched.get(hashed)
        if futures is not None:
            futures.discard(ended)
            if not futures:
                del self._watched[hashed]
        ended.cancel()

    def _end_watched(self, hashed: str, reason: str) -> None:
        for ended in self._watched.pop(hashed, set()):
            if not ended.done():
                ended.set_result(reason)

    async def _watch_loop(self, factory: sessionmaker[Session]) -> None:
        """Re-check every watched session each ``check_every`` seconds while any is open."""
        while self._watched:
            await asyncio.sleep(self.check_every)
            hashes = list(self._watched)
            if not hashes:
                break
            now = _now()
            try:
                states = await asyncio.to_thread(_check, factory, hashes, now, touch=False)
            except SQLAlchemyError as exc:
                if not self._database_down:
                    log.warning(
                        "open WebSockets keep their sessions while the database is down: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                self._database_down = True
                # Expiry needs no database: a session past its end is over regardless.
                for hashed in hashes:
                    known = self._known.get(hashed)
                    if known is not None and known.expires_at <= now:
                        self._known.pop(hashed, None)
                        self.ended["expired"] += 1
                        log.info("session of staff %s ended: expired", known.staff.login)
                        self._end_watched(hashed, "expired")
                continue
            if self._database_down:
                log.info("session checks work again: the database answers")
                self._database_down = False
            for hashed in hashes:
                state = states.get(hashed)
                if state is None:  # the row is gone (its staff member was deleted)
                    self._known.pop(hashed, None)
                    self._end_watched(hashed, "ended")
                elif not state.live:
                    self._note_ended(state)
                else:
                    self.remember(hashed, _info(state.staff), state.expires_at)

    def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()


def _end(factory: sessionmaker[Session], hashed: str, now: dt.datetime) -> bool:
    with factory() as session:
        ended = end_session(session, hashed, now=now, reason="logout")
        session.commit()
        return ended


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
async def logout(request: Request) -> Response:
    """Ends the session on the server (its WebSockets close) and clears the cookie."""
    web = get_web(request)
    await web.sessions.end(request.cookies.get(COOKIE_NAME), web.services.session_factory)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=web.config.cookie_secure
    )
    return response


CurrentStaff = Depends(current_staff)
