"""The web side of the database's sessions: check, end, remember and watch them.

The cookie is an opaque random token and the database keeps its SHA-256
(``db.sessions``). :class:`SessionStore` checks a token on every request, ends it at
logout, keeps a short cache so ``/ws`` still opens while the database is down, and
closes the WebSockets of sessions that ended (logout, expiry, deactivation, a new
password). Knows nothing of HTTP routes or passwords.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from db.sessions import (
    SessionState,
    check_sessions,
    end_session,
    token_hash,
)
from popup_ui.schemas import StaffOut

log = logging.getLogger(__name__)
T = TypeVar("T")

# new_token() makes 43 characters; anything much longer is not ours
_MAX_TOKEN = 100


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _info(staff: Any) -> StaffOut:
    return StaffOut.model_validate(staff, from_attributes=True)


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
