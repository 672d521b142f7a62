"""Staff accounts (argon2) and the call log, on a real database."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.calls import close_interrupted_calls, record_call_ended, record_call_started
from db.models import Call, Staff
from db.staff import authenticate, create_staff, get_staff
from tests.fixtures_db import Database


def test_create_and_authenticate(database: Database) -> None:
    with database.session_factory() as session:
        staff = create_staff(
            session, login="sato", name="佐藤 健", password="correct horse", extension="203"
        )
        session.commit()
        assert staff.password_hash.startswith("$argon2id$")
        assert "correct horse" not in staff.password_hash
    with database.session_factory() as session:
        found = authenticate(session, "sato", "correct horse")
        assert found is not None and (found.name, found.extension, found.role) == (
            "佐藤 健",
            "203",
            "staff",
        )
        assert authenticate(session, "sato", "wrong horse") is None
        assert authenticate(session, "sato", "") is None
        assert authenticate(session, "nobody", "correct horse") is None
        assert get_staff(session, found.id) is not None
        assert get_staff(session, found.id + 100) is None


def test_inactive_staff_cannot_log_in(database: Database) -> None:
    with database.session_factory() as session:
        staff = create_staff(session, login="old", name="退職 者", password="pw-123456")
        staff.active = False
        session.commit()
        assert authenticate(session, "old", "pw-123456") is None


def test_login_is_unique_and_role_is_checked(database: Database) -> None:
    with database.session_factory() as session:
        create_staff(session, login="admin", name="高橋", password="x" * 8, role="admin")
        with pytest.raises(IntegrityError):
            create_staff(session, login="admin", name="別人", password="y" * 8)
        session.rollback()
        with pytest.raises(ValueError, match="role"):
            create_staff(session, login="r", name="r", password="z" * 8, role="boss")  # type: ignore[arg-type]
        session.rollback()
        assert session.scalar(select(Staff.login)) is None


def test_call_log(database: Database) -> None:
    jst = dt.timezone(dt.timedelta(hours=9))
    started = dt.datetime(2026, 11, 22, 10, 31, 5, tzinfo=jst)
    with database.session_factory() as session:
        record_call_started(
            session,
            id="a" * 32,
            sip_call_id="abc@pbx",
            caller_e164="+81312345678",
            caller_raw="0312345678",
            display_name="ヤマダ タロウ",
            withheld=None,
            dialed_e164="+81335550100",
            started_at=started,
            customer_id=None,
        )
        session.commit()
    with database.session_factory() as session:
        record_call_ended(
            session, id="a" * 32, ended_at=started + dt.timedelta(seconds=40), outcome="hangup"
        )
        record_call_ended(  # an unknown id is ignored
            session, id="b" * 32, ended_at=started, outcome="hangup"
        )
        session.commit()
    with database.session_factory() as session:
        row = session.get_one(Call, "a" * 32)
        assert (row.state, row.outcome, row.answered_by) == ("ended", "hangup", None)
        assert row.started_at == started and row.ended_at == started + dt.timedelta(seconds=40)
        assert (row.caller_e164, row.caller_raw, row.display_name) == (
            "+81312345678",
            "0312345678",
            "ヤマダ タロウ",
        )


def test_calls_left_open_by_a_crash_are_closed_as_interrupted(database: Database) -> None:
    jst = dt.timezone(dt.timedelta(hours=9))
    started = dt.datetime(2026, 11, 22, 10, 31, 5, tzinfo=jst)
    restart = started + dt.timedelta(minutes=3)
    with database.session_factory() as session:
        for call_id in ("r" * 32, "e" * 32):
            record_call_started(
                session,
                id=call_id,
                sip_call_id=f"{call_id}@pbx",
                caller_e164="+81312345678",
                caller_raw="0312345678",
                display_name=None,
                withheld=None,
                dialed_e164=None,
                started_at=started,
                customer_id=None,
            )
        record_call_ended(session, id="e" * 32, ended_at=started, outcome="abandoned")
        session.commit()
    with database.session_factory() as session:
        assert close_interrupted_calls(session, restart) == 1
        session.commit()
    with database.session_factory() as session:
        left = session.get_one(Call, "r" * 32)
        assert (left.state, left.outcome, left.ended_at) == ("ended", "interrupted", restart)
        ended = session.get_one(Call, "e" * 32)
        assert (ended.state, ended.outcome, ended.ended_at) == ("ended", "abandoned", started)
        assert close_interrupted_calls(session, restart) == 0  # nothing open any more
