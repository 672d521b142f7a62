"""Staff accounts: creating them, checking a login's password, changing it, deactivating.

Owns the password hashing (argon2id via argon2-cffi's ``PasswordHasher``). A password
change or a deactivation ends every session of that person (``db.sessions``). Knows
nothing of HTTP or cookies; ``popup_ui.auth`` and the CLI call these.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Staff, StaffRole, StaffSession, utcnow
from db.sessions import end_staff_sessions

# The shortest password an account may get (the CLI and the web both check it).
MIN_PASSWORD = 8

_hasher = PasswordHasher()

# Verified against when the login does not exist, so that an unknown login costs
# the same argon2 work as a wrong password and response times do not reveal which
# logins exist (OWASP Authentication Cheat Sheet, "Authentication Responses").
_DUMMY_HASH = _hasher.hash("callpop: no such login")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def create_staff(
    session: Session,
    *,
    login: str,
    name: str,
    password: str,
    extension: str | None = None,
    role: StaffRole = "staff",
    furigana: str | None = None,
) -> Staff:
    """Add a staff member (flushed, not committed; a taken login raises IntegrityError)."""
    if role not in ("admin", "staff"):
        raise ValueError(f"role must be 'admin' or 'staff', not {role!r}")
    staff = Staff(
        login=login,
        name=name,
        furigana=furigana,
        extension=extension,
        role=role,
        password_hash=hash_password(password),
        active=True,
    )
    session.add(staff)
    session.flush()
    return staff


def authenticate(session: Session, login: str, password: str) -> Staff | None:
    """The active staff member with this login and password, else None.

    A hash made with older argon2 parameters is replaced on success; the caller
    commits the session to keep it.
    """
    staff = session.scalar(select(Staff).where(Staff.login == login))
    if staff is None or not staff.active:
        _verify(_DUMMY_HASH, password)
        return None
    if not _verify(staff.password_hash, password):
        return None
    if _hasher.check_needs_rehash(staff.password_hash):
        staff.password_hash = hash_password(password)
    return staff


def set_password(session: Session, login: str, password: str) -> Staff | None:
    """Give ``login`` a new password and end all its sessions (flushed, not committed).

    None when there is no such login.
    """
    staff = session.scalar(select(Staff).where(Staff.login == login))
    if staff is None:
        return None
    staff.password_hash = hash_password(password)
    session.flush()
    end_staff_sessions(session, staff.id, now=utcnow(), reason="password")
    return staff


def deactivate(session: Session, login: str) -> Staff | None:
    """Stop ``login`` from logging in and end all its sessions (flushed, not committed).

    None when there is no such login.
    """
    staff = session.scalar(select(Staff).where(Staff.login == login))
    if staff is None:
        return None
    staff.active = False
    session.flush()
    end_staff_sessions(session, staff.id, now=utcnow(), reason="deactivated")
    return staff


def get_staff(session: Session, id: int) -> Staff | None:
    return session.get(Staff, id)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def staff_extensions(session: Session) -> list[str]:
    """The extensions of active staff members, each once, in order (for watching calls)."""
    rows = session.scalars(
        select(Staff.extension)
        .where(Staff.active.is_(True), Staff.extension.is_not(None), Staff.extension != "")
        .distinct()
        .order_by(Staff.extension)
    )
    return [extension for extension in rows if extension]


class LastAdmin(Exception):
    """The change would leave no active admin: nobody could manage accounts any more."""


@dataclass(frozen=True, slots=True)
class StaffChange:
    """Fields to change on an account; None leaves a field as it is."""

    name: str | None = None
    furigana: str | None = None
    extension: str | None = None
    role: StaffRole | None = None
    active: bool | None = None


def update_staff(session: Session, staff_id: int, change: StaffChange) -> Staff | None:
    """Apply ``change`` to one account (flushed, not committed); None when there is none.

    Deactivating ends every session of that person (as :func:`deactivate`). Raises
    :class:`LastAdmin` when the change would demote or deactivate the last active admin;
    the active admins are read ``FOR UPDATE`` (PostgreSQL), so two admins demoting each
    other at once cannot both succeed.
    """
    if change.role is not None and change.role not in ("admin", "staff"):
        raise ValueError(f"role must be 'admin' or 'staff', not {change.role!r}")
    staff = session.get(Staff, staff_id)
    if staff is None:
        return None
    stays_admin = (change.role or staff.role) == "admin" and (
        staff.active if change.active is None else change.active
    )
    if staff.role == "admin" and staff.active and not stays_admin:
        admins = session.scalars(
            select(Staff.id).where(Staff.role == "admin", Staff.active.is_(True)).with_for_update()
        ).all()
        if set(admins) <= {staff.id}:
            raise LastAdmin(staff.login)
    if change.name is not None:
        staff.name = change.name
    if change.furigana is not None:  # "" clears it
        staff.furigana = change.furigana or None
    if change.extension is not None:  # "" clears it
        staff.extension = change.extension or None
    if change.role is not None:
        staff.role = change.role
    if change.active is not None and change.active != staff.active:
        staff.active = change.active
        session.flush()
        if not change.active:
            end_staff_sessions(session, staff.id, now=utcnow(), reason="deactivated")
    session.flush()
    return staff


def change_own_password(
    session: Session, staff_id: int, current: str, new: str, *, keep_token_hash: str
) -> bool:
    """A staff member's own password change: False when ``current`` is wrong.

    Ends every other session of theirs ("password"), keeps the one that asked
    (flushed, not committed).
    """
    staff = session.get(Staff, staff_id)
    if staff is None or not staff.active or not _verify(staff.password_hash, current):
        return False
    staff.password_hash = hash_password(new)
    session.execute(
        update(StaffSession)
        .where(
            StaffSession.staff_id == staff.id,
            StaffSession.ended_at.is_(None),
            StaffSession.token_hash != keep_token_hash,
        )
        .values(ended_at=utcnow(), end_reason="password")
    )
    session.flush()
    return True


def last_login(session: Session, staff_id: int) -> dt.datetime | None:
    """When this person's newest session began (see :func:`staff_accounts`)."""
    return session.scalar(
        select(func.max(StaffSession.created_at)).where(StaffSession.staff_id == staff_id)
    )


def staff_accounts(session: Session, *, limit: int) -> list[tuple[Staff, dt.datetime | None]]:
    """Up to ``limit`` accounts (active first, then by login) with each one's last login.

    The last login is the newest session row's start: rows are kept 30 days after they
    end (``db.sessions.KEEP_ENDED``), so an older login shows as None.
    """
    last = (
        select(StaffSession.staff_id, func.max(StaffSession.created_at).label("last_login"))
        .group_by(StaffSession.staff_id)
        .subquery()
    )
    rows = session.execute(
        select(Staff, last.c.last_login)
        .outerjoin(last, last.c.staff_id == Staff.id)
        .order_by(Staff.active.desc(), Staff.login)
        .limit(limit)
    ).all()
    return [(staff, last_login) for staff, last_login in rows]
