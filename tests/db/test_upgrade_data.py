"""An office's data written under the first schema (0001) survives every migration to head.

The rows go in with plain SQL matching 0001's tables (what a database of the first
release holds), then ``upgrade head`` runs, and every row is read back through the
models: the same values, the new columns at their defaults, and the customers findable
by search (migration 0006 fills the search columns). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, select, text

from db.engine import alembic_config, make_engine, make_session_factory
from db.models import Call, Customer, CustomerPhone, Note, Staff, Transaction
from db.search import search_customers
from tests.fixtures_db import PostgresSchema

UTC = dt.UTC
T0 = dt.datetime(2025, 3, 1, 1, 2, 3, 456000, tzinfo=UTC)
T1 = dt.datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC)
CALL_ID = "c" * 32


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database with no tables yet."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'first-release.db'}")
        try:
            yield engine
        finally:
            engine.dispose()
        return
    schema = PostgresSchema()
    try:
        engine = make_engine(schema.create())
        try:
            yield engine
        finally:
            engine.dispose()
    finally:
        schema.drop()


def _upgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _insert(connection: Connection, table: str, **values: Any) -> None:
    """One row, its times and dates as the first release stored them: on SQLite naive
    UTC text (db.models.UTCDateTime) and ISO dates, on PostgreSQL the values themselves."""
    sqlite = connection.dialect.name == "sqlite"

    def stored(value: Any) -> Any:
        if sqlite and isinstance(value, dt.datetime):
            return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        if sqlite and isinstance(value, dt.date):
            return value.isoformat()
        return value

    names = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    connection.execute(
        text(f"INSERT INTO {table} ({names}) VALUES ({marks})"),
        {name: stored(value) for name, value in values.items()},
    )


def _write_first_release_data(engine: Engine) -> None:
    stamps = {"created_at": T0, "updated_at": T1}
    with engine.begin() as c:
        _insert(
            c, "staff", id=1, login="sato", name="佐藤 健", furigana="さとう けん",
            extension="203", role="staff", password_hash="$argon2id$old", active=True, **stamps,
        )  # fmt: skip
        _insert(
            c, "customers", id=1, name="山田 太郎", furigana="ヤマダ タロウ",
            company="山田商店", rank="A", tags='["リピーター", "紹介元"]',
            preferences="お茶は緑茶", memo="駐車は家の前に一台分", birthday=dt.date(1956, 4, 3),
            assigned_staff_id=1, deleted_at=None, **stamps,
        )  # fmt: skip
        _insert(
            c, "customers", id=2, name="削除 済子", furigana="さくじょ すみこ", company=None,
            rank=None, tags="[]", preferences=None, memo=None, birthday=None,
            assigned_staff_id=None, deleted_at=T1, **stamps,
        )  # fmt: skip
        for pid, cid, e164, label, owner, raw, deleted in (
            (1, 1, "+81312345678", "自宅", None, "03-1234-5678", None),
            (2, 1, "+819012345678", "携帯", "山田 花子", "090-1234-5678", None),
            (3, 1, "+81611112222", "旧店舗", None, "06-1111-2222", T1),
            (4, 2, "+81455556666", "自宅", None, "045-555-6666", None),
        ):
            _insert(
                c, "customer_phones", id=pid, customer_id=cid, e164=e164, label=label,
                owner_name=owner, raw=raw, deleted_at=deleted, **stamps,
            )  # fmt: skip
        _insert(
            c, "transactions", id=1, customer_id=1, date=dt.date(2025, 2, 14),
            title="雨漏り修繕", amount_yen=58_000, staff_id=1, memo="2階北側", deleted_at=None,
            **stamps,
        )  # fmt: skip
        _insert(
            c, "calls", id=CALL_ID, sip_call_id="abc@pbx", caller_e164="+81312345678",
            caller_raw="0312345678", display_name="ﾔﾏﾀﾞ", withheld=None,
            dialed_e164="+81335550100", started_at=T0, ended_at=T0 + dt.timedelta(seconds=25),
            state="ended", outcome="answered_elsewhere", answered_by="203", customer_id=1,
            **stamps,
        )  # fmt: skip
        _insert(
            c, "notes", id=1, customer_id=1, staff_id=1, body="見積を送付。", call_id=CALL_ID,
            deleted_at=None, **stamps,
        )  # fmt: skip


def test_first_release_data_survives_every_migration(empty_engine: Engine) -> None:
    _upgrade(empty_engine, "0001")
    _write_first_release_data(empty_engine)
    _upgrade(empty_engine, "head")
    with empty_engine.connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0006"

    with make_session_factory(empty_engine)() as session:
        staff = session.scalars(select(Staff)).one()
        assert (staff.id, staff.login, staff.name, staff.furigana, staff.extension) == (
            1, "sato", "佐藤 健", "さとう けん", "203",
        )  # fmt: skip
        assert (staff.role, staff.password_hash, staff.active) == ("staff", "$argon2id$old", True)
        assert (staff.created_at, staff.updated_at) == (T0, T1)

        yamada, deleted = session.scalars(select(Customer).order_by(Customer.id)).all()
        assert (yamada.name, yamada.furigana, yamada.company, yamada.rank) == (
            "山田 太郎", "ヤマダ タロウ", "山田商店", "A",
        )  # fmt: skip
        assert yamada.tags == ["リピーター", "紹介元"]
        assert (yamada.preferences, yamada.memo) == ("お茶は緑茶", "駐車は家の前に一台分")
        assert (yamada.birthday, yamada.assigned_staff_id) == (dt.date(1956, 4, 3), 1)
        assert (yamada.created_at, yamada.updated_at, yamada.deleted_at) == (T0, T1, None)
        assert deleted.deleted_at == T1 and deleted.tags == []
        # Columns added since 0001 start empty; the search columns are filled.
        for added in (
            "code", "honorific", "department", "postal_code", "address", "email",
            "contact_hours", "next_follow_up_on",
        ):  # fmt: skip
            assert getattr(yamada, added) is None, added
        assert yamada.search_text == "山田太郎\x1fやまだたろう\x1f山田商店"
        assert yamada.search_digits == " 0312345678 81312345678 09012345678 819012345678 "

        phones = session.scalars(select(CustomerPhone).order_by(CustomerPhone.id)).all()
        assert [
            (p.id, p.customer_id, p.e164, p.label, p.owner_name, p.raw, p.deleted_at)
            for p in phones
        ] == [
            (1, 1, "+81312345678", "自宅", None, "03-1234-5678", None),
            (2, 1, "+819012345678", "携帯", "山田 花子", "090-1234-5678", None),
            (3, 1, "+81611112222", "旧店舗", None, "06-1111-2222", T1),
            (4, 2, "+81455556666", "自宅", None, "045-555-6666", None),
        ]
        assert {(p.created_at, p.updated_at) for p in phones} == {(T0, T1)}

        deal = session.scalars(select(Transaction)).one()
        assert (deal.customer_id, deal.date, deal.title, deal.amount_yen) == (
            1, dt.date(2025, 2, 14), "雨漏り修繕", 58_000,
        )  # fmt: skip
        assert (deal.staff_id, deal.memo, deal.deleted_at) == (1, "2階北側", None)

        call = session.scalars(select(Call)).one()
        assert (call.id, call.sip_call_id, call.caller_e164, call.caller_raw) == (
            CALL_ID, "abc@pbx", "+81312345678", "0312345678",
        )  # fmt: skip
        assert (call.display_name, call.withheld, call.dialed_e164) == (
            "ﾔﾏﾀﾞ", None, "+81335550100",
        )  # fmt: skip
        assert (call.started_at, call.ended_at) == (T0, T0 + dt.timedelta(seconds=25))
        assert (call.state, call.outcome, call.answered_by, call.customer_id) == (
            "ended", "answered_elsewhere", "203", 1,
        )  # fmt: skip
        for added in (
            "answered_staff_id", "answered_at", "answered_how", "talk_seconds",
            "missed_status", "missed_resolved_by", "missed_resolved_at", "missed_note",
            "handover_from_staff_id", "handover_to_staff_id", "handover_to_extension",
            "handover_state", "handover_note", "routed_to", "routed_staff_id", "routing_reason",
        ):  # fmt: skip
            assert getattr(call, added) is None, added

        note = session.scalars(select(Note)).one()
        assert (note.customer_id, note.staff_id, note.body, note.call_id) == (
            1, 1, "見積を送付。", CALL_ID,
        )  # fmt: skip
        assert (note.created_at, note.updated_at, note.deleted_at) == (T0, T1, None)
        # Notes of the first release were all written after a call.
        assert (note.kind, note.tags, note.idempotency_key, note.follow_up_on) == (
            "call", [], None, None,
        )  # fmt: skip
        assert (note.follow_up_done_at, note.follow_up_done_by) == (None, None)

        # Findable by search at once: kana in any script, any spelling of a live number;
        # not by the deleted phone, and the deleted customer not at all.
        for query in ("やまだ", "ﾔﾏﾀﾞ ﾀﾛｳ", "山田商店", "1234-5678", "+81 90 1234"):
            hits, _ = search_customers(session, query, limit=20)
            assert [hit["id"] for hit in hits] == [1], query
        for query in ("06-1111", "さくじょ", "045-555"):
            assert search_customers(session, query, limit=20) == ([], False), query
