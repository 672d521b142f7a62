"""Staff accounts: creating them, checking a login's password, changing it, deactivating.

Owns the password hashing (argon2id via argon2-cffi's ``PasswordHasher``). A password
change or a deactivation ends every session of that person (``db.sessions``). Knows
nothing of HTTP or cookies; ``popup_ui.auth`` and the CLI call these.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Staff, StaffRole, utcnow
from db.sessions import end_staff_sessions

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
