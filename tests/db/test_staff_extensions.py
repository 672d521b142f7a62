"""The staff extensions callpop watches (db.staff.staff_extensions), on a real database."""

from __future__ import annotations

from db.staff import deactivate, staff_extensions
from tests.fixtures_db import Database, add_staff


def test_active_staff_extensions_each_once_in_order(database: Database) -> None:
    with database.session_factory() as session:
        add_staff(session, "佐藤", "203", "sato")
        add_staff(session, "鈴木", "201", "suzuki")
        add_staff(session, "高橋", "201", "takahashi")  # a shared desk phone
        add_staff(session, "田中", None, "tanaka")  # no phone of their own
        add_staff(session, "伊藤", "", "ito")
        add_staff(session, "渡辺", "202", "watanabe")
        session.commit()
        deactivate(session, "watanabe")
        session.commit()
    with database.session_factory() as session:
        assert staff_extensions(session) == ["201", "203"]
