"""Staff sessions (``db.sessions``) and the staff changes that end them, on a real database."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import func, select

from db.models import StaffSession
from db.sessions import (
    MAX_LIVE_PER_STAFF,
    check_session,
    end_session,
    start_session,
    token_hash,
)
from db.staff import create_staff, deactivate, set_password
from tests.fixtures_db import Database, add_staff

NOW = dt.datetime(2026, 11, 22, 1, 0, tzinfo=dt.UTC)


def test_a_session_is_found_by_its_token_and_stored_as_a_hash(database: Database) -> None:
    with database.session_factory() as session:
        staff = add_staff(session, "佐藤 健", "203", "sato")
        token, row = start_session(session, staff.id, now=NOW, max_age=3600)
        session.commit()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() == token_hash(token)
        assert token not in {row.token_hash}
        state = check_session(session, token, now=NOW + dt.timedelta(minutes=5))
        assert state is not None and state.live and state.staff.login == "sato"
        assert check_session(session, token + "x", now=NOW) is None


def test_expiry_ends_a_session_when_it_is_checked(database: Database) -> None:
    with database.session_factory() as session:
        staff = add_staff(session, "佐藤 健", "203", "sato")
        token, _ = start_session(session, staff.id, now=NOW, max_age=60)
        session.commit()
        state = check_session(session, token, now=NOW + dt.timedelta(seconds=61))
        assert state is not None and (state.end_reason, state.newly_ended) == ("expired", True)
        session.commit()
        again = check_session(session, token, now=NOW + dt.timedelta(seconds=62))
        assert again is not None and (again.end_reason, again.newly_ended) == ("expired", False)


def test_logout_ends_one_session(database: Database) -> None:
    with database.session_factory() as session:
        staff = add_staff(session, "佐藤 健", "203", "sato")
        first, _ = start_session(session, staff.id, now=NOW, max_age=3600)
        second, _ = start_session(session, staff.id, now=NOW, max_age=3600)
        assert end_session(session, token_hash(first), now=NOW, reason="logout")
        assert not end_session(session, token_hash(first), now=NOW, reason="logout")
        session.commit()
        ended = check_session(session, first, now=NOW)
        live = check_session(session, second, now=NOW)
        assert ended is not None and ended.end_reason == "logout"
        assert live is not None and live.live


def test_a_new_password_and_deactivation_end_every_session(database: Database) -> None:
    with database.session_factory() as session:
        sato = create_staff(session, login="sato", name="佐藤", password="old-password")
        kato = add_staff(session, "加藤", "204", "kato")
        tokens = [start_session(session, sato.id, now=NOW, max_age=3600)[0] for _ in range(3)]
        other, _ = start_session(session, kato.id, now=NOW, max_age=3600)
        session.commit()
        assert set_password(session, "sato", "new-password") is not None
        session.commit()
        later = NOW + dt.timedelta(seconds=1)
        reasons = {check_session(session, t, now=later).end_reason for t in tokens}  # type: ignore[union-attr]
        assert reasons == {"password"}
        assert check_session(session, other, now=later).live  # type: ignore[union-attr]
        assert deactivate(session, "kato") is not None
        session.commit()
        assert check_session(session, other, now=later).end_reason == "deactivated"  # type: ignore[union-attr]
        assert set_password(session, "nobody", "x" * 8) is None
        assert deactivate(session, "nobody") is None


def test_one_person_has_a_bounded_number_of_live_sessions(database: Database) -> None:
    with database.session_factory() as session:
        staff = add_staff(session, "佐藤 健", "203", "sato")
        tokens = [
            start_session(session, staff.id, now=NOW + dt.timedelta(seconds=i), max_age=3600)[0]
            for i in range(MAX_LIVE_PER_STAFF + 2)
        ]
        session.commit()
        live = session.scalar(
            select(func.count()).select_from(StaffSession).where(StaffSession.ended_at.is_(None))
        )
        assert live == MAX_LIVE_PER_STAFF
        oldest = check_session(session, tokens[0], now=NOW + dt.timedelta(minutes=1))
        newest = check_session(session, tokens[-1], now=NOW + dt.timedelta(minutes=1))
        assert oldest is not None and oldest.end_reason == "replaced"
        assert newest is not None and newest.live
        # Rows ended long ago are deleted at the next login.
        start_session(session, staff.id, now=NOW + dt.timedelta(days=40), max_age=3600)
        session.commit()
        assert session.scalar(select(func.count()).select_from(StaffSession)) == 1
