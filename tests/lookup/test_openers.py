"""Conversation openers: facts in, at most three lines out, the most useful first."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from db.models import FamilyMember
from lookup.card import CardStatus, OpenerKind
from lookup.openers import (
    CustomerFacts,
    DueFollowUp,
    FamilyFact,
    OpenerRules,
    next_birthday,
    openers_for,
)
from lookup.service import CallerLookup
from tests.fixtures_db import Database, add_customer, add_note, add_transaction

TOKYO = ZoneInfo("Asia/Tokyo")
TODAY = dt.date(2026, 11, 22)  # a Sunday
RULES = OpenerRules(dormant_days_default=90, dormant_days={"A": 60}, transaction_follow_up_days=120)


def facts(**fields: object) -> CustomerFacts:
    return CustomerFacts(today=TODAY, **fields)  # type: ignore[arg-type]


def kinds(found: list) -> list[OpenerKind]:  # type: ignore[type-arg]
    return [opener.kind for opener in found]


def test_nothing_known_no_openers() -> None:
    assert openers_for(facts(), RULES) == []


def test_last_transaction_within_the_window_is_asked_after() -> None:
    june = dt.date(2026, 6, 13)
    found = openers_for(
        facts(last_transaction=(june, "雨漏り修繕"), last_contact_on=TODAY - dt.timedelta(days=30)),
        OpenerRules(transaction_follow_up_days=200),
    )
    assert [(o.kind, o.text_ja, o.text_en, o.on, o.subject) for o in found] == [
        (
            OpenerKind.TRANSACTION_FOLLOW_UP,
            "6月の雨漏り修繕、その後いかがですか",
            "How is everything since the 雨漏り修繕 in Jun?",
            june,
            "雨漏り修繕",
        )
    ]
    # Older than the window: nothing to ask after.
    assert openers_for(facts(last_transaction=(june, "雨漏り修繕")), RULES) == []
    # Last year's: the year is said.
    december = (dt.date(2026, 12, 20), "外壁塗装")
    (last_year,) = openers_for(
        CustomerFacts(today=dt.date(2027, 1, 10), last_transaction=december), RULES
    )
    assert last_year.text_ja == "2026年12月の外壁塗装、その後いかがですか"
    assert last_year.text_en == "How is everything since the 外壁塗装 in Dec 2026?"


def test_at_most_three_in_priority_order() -> None:
    everything = facts(
        rank="B",
        birthday=dt.date(1960, 11, 22),
        preferences="お茶は緑茶",
        last_transaction=(dt.date(2026, 8, 1), "網戸交換"),
        last_contact_on=dt.date(2026, 8, 1),  # 113 days: dormant for B (90)
        family=(FamilyFact("花子", "妻", dt.date(1962, 11, 24)),),
        follow_ups=(DueFollowUp(TODAY, "見積の返事を確認"),),
    )
    found = openers_for(everything, RULES)
    assert kinds(found) == [
        OpenerKind.FOLLOW_UP_DUE,
        OpenerKind.BIRTHDAY,
        OpenerKind.FAMILY_BIRTHDAY,
    ]
    assert found[0].text_ja == "本日フォローの予定です: 見積の返事を確認"
    assert found[1].text_ja == "本日お誕生日です。おめでとうございます"
    assert found[2].text_ja == "妻 花子様のお誕生日が11月24日です"
    assert found[2].text_en == "花子 (妻): birthday on Nov 24"
    # Without the three on top the next three win, in order; the same facts, the same lines.
    rest = facts(
        rank="B",
        preferences="お茶は緑茶",
        last_transaction=(dt.date(2026, 8, 1), "網戸交換"),
        last_contact_on=dt.date(2026, 8, 1),
    )
    assert kinds(openers_for(rest, RULES)) == [
        OpenerKind.TRANSACTION_FOLLOW_UP,
        OpenerKind.DORMANT,
        OpenerKind.PREFERENCE,
    ]
    assert openers_for(rest, RULES) == openers_for(rest, RULES)


@pytest.mark.parametrize(
    ("today", "birthday", "ahead"),
    [
        (dt.date(2026, 12, 29), dt.date(1970, 1, 2), 4),  # across the year end
        (dt.date(2026, 12, 31), dt.date(1970, 12, 31), 0),
        (dt.date(2026, 12, 28), dt.date(1970, 1, 3), 6),  # the last day of the week
        (dt.date(2027, 2, 28), dt.date(1980, 2, 29), 0),  # 29 Feb in a common year
        (dt.date(2028, 2, 28), dt.date(1980, 2, 29), 1),  # a leap year: the 29th
    ],
)
def test_birthday_this_week(today: dt.date, birthday: dt.date, ahead: int) -> None:
    (opener,) = openers_for(CustomerFacts(today=today, birthday=birthday), RULES)
    assert opener.kind is OpenerKind.BIRTHDAY and opener.days == ahead
    assert next_birthday(birthday, today) == today + dt.timedelta(days=ahead)


def test_birthday_beyond_the_week_or_just_past_is_not_an_opener() -> None:
    assert openers_for(facts(birthday=dt.date(1970, 11, 29)), RULES) == []  # 7 days
    assert openers_for(facts(birthday=dt.date(1970, 11, 21)), RULES) == []  # yesterday
    (soon,) = openers_for(facts(birthday=dt.date(1970, 11, 28)), RULES)
    assert (soon.text_ja, soon.text_en) == ("11月28日がお誕生日です", "Birthday on Nov 28")


def test_family_birthday_nearest_first() -> None:
    family = (
        FamilyFact("太郎", "長男", dt.date(1990, 11, 26)),
        FamilyFact("花子", None, dt.date(1962, 11, 22)),
        FamilyFact("次郎", "次男", dt.date(1992, 12, 25)),
    )
    (opener,) = openers_for(facts(family=family), RULES)
    assert opener.kind is OpenerKind.FAMILY_BIRTHDAY
    assert (opener.text_ja, opener.text_en) == (
        "花子様のお誕生日が本日です",
        "花子: birthday today",
    )
    assert opener.subject == "花子"


def test_dormant_per_rank() -> None:
    sixty_five = TODAY - dt.timedelta(days=65)
    (a,) = openers_for(facts(rank="A", last_contact_on=sixty_five), RULES)
    assert a.kind is OpenerKind.DORMANT and a.days == 65
    assert (a.text_ja, a.text_en) == ("2か月ぶりのご連絡です", "First contact in 2 months")
    assert openers_for(facts(rank="B", last_contact_on=sixty_five), RULES) == []
    assert openers_for(facts(rank=None, last_contact_on=sixty_five), RULES) == []
    (c,) = openers_for(facts(rank="C", last_contact_on=dt.date(2026, 8, 22)), RULES)
    assert c.text_ja == "3か月ぶりのご連絡です"
    # Never contacted is not dormant (a new customer).
    assert openers_for(facts(rank="A"), RULES) == []
    short = OpenerRules(dormant_days_default=10)
    (days,) = openers_for(facts(last_contact_on=TODAY - dt.timedelta(days=20)), short)
    assert (days.text_ja, days.text_en) == ("20日ぶりのご連絡です", "First contact in 20 days")


def test_overdue_follow_up_the_oldest_wins_and_future_ones_wait() -> None:
    found = openers_for(
        facts(
            follow_ups=(
                DueFollowUp(TODAY + dt.timedelta(days=1), "明日の件"),
                DueFollowUp(dt.date(2026, 11, 20), "点検の日程を連絡"),
                DueFollowUp(dt.date(2026, 11, 21)),
            )
        ),
        RULES,
    )
    (opener,) = found
    assert opener.text_ja == "フォロー予定日(2026-11-20)を過ぎています: 点検の日程を連絡"
    assert opener.text_en == "Follow-up overdue since 2026-11-20: 点検の日程を連絡"
    assert opener.days == 2
    (bare,) = openers_for(facts(follow_ups=(DueFollowUp(TODAY),)), RULES)
    assert (bare.text_ja, bare.text_en) == ("本日フォローの予定です", "Follow-up due today")


def test_long_text_is_cut_to_one_short_line() -> None:
    (opener,) = openers_for(facts(preferences="お茶は緑茶。\n" + "あ" * 60), RULES)
    assert opener.text_ja.startswith("お好み: お茶は緑茶。 あ") and opener.text_ja.endswith("…")
    assert opener.subject is not None and len(opener.subject) == 40
    assert opener.text_en.startswith("Preference: ")


# --- through the lookup, on a real database ----------------------------------------------

NOW = dt.datetime(2026, 11, 22, 10, 31, 5, tzinfo=TOKYO)


def test_the_pop_carries_the_openers(database: Database) -> None:
    with database.session_factory() as session:
        yamada = add_customer(
            session,
            "山田 太郎",
            ("+81312345678", "自宅"),
            honorific="様",
            contact_hours="平日 10-17時",
            rank="A",
            preferences="お茶は緑茶",
        )
        add_transaction(session, yamada, dt.date(2026, 9, 13), "雨漏り修繕", 58_000)
        session.add(FamilyMember(customer_id=yamada.id, name="花子", relation="妻",
                                 birthday=dt.date(1962, 11, 25)))  # fmt: skip
        gone = FamilyMember(customer_id=yamada.id, name="消えた", birthday=dt.date(1990, 11, 22))
        gone.deleted_at = NOW
        session.add(gone)
        note = add_note(session, yamada, NOW - dt.timedelta(days=30), "点検の日程を連絡")
        note.follow_up_on = dt.date(2026, 11, 20)
        done = add_note(session, yamada, NOW - dt.timedelta(days=40), "済んだ件")
        done.follow_up_on = dt.date(2026, 11, 1)
        done.follow_up_done_at = NOW - dt.timedelta(days=21)
        session.commit()
    card = CallerLookup(database.session_factory, rules=RULES).card_for_number(
        "03-1234-5678", now=NOW
    )
    assert card.status is CardStatus.MATCHED
    (customer,) = card.customers
    assert (customer.honorific, customer.contact_hours) == ("様", "平日 10-17時")
    assert [(o.kind, o.text_ja) for o in customer.openers] == [
        (OpenerKind.FOLLOW_UP_DUE, "フォロー予定日(2026-11-20)を過ぎています: 点検の日程を連絡"),
        (OpenerKind.FAMILY_BIRTHDAY, "妻 花子様のお誕生日が11月25日です"),
        (OpenerKind.TRANSACTION_FOLLOW_UP, "9月の雨漏り修繕、その後いかがですか"),
    ]
    # The wire form carries both languages.
    wire = card.model_dump(mode="json")["customers"][0]["openers"][0]
    assert wire["text_en"] == "Follow-up overdue since 2026-11-20: 点検の日程を連絡"


def test_the_customers_own_follow_up_date_and_today_in_tokyo(database: Database) -> None:
    with database.session_factory() as session:
        add_customer(
            session,
            "鈴木 花子",
            ("+81312345678", "自宅"),
            next_follow_up_on=dt.date(2026, 11, 22),
            birthday=dt.date(1970, 11, 22),
        )
        session.commit()
    lookup = CallerLookup(database.session_factory, rules=RULES)
    # 23:30 UTC on the 21st is already the 22nd in Tokyo.
    card = lookup.card_for_number(
        "0312345678", now=dt.datetime(2026, 11, 21, 23, 30, tzinfo=dt.UTC)
    )
    assert [o.text_ja for o in card.customers[0].openers] == [
        "本日フォローの予定です",
        "本日お誕生日です。おめでとうございます",
    ]
    # 14:00 UTC on the 21st is still the 21st in Tokyo: due tomorrow, birthday tomorrow.
    card = lookup.card_for_number("0312345678", now=dt.datetime(2026, 11, 21, 14, 0, tzinfo=dt.UTC))
    assert [o.text_ja for o in card.customers[0].openers] == ["11月22日がお誕生日です"]
