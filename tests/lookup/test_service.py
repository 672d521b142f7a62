"""CallerLookup against a real database (SQLite file and PostgreSQL schema)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from db.calls import record_call_started
from db.demo import seed_demo
from db.engine import make_engine, make_session_factory, migrate
from db.models import Base, CustomerPhone
from lookup.card import CallerCard, CardStatus, DegradedReason
from lookup.service import CallerLookup
from tests.fixtures_db import (
    Database,
    add_customer,
    add_note,
    add_staff,
    add_transaction,
    sqlite_locked,
)

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = dt.datetime(2026, 11, 22, 10, 31, 5, tzinfo=TOKYO)
TODAY = NOW.date()


def call(
    db: Database, number: str | None, at: dt.datetime, *, customer_id: int | None = None
) -> None:
    with db.session_factory() as session:
        record_call_started(
            session,
            id=uuid.uuid4().hex,
            sip_call_id=uuid.uuid4().hex,
            caller_e164=number,
            caller_raw=number,
            display_name=None,
            withheld=None,
            dialed_e164=None,
            started_at=at,
            customer_id=None,
        )
        session.commit()


def test_single_customer_with_staff(database: Database) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        yamada = add_customer(
            session,
            "山田 太郎",
            ("+81312345678", "自宅"),
            staff=sato,
            furigana="やまだ たろう",
            rank="A",
            tags=["リピーター"],
            preferences="お茶は緑茶",
            birthday=dt.date(1956, 11, 22),
        )
        add_transaction(session, yamada, TODAY - dt.timedelta(days=152), "雨漏り修繕", 58_000)
        add_note(session, yamada, NOW - dt.timedelta(days=10), "点検済み", staff=sato)
        session.commit()
    card = CallerLookup(database.session_factory).card_for_number("03-1234-5678", now=NOW)
    assert card.status is CardStatus.MATCHED
    assert (card.number, card.national, card.raw_number) == (
        "+81312345678",
        "03-1234-5678",
        "03-1234-5678",
    )
    [customer] = card.customers
    assert (customer.name, customer.furigana, customer.rank) == ("山田 太郎", "やまだ たろう", "A")
    assert customer.tags == ["リピーター"] and customer.preferences == "お茶は緑茶"
    assert customer.phone_label == "自宅"
    assert customer.assigned_staff is not None
    assert (customer.assigned_staff.name, customer.assigned_staff.extension) == ("佐藤 健", "203")
    assert [(t.title, t.amount) for t in customer.transactions] == [("雨漏り修繕", 58_000)]
    assert [(n.body, n.staff_name) for n in customer.notes] == [("点検済み", "佐藤 健")]
    assert customer.notes[0].at == NOW - dt.timedelta(days=10)
    assert customer.notes[0].at.utcoffset() == dt.timedelta(hours=9)  # shown in JST
    assert customer.days_since_contact == 10
    assert customer.birthday_today is True
    wire = json.loads(card.model_dump_json())
    assert wire["customers"][0]["assigned_staff"]["extension"] == "203"


def test_history_is_newest_first_and_limited(database: Database) -> None:
    with database.session_factory() as session:
        busy = add_customer(session, "池田 剛", ("+819088889999", "携帯"))
        other = add_customer(session, "池田 花", ("+819088889999", "携帯"))
        for i in range(8):
            add_transaction(session, busy, TODAY - dt.timedelta(days=100 - i * 10), f"工事{i}")
            add_note(session, busy, NOW - dt.timedelta(days=50 - i), f"メモ{i}")
        add_transaction(session, other, TODAY - dt.timedelta(days=1), "他の人の工事")
        deleted = add_note(session, busy, NOW - dt.timedelta(hours=1), "消したメモ")
        deleted.deleted_at = NOW
        session.commit()
    card = CallerLookup(database.session_factory).card_for_number("090-8888-9999", now=NOW)
    assert [c.name for c in card.customers] == ["池田 剛", "池田 花"]
    busy_card, other_card = card.customers
    assert [t.title for t in busy_card.transactions] == [f"工事{i}" for i in (7, 6, 5, 4, 3)]
    assert [n.body for n in busy_card.notes] == [f"メモ{i}" for i in (7, 6, 5, 4, 3)]
    assert [t.title for t in other_card.transactions] == ["他の人の工事"]
    assert other_card.notes == []
    # The latest contact is the newest transaction (30 days), not the newest note (43).
    assert busy_card.days_since_contact == 30
    assert other_card.days_since_contact == 1
    three = CallerLookup(database.session_factory, history=3).card_for_number(
        "09088889999", now=NOW
    )
    assert [t.title for t in three.customers[0].transactions] == ["工事7", "工事6", "工事5"]


def test_the_card_names_who_else_handled_the_customer_lately(database: Database) -> None:
    """The last notes' writers, newest first, each once, without the 担当者 and without
    staff who left: whom to name when the 担当者 cannot take the call."""
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        suzuki = add_staff(session, "鈴木 美咲", "204", "suzuki")
        takahashi = add_staff(session, "高橋 誠", "201", "takahashi")
        gone = add_staff(session, "田中 一郎", "205", "tanaka")
        gone.active = False
        yamada = add_customer(session, "山田 太郎", ("+81312345678", "自宅"), staff=sato)
        for days, writer in ((1, gone), (2, sato), (3, takahashi), (4, suzuki), (5, takahashi)):
            add_note(session, yamada, NOW - dt.timedelta(days=days), "対応", staff=writer)
        session.commit()
        ids = {s.name: s.id for s in (sato, suzuki, takahashi)}
    card = CallerLookup(database.session_factory).card_for_number("0312345678", now=NOW)
    [customer] = card.customers
    assert [(s.id, s.name, s.extension) for s in customer.recent_staff] == [
        (ids["高橋 誠"], "高橋 誠", "201"),
        (ids["鈴木 美咲"], "鈴木 美咲", "204"),
    ]


def test_shared_family_landline(database: Database) -> None:
    with database.session_factory() as session:
        suzuki = add_staff(session, "鈴木 美咲", "204", "suzuki")
        add_customer(session, "田中 一郎", ("+81451234567", "自宅"), staff=suzuki)
        add_customer(
            session, "田中 和子", ("+81451234567", "自宅", "田中 一郎"), ("+818023456789", "携帯")
        )
        session.commit()
    lookup = CallerLookup(database.session_factory)
    card = lookup.card_for_number("045-123-4567", now=NOW)
    assert card.status is CardStatus.MATCHED
    assert [(c.name, c.phone_owner) for c in card.customers] == [
        ("田中 一郎", None),
        ("田中 和子", "田中 一郎"),
    ]
    assert card.customers[1].assigned_staff is None
    mobile = lookup.card_for_number("080-2345-6789", now=NOW)
    assert [c.name for c in mobile.customers] == ["田中 和子"]


def test_company_switchboard(database: Database) -> None:
    with database.session_factory() as session:
        for name in ("木村 直樹", "林 由美", "森 拓也"):
            add_customer(session, name, ("+81355550100", "代表"), company="株式会社 青葉不動産")
        session.commit()
    card = CallerLookup(database.session_factory).card_for_number("0355550100", now=NOW)
    assert [c.name for c in card.customers] == ["木村 直樹", "林 由美", "森 拓也"]
    assert {c.company for c in card.customers} == {"株式会社 青葉不動産"}
    assert {c.phone_label for c in card.customers} == {"代表"}


def test_soft_deleted_phone_and_customer_are_not_matched(database: Database) -> None:
    with database.session_factory() as session:
        moved = add_customer(session, "引越 済", ("+81312345678", "旧自宅"))
        gone = add_customer(session, "削除 済", ("+81312345678", "自宅"))
        session.commit()
        session.query(CustomerPhone).filter_by(customer_id=moved.id).update({"deleted_at": NOW})
        gone.deleted_at = NOW
        session.commit()
    card = CallerLookup(database.session_factory).card_for_number("0312345678", now=NOW)
    assert card.status is CardStatus.UNKNOWN
    assert card.customers == []


def test_unknown_number_counts_previous_calls(database: Database) -> None:
    for days in (30, 2):
        call(database, "+819099990000", NOW - dt.timedelta(days=days))
    call(database, "+819099990000", NOW)  # the ringing call itself: not "previous"
    call(database, "+819011110000", NOW - dt.timedelta(days=1))  # another number
    card = CallerLookup(database.session_factory).card_for_number("090-9999-0000", now=NOW)
    assert card.status is CardStatus.UNKNOWN
    assert card.previous_calls == 2
    assert card.last_call_at == NOW - dt.timedelta(days=2)


def test_calls_count_as_contact(database: Database) -> None:
    with database.session_factory() as session:
        one = add_customer(session, "伊藤 修", ("+81482345678", "自宅"))
        session.commit()
    call(database, "+81482345678", NOW - dt.timedelta(days=3))
    card = CallerLookup(database.session_factory).card_for_number("048-234-5678", now=NOW)
    assert card.previous_calls == 1
    assert card.customers[0].id == one.id
    assert card.customers[0].days_since_contact == 3


@pytest.mark.parametrize(
    ("raw", "withheld", "status", "national"),
    [
        (None, "anonymous", CardStatus.WITHHELD, None),
        ("0312345678", "payphone", CardStatus.WITHHELD, None),  # a reason wins over a number
        (None, None, CardStatus.WITHHELD, None),
        ("203", None, CardStatus.INTERNAL, "203"),
        ("abc", None, CardStatus.INVALID, None),
        ("12345", None, CardStatus.INVALID, None),
    ],
)
@pytest.mark.asyncio
async def test_cards_without_a_customer_number(
    database: Database,
    raw: str | None,
    withheld: str | None,
    status: CardStatus,
    national: str | None,
) -> None:
    lookup = CallerLookup(database.session_factory)
    for card in (
        lookup.card_for_number(raw, withheld=withheld, now=NOW),
        await card_of(lookup, raw, withheld=withheld, now=NOW),
    ):
        assert card.status is status
        assert card.number is None and card.national == national and card.raw_number == raw
        assert card.customers == [] and card.previous_calls == 0


@pytest.mark.asyncio
async def test_card_for_matches_like_card_for_number(database: Database) -> None:
    with database.session_factory() as session:
        add_customer(session, "山田 太郎", ("+81312345678", "自宅"))
        session.commit()
    card = await card_of(CallerLookup(database.session_factory), "0312345678", now=NOW)
    assert card.status is CardStatus.MATCHED and card.customers[0].name == "山田 太郎"


async def card_of(lookup: CallerLookup, raw: str | None, **kwargs: Any) -> CallerCard:
    """The card ``card_for`` pops with, for a raw number normalised as the call path does."""
    return (await lookup.card_for(lookup.numbering.normalise(raw), **kwargs)).card


# --- the deadline -----------------------------------------------------------------------


@contextlib.contextmanager
def database_locked(database: Database) -> Iterator[threading.Event]:
    """Another connection holds a lock that blocks the lookup's reads until the
    yielded event is set (or the block ends)."""
    if database.backend == "sqlite":
        database.engine.dispose()  # the lock needs every other connection closed
        with sqlite_locked(database.url.removeprefix("sqlite:///")) as release:
            yield release
        return
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        engine = make_engine(database.url)
        with engine.connect() as connection:
            connection.execute(text("LOCK TABLE customer_phones IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(30)
            connection.rollback()
        engine.dispose()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10), "could not take the lock"
        yield release
    finally:
        release.set()
        holder.join(30)


@pytest.mark.asyncio
async def test_locked_database_gives_a_degraded_card_in_time(database: Database) -> None:
    with database_locked(database):
        lookup = CallerLookup(database.session_factory, timeout=0.2)
        card = await asyncio.wait_for(card_of(lookup, "03-1234-5678", now=NOW), 10)
        assert card.status is CardStatus.DEGRADED
        assert (card.number, card.national, card.raw_number) == (
            "+81312345678",
            "03-1234-5678",
            "03-1234-5678",
        )
        assert card.degraded_reason is DegradedReason.TIMEOUT
        assert card.message == "lookup timed out after 200 ms"
        assert card.customers == []
    # Once the lock is gone, lookups work again.
    card = await card_of(CallerLookup(database.session_factory, timeout=10), "0312345678", now=NOW)
    assert card.status is CardStatus.UNKNOWN


@pytest.mark.asyncio
async def test_a_lookup_past_its_deadline_hands_over_its_card_late(database: Database) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        add_customer(session, "山田 太郎", ("+81312345678", "自宅"), staff=sato)
        session.commit()
    lookup = CallerLookup(database.session_factory, timeout=0.2)
    number = lookup.numbering.normalise("03-1234-5678")
    with database_locked(database) as release:
        result = await asyncio.wait_for(lookup.card_for(number, now=NOW), 10)
        assert result.card.status is CardStatus.DEGRADED
        assert result.late is not None
        assert not result.late.done()  # nothing before the database answers
        release.set()
        # The read that missed the deadline finishes once the lock is gone.
        found = await asyncio.wait_for(result.late, 10)
    assert found.status is CardStatus.MATCHED
    [customer] = found.customers
    assert customer.name == "山田 太郎"
    assert customer.assigned_staff is not None and customer.assigned_staff.extension == "203"
    assert lookup.timeouts == 1


@pytest.mark.asyncio
async def test_a_lookup_on_time_has_nothing_to_follow(database: Database) -> None:
    lookup = CallerLookup(database.session_factory, timeout=10)
    result = await lookup.card_for(lookup.numbering.normalise("03-1234-5678"), now=NOW)
    assert result.card.status is CardStatus.UNKNOWN
    assert result.late is None and lookup.timeouts == 0


@pytest.mark.asyncio
async def test_database_error_gives_a_degraded_card(database: Database) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("DROP TABLE note_revisions"))  # it refers to notes
        connection.execute(text("DROP TABLE notes"))
        connection.execute(text("DROP TABLE customer_phones"))
    lookup = CallerLookup(database.session_factory)
    card = await card_of(lookup, "03-1234-5678", now=NOW)
    assert card.status is CardStatus.DEGRADED
    assert card.number == "+81312345678"
    assert card.degraded_reason is DegradedReason.DATABASE
    assert card.message is not None and card.message.startswith("database unavailable: ")
    assert "customer_phones" in card.message
    # The sync form lets the error through, for callers that handle it themselves.
    with pytest.raises(DBAPIError, match="customer_phones"):
        lookup.card_for_number("03-1234-5678", now=NOW)
    if database.backend == "postgres":
        # The schema is shared by the run's PostgreSQL tests: put the tables back.
        with database.engine.begin() as connection:
            Base.metadata.create_all(connection)


@pytest.mark.asyncio
async def test_unreachable_database_gives_a_degraded_card() -> None:
    # A PostgreSQL URL on a port where nothing listens: connecting fails at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/nothing")
    try:
        lookup = CallerLookup(make_session_factory(engine), timeout=5)
        card = await card_of(lookup, "090-1234-5678", now=NOW)
    finally:
        engine.dispose()
    assert card.status is CardStatus.DEGRADED
    assert (card.number, card.national) == ("+819012345678", "090-1234-5678")
    assert card.degraded_reason is DegradedReason.DATABASE
    assert card.message is not None and card.message.startswith("database unavailable: ")


# --- the query path ---------------------------------------------------------------------


def test_every_statement_of_a_lookup_reads_through_an_index(tmp_path: Path) -> None:
    """SQLite's own plan for each statement a lookup runs: no table is scanned whole,
    so a lookup costs the same at 1,000 customers as at 1,000,000 (bench/)."""
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    engine = make_engine(url)
    migrate(engine)
    factory = make_session_factory(engine)
    with factory() as session:
        seed_demo(session, today=TODAY)
        session.commit()
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            statements.append((sql, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        # Yamada (one customer, transactions and notes), the shared switchboard (three
        # customers: the UNION ALL path), and an unknown number.
        for number in ("03-1234-5678", "03-5555-0100", "090-9999-0000"):
            CallerLookup(factory).card_for_number(number, now=NOW)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert len(statements) == 6 + 6 + 2
    tables = {"customer_phones", "customers", "staff", "transactions", "notes", "calls"}
    tables |= {"family_members"}  # the openers' query (6)
    # Each table is entered by an index (or the rowid) with an equality on its leading
    # column: "SEARCH calls USING COVERING INDEX ix_calls_caller_started (caller_e164=?
    # AND started_at<?)" is; a range on started_at alone, or a SCAN, is not.
    keyed = re.compile(r"SEARCH (\w+) USING (COVERING )?(INDEX \w+|INTEGER PRIMARY KEY) \(\w+=\?")
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        assert raw is not None
        for sql, params in statements:
            plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            for step in plan:
                words = step.split(" ")
                if len(words) > 1 and words[1] in tables:
                    assert keyed.match(step), f"{step!r} in the plan of\n{sql}\n{plan}"
    engine.dispose()
