"""The demo data set and the benchmark's bulk rows."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from db.customers import customer_detail
from db.demo import _PEOPLE, seed_bulk, seed_demo
from db.models import Customer, CustomerPhone
from db.staff import authenticate, create_staff
from lookup.card import CardStatus
from lookup.numbers import normalise
from lookup.service import CallerLookup
from tests.fixtures_db import Database

TOKYO = ZoneInfo("Asia/Tokyo")
TODAY = dt.date(2026, 11, 22)
NOW = dt.datetime(2026, 11, 22, 10, 0, tzinfo=TOKYO)


def test_showcase_number_pops_yamada_for_sato(database: Database) -> None:
    with database.session_factory() as session:
        info = seed_demo(session, today=TODAY)
        session.commit()
    assert info.customers >= 20
    card = CallerLookup(database.session_factory).card_for_number(info.showcase_number, now=NOW)
    assert card.status is CardStatus.MATCHED
    [yamada] = card.customers
    assert yamada.name == "山田 太郎" and yamada.furigana == "やまだ たろう"
    assert yamada.assigned_staff is not None
    assert (yamada.assigned_staff.name, yamada.assigned_staff.extension) == ("佐藤 健", "203")
    assert yamada.preferences is not None and "緑茶" in yamada.preferences
    newest = yamada.transactions[0]
    assert (newest.title, newest.amount) == ("雨漏り修繕", 58_000)
    assert 140 <= (TODAY - newest.date).days <= 160  # about five months ago
    assert card.previous_calls == 2


def test_demo_logins_and_shapes(database: Database) -> None:
    with database.session_factory() as session:
        info = seed_demo(session, today=TODAY)
        session.commit()
    accounts = {a.login: a for a in info.accounts}
    assert {(a.login, a.extension, a.role) for a in info.accounts} == {
        ("sato", "203", "staff"),
        ("suzuki", "204", "staff"),
        ("admin", "201", "admin"),
    }
    with database.session_factory() as session:
        for account in info.accounts:
            assert authenticate(session, account.login, account.password) is not None
            assert authenticate(session, account.login, account.password + "x") is None
        assert authenticate(session, info.login, info.password) is not None
        assert accounts[info.login].password == info.password
    lookup = CallerLookup(database.session_factory)
    family = lookup.card_for_number("045-123-4567", now=NOW)
    assert [c.name for c in family.customers] == ["田中 一郎", "田中 和子"]
    board = lookup.card_for_number("03-5555-0100", now=NOW)
    assert len(board.customers) >= 3 and {c.phone_label for c in board.customers} == {"代表"}
    unknown = lookup.card_for_number("090-9999-0000", now=NOW)
    assert unknown.status is CardStatus.UNKNOWN and unknown.previous_calls == 2
    with database.session_factory() as session:
        birthdays = session.scalars(select(Customer).where(Customer.birthday.is_not(None))).all()
        today = [c for c in birthdays if (c.birthday.month, c.birthday.day) == (11, 22)]  # type: ignore[union-attr]
        assert [c.name for c in today] == ["小林 さくら"]
        detail = customer_detail(session, today[0].id)
        assert detail is not None and detail["phones"][0]["number"] == "+819022223333"
    kobayashi = lookup.card_for_number("090-2222-3333", now=NOW).customers[0]
    assert kobayashi.birthday_today is True


def test_demo_numbers_are_what_normalise_makes() -> None:
    for person in _PEOPLE:
        for phone in person.phones:
            number = normalise(phone.raw)
            assert number.kind == "e164", phone.raw
            assert number.national == phone.raw  # written the way phonenumbers formats them


def test_seed_bulk(database: Database) -> None:
    with database.session_factory() as session:
        seed_bulk(session, 600, seed=3)
        # Ordinary inserts still work after the explicit-id bulk rows (PostgreSQL sequences).
        create_staff(session, login="bench", name="ベンチ", password="bench-pass")
        session.add(Customer(name="手入力"))
        session.commit()
        assert session.scalar(select(func.count()).select_from(Customer)) == 601
        numbers = session.scalars(select(CustomerPhone.e164)).all()
    assert len(numbers) == 600 + 200
    assert len(set(numbers)) == 600 + 200 - 3  # three families share a landline
    lookup = CallerLookup(database.session_factory)
    for e164 in numbers[:40]:
        national = "0" + e164[3:]
        assert normalise(national).e164 == e164
        assert lookup.card_for_number(national, now=NOW).status is CardStatus.MATCHED
