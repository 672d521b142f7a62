"""Staff login sessions: starting, checking and ending them (the ``sessions`` table).

Owns the session token: 32 random bytes as URL-safe text, handed to the browser once
and stored only as its SHA-256 (a token has 256 bits of entropy, so a plain hash is
enough: nothing to brute-force, and a leaked table opens no session). Every function
takes ``now`` (time is an argument) and leaves the commit to the caller. Knows nothing
of HTTP or cookies: ``popup_ui.auth`` calls these from worker threads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from db.models import Staff, StaffSession

EndReason = Literal["logout", "expired", "deactivated", "password", "replaced"]

# Bounds on the table: one person's live sessions (each browser that logs in is one;
# the oldest is ended past this), and how long ended rows are kept for the record.
MAX_LIVE_PER_STAFF = 50
KEEP_ENDED = dt.timedelta(days=30)
# last_seen is written at most this often per session: a read is not a write each time.
TOUCH_EVERY = dt.timedelta(seconds=60)
_CHUNK = 500  # bound parameters per IN (…) query


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionState:
    """One session as a check found it."""

    token_hash: str
    staff: Staff
    expires_at: dt.datetime
    end_reason: str | None  # None: live
    newly_ended: bool = False  # this check ended it (expired, or the account deactivated)

    @property
    def live(self) -> bool:
        return self.end_reason is None


def start_session(
    session: Session, staff_id: int, *, now: dt.datetime, max_age: float
) -> tuple[str, StaffSession]:
    """A new live session for ``staff_id``; returns the token for the cookie (flushed).

    Keeps the table bounded: this person's rows ended long ago are deleted, and past
    :data:`MAX_LIVE_PER_STAFF` live sessions the oldest are ended ("replaced").
    """
    cutoff = now - KEEP_ENDED
    session.execute(
        delete(StaffSession).where(
            StaffSession.staff_id == staff_id,
            or_(StaffSession.ended_at < cutoff, StaffSession.expires_at < cutoff),
        )
    )
    live = session.scalars(
        select(StaffSession.id)
        .where(
            StaffSession.staff_id == staff_id,
            StaffSession.ended_at.is_(None),
            StaffSession.expires_at > now,
        )
        .order_by(StaffSession.created_at.desc(), StaffSession.id.desc())
        .offset(MAX_LIVE_PER_STAFF - 1)
    ).all()
    if live:
        session.execute(
            update(StaffSession)
            .where(StaffSession.id.in_(live))
            .values(ended_at=now, end_reason="replaced")
        )
    token = new_token()
    row = StaffSession(
        token_hash=token_hash(token),
        staff_id=staff_id,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=max_age),
        last_seen=now,
    )
    session.add(row)
    session.flush()
    return token, row


def check_sessions(
    session: Session, hashes: Collection[str], *, now: dt.datetime, touch: bool = False
) -> dict[str, SessionState]:
    """The state of each session by token hash; unknown hashes are left out.

    A live session past ``expires_at`` is ended here as "expired", and one whose staff
    member is no longer active as "deactivated" (``newly_ended``): the caller commits.
    ``touch`` updates ``last_seen`` (at most once per :data:`TOUCH_EVERY`).
    """
    found: dict[str, SessionState] = {}
    wanted = list(dict.fromkeys(hashes))
    for start in range(0, len(wanted), _CHUNK):
        rows = session.execute(
            select(StaffSession, Staff)
            .join(Staff, Staff.id == StaffSession.staff_id)
            .where(StaffSession.token_hash.in_(wanted[start : start + _CHUNK]))
        ).all()
        for row, staff in rows:
            reason: str | None = row.end_reason or ("logout" if row.ended_at else None)
            newly = False
            if reason is None and row.expires_at <= now:
                reason, newly = "expired", True
            elif reason is None and not staff.active:
                reason, newly = "deactivated", True
            if newly:
                row.ended_at, row.end_reason = now, reason
            elif reason is None and touch and row.last_seen < now - TOUCH_EVERY:
                row.last_seen = now
            found[row.token_hash] = SessionState(
                token_hash=row.token_hash,
                staff=staff,
                expires_at=row.expires_at,
                end_reason=reason,
                newly_ended=newly,
            )
    return found


def check_session(
    session: Session, token: str, *, now: dt.datetime, touch: bool = True
) -> SessionState | None:
    """The state of the session this token opens, or None when there is none."""
    return check_sessions(session, [token_hash(token)], now=now, touch=touch).get(token_hash(token))


def end_session(session: Session, hashed: str, *, now: dt.datetime, reason: EndReason) -> bool:
    """End one live session by its token hash; False when it was not live."""
    result = session.execute(
        update(StaffSession)
        .where(StaffSession.token_hash == hashed, StaffSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    )
    return bool(getattr(result, "rowcount", 0))


def end_staff_sessions(
    session: Session, staff_id: int, *, now: dt.datetime, reason: EndReason
) -> int:
    """End every live session of one staff member; returns how many."""
    result = session.execute(
        update(StaffSession)
        .where(StaffSession.staff_id == staff_id, StaffSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    )
    return int(getattr(result, "rowcount", 0))
