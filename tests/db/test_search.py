"""Search-as-you-type (db.search) on real SQLite and PostgreSQL: kana in any script, numbers
in any spelling, every word must match, deleted records never found, the search columns
following ORM edits, wildcards meaning themselves, and the limit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from db.engine import make_engine, make_session_factory, migrate
from db.models import Customer, CustomerPhone
from db.search import parse_query, search_customers
from tests.fixtures_db import Database, add_customer, add_staff


def _names(session: Session, query: str, limit: int = 20) -> list[str]:
    hits, _truncated = search_customers(session, query, limit=limit)
    return [hit["name"] for hit in hits]


def _office(session: Session) -> dict[str, Customer]:
    sato = add_staff(session, "佐藤 健", "203", "sato")
    customers = {
        "yamada": add_customer(
            session,
            "山田 太郎",
            ("+81312345678", "自宅"),
            ("+819012345678", "携帯"),
            staff=sato,
            furigana="やまだ たろう",
            honorific="様",
            code="C-1001",
            rank="A",
            tags=["リピーター"],
        ),
        "yamada_h": add_customer(
            session, "山田 花子", ("+819087654321", "携帯"), furigana="ヤマダ ハナコ"
        ),
        "yamaguchi": add_customer(
            session, "山口 奈々", ("+817023456789", "携帯"), furigana="やまぐち なな"
        ),
        "kimura": add_customer(
            session,
            "木村 直樹",
            ("+81355550100", "代表"),
            furigana="きむら なおき",
            company="株式会社 青葉不動産",
            department="管理部",
            email="Kimura@Aoba.example",
        ),
    }
    session.commit()
    return customers


def test_kana_in_hiragana_katakana_and_half_width_find_the_same_customers(
    database: Database,
) -> None:
    with database.session_factory() as session:
        _office(session)
        for query in ("やまだ", "ヤマダ", "ﾔﾏﾀﾞ"):
            assert sorted(_names(session, query)) == ["山田 太郎", "山田 花子"], query
        # Furigana stored in katakana is found in hiragana, and the other way round.
        assert _names(session, "はなこ") == ["山田 花子"]
        # A control character (PostgreSQL refuses a NUL in any string) separates words.
        assert sorted(_names(session, "やま\x00だ")) == ["山田 太郎", "山田 花子"]
        assert _names(session, "タロウ") == ["山田 太郎"]
        assert _names(session, "ﾅｵｷ") == ["木村 直樹"]
        hits, _ = search_customers(session, "ﾔﾏﾀﾞ", limit=20)
        assert {hit["matched"] for hit in hits} == {"furigana"}


@pytest.mark.parametrize(
    "query",
    [
        "1234-5678",
        "0312345678",
        "03-1234-5678",
        "+81 3 1234",
        "+81312345678",
        "０３ー１２３４ー５６７８",  # full-width digits and the IME's long-vowel hyphen
        "３１２３４",
        "(03) 1234",
    ],
)
def test_part_of_a_number_in_any_spelling_finds_its_customer(
    database: Database, query: str
) -> None:
    with database.session_factory() as session:
        _office(session)
        hits, truncated = search_customers(session, query, limit=20)
        assert [hit["name"] for hit in hits] == ["山田 太郎"], query
        assert truncated is False
        assert hits[0]["matched"] == "phone"


def test_mobile_numbers_and_a_plus_number_anchored_at_the_country_code(
    database: Database,
) -> None:
    with database.session_factory() as session:
        _office(session)
        add_customer(session, "森 拓也", ("+81381901234", "会社"), furigana="もり たくや")
        session.commit()
        assert sorted(_names(session, "090-1234")) == ["山田 太郎"]
        assert sorted(_names(session, "090")) == ["山田 太郎", "山田 花子"]
        assert sorted(_names(session, "8190")) == ["山田 太郎", "山田 花子", "森 拓也"]
        # "+81 90" is the start of an E.164 number: 森's 03-8190-1234 holds "8190" in
        # the middle only, so only the 090 mobiles are found.
        assert sorted(_names(session, "+81 90")) == ["山田 太郎", "山田 花子"]
        assert _names(session, "+81 70 2345") == ["山口 奈々"]
        # A leading 0 is the trunk prefix: the number starts there. 「012345」 is inside
        # 090-1234-5678's digits, but no number starts with it; 「12345」 is found anywhere.
        assert _names(session, "012345") == []  # by the phones' index (7 digits and more)
        assert _names(session, "0123") == []  # by the scan
        assert _names(session, "12345") == ["山田 太郎"]
        assert _names(session, "+81 (0)90-1234") == ["山田 太郎"]
        # One digit is no number: it matches text only (nothing here).
        assert _names(session, "9") == []


def test_every_word_must_match(database: Database) -> None:
    with database.session_factory() as session:
        _office(session)
        assert _names(session, "やまだ たろう") == ["山田 太郎"]
        assert _names(session, "やまだ　はなこ") == ["山田 花子"]  # a full-width space
        assert _names(session, "山田 0312") == ["山田 太郎"]
        assert _names(session, "山田 0355") == []
        assert _names(session, "青葉 きむら") == ["木村 直樹"]
        assert _names(session, "青葉 やまだ") == []


def test_a_hit_carries_the_card_fields_phones_in_national_form_and_the_staff(
    database: Database,
) -> None:
    with database.session_factory() as session:
        customers = _office(session)
        hits, _ = search_customers(session, "c-1001", limit=20)
    assert len(hits) == 1
    hit = hits[0]
    assert hit == {
        "id": customers["yamada"].id,
        "code": "C-1001",
        "name": "山田 太郎",
        "furigana": "やまだ たろう",
        "honorific": "様",
        "company": None,
        "department": None,
        "rank": "A",
        "tags": ["リピーター"],
        "assigned_staff": {
            "id": hit["assigned_staff"]["id"],
            "name": "佐藤 健",
            "furigana": None,
            "extension": "203",
        },
        "phones": [
            {"number": "+81312345678", "national": "03-1234-5678", "label": "自宅"},
            {"number": "+819012345678", "national": "090-1234-5678", "label": "携帯"},
        ],
        "matched": "code",
    }


def test_which_field_matched(database: Database) -> None:
    with database.session_factory() as session:
        _office(session)
        matched = {
            query: [hit["matched"] for hit in search_customers(session, query, limit=20)[0]]
            for query in ("木村", "青葉", "管理部", "kimura@", "AOBA", "0355550100")
        }
    assert matched == {
        "木村": ["name"],
        "青葉": ["company"],
        "管理部": ["company"],
        "kimura@": ["email"],
        "AOBA": ["email"],
        "0355550100": ["phone"],
    }


def test_the_exact_code_and_names_starting_with_the_query_come_first(
    database: Database,
) -> None:
    with database.session_factory() as session:
        add_customer(session, "加藤 K1", furigana="かとう", code="K10")
        add_customer(session, "青木 K2", furigana="あおき", code="K1")
        add_customer(session, "伊藤 K3", furigana="いとう", code="K100")
        add_customer(session, "中山田 一", furigana="なかやまだ はじめ")
        add_customer(session, "山田 次郎", furigana="やまだ じろう")
        add_customer(session, "山田 一郎", furigana="やまだ いちろう")
        add_customer(session, "番号 商店", ("+81312345678", "店舗"), code="0420")
        add_customer(session, "番号 工房", code="0420-1234")
        session.commit()
        # A code of digits with a leading 0 reads as the start of a number, and is found
        # as the code all the same (a short one by the scan, a long one by the index).
        for code, name in (("0420", "番号 商店"), ("0420-1234", "番号 工房")):
            hits, _ = search_customers(session, code, limit=20)
            assert [(hit["name"], hit["matched"]) for hit in hits] == [(name, "code")]
        # The code exactly first, then the rest by furigana.
        assert _names(session, "k1") == ["青木 K2", "伊藤 K3", "加藤 K1"]
        assert _names(session, "K10") == ["加藤 K1", "伊藤 K3"]
        # Names starting with 山田 first (by furigana), then 中山田 (found inside).
        assert _names(session, "山田") == ["山田 一郎", "山田 次郎", "中山田 一"]


def test_deleted_customers_and_deleted_phones_are_not_found(database: Database) -> None:
    now = dt.datetime.now(dt.UTC)
    with database.session_factory() as session:
        customers = _office(session)
        customers["yamada_h"].deleted_at = now
        phone = session.scalars(
            select(CustomerPhone).where(CustomerPhone.e164 == "+81312345678")
        ).one()
        phone.deleted_at = now
        session.commit()
        assert _names(session, "やまだ") == ["山田 太郎"]
        assert _names(session, "0312345678") == []  # the deleted phone
        assert _names(session, "090-1234") == ["山田 太郎"]  # the live one
        hits, _ = search_customers(session, "やまだ", limit=20)
        assert [p["number"] for p in hits[0]["phones"]] == ["+819012345678"]
        assert "山田 花子" not in _names(session, "", limit=100)


def test_the_search_columns_follow_orm_edits_of_names_and_phones(database: Database) -> None:
    with database.session_factory() as session:
        customers = _office(session)
        yamaguchi = customers["yamaguchi"]
        yamaguchi.name = "川口 奈々"
        yamaguchi.furigana = "かわぐち なな"
        session.add(CustomerPhone(customer_id=yamaguchi.id, e164="+81422334455", label="自宅"))
        session.commit()
        assert _names(session, "やまぐち") == []
        assert _names(session, "カワグチ") == ["川口 奈々"]
        assert _names(session, "0422-33") == ["川口 奈々"]
        added = session.scalars(
            select(CustomerPhone).where(CustomerPhone.e164 == "+81422334455")
        ).one()
        added.deleted_at = dt.datetime.now(dt.UTC)
        session.commit()
        assert _names(session, "0422-33") == []
        assert _names(session, "070-2345") == ["川口 奈々"]


def test_like_wildcards_in_the_query_mean_themselves(database: Database) -> None:
    with database.session_factory() as session:
        add_customer(session, "100%天然 商店", furigana="ひゃくぱーせんと")
        add_customer(session, "a_b 商会")
        add_customer(session, "ab 商会")
        add_customer(session, "back\\slash 商会")
        add_customer(session, "100 円 商店")
        session.commit()
        assert _names(session, "%") == ["100%天然 商店"]
        assert _names(session, "100%") == ["100%天然 商店"]
        assert _names(session, "_") == ["a_b 商会"]
        assert _names(session, "a_b") == ["a_b 商会"]
        assert _names(session, "\\") == ["back\\slash 商会"]
        assert _names(session, "%%") == []


def test_the_limit_and_truncated(database: Database) -> None:
    with database.session_factory() as session:
        for i in range(5):
            add_customer(session, f"佐藤 {i}", furigana=f"さとう {i}")
        session.commit()
        hits, truncated = search_customers(session, "さとう", limit=3)
        assert ([hit["name"] for hit in hits], truncated) == (["佐藤 0", "佐藤 1", "佐藤 2"], True)
        hits, truncated = search_customers(session, "さとう", limit=5)
        assert (len(hits), truncated) == (5, False)
        with pytest.raises(ValueError):
            search_customers(session, "さとう", limit=101)


def test_an_empty_query_lists_the_most_recently_updated(database: Database) -> None:
    base = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with database.session_factory() as session:
        for i, name in enumerate(["古い", "中間", "新しい"]):
            add_customer(session, name, updated_at=base + dt.timedelta(days=i))
        session.commit()
        hits, truncated = search_customers(session, "  ", limit=2)
    assert [hit["name"] for hit in hits] == ["新しい", "中間"]
    assert truncated is True
    assert {hit["matched"] for hit in hits} == {None}


def test_a_query_that_is_all_number_is_one_number() -> None:
    [token] = parse_query("+81 3 1234")
    assert (token.digits, token.e164_prefix) == ("8131234", "+8131234")
    [token] = parse_query("+81 (0)3 1234")
    assert (token.digits, token.e164_prefix) == ("81031234", "+8131234")
    [token] = parse_query("０９０　１２３４")
    assert (token.digits, token.e164_prefix) == ("0901234", "+81901234")
    [token] = parse_query("1234-5678")
    assert (token.digits, token.e164_prefix) == ("12345678", None)
    [token] = parse_query("00 1 212")  # an international call prefix: no national number
    assert token.e164_prefix is None
    words = parse_query("山田 03-1234 x")
    assert [(t.text, t.digits) for t in words] == [
        ("山田", None),
        ("03-1234", "031234"),
        ("x", None),
    ]


def test_a_number_typed_from_its_start_is_found_through_the_phones_index(
    tmp_path: Path,
) -> None:
    """SQLite's plan: no scan of the customers for 「090-1234」 (7 E.164 digits or more);
    the customers are entered by primary key from the phones' index. 「090」 scans."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    migrate(engine)
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if "search_text" in sql or "customer_phones.e164 >=" in sql:
            statements.append((sql, params))

    try:
        with make_session_factory(engine)() as session:
            _office(session)
            event.listen(engine, "before_cursor_execute", capture)
            try:
                for query in ("090-1234", "+81 3 1234-5", "090"):
                    search_customers(session, query, limit=20)
            finally:
                event.remove(engine, "before_cursor_execute", capture)
        with engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            plans = [
                " | ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params))
                for sql, params in statements
            ]
    finally:
        engine.dispose()
    assert len(plans) == 3
    for plan in plans[:2]:
        assert "ix_customer_phones_e164_live (e164>? AND e164<?)" in plan, plan
        assert "SCAN customers" not in plan, plan
    assert "SCAN customers" in plans[2]
