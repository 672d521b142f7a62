"""db.followups against a real database: 今日のフォロー, ticking off, 休眠のお客様."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from db.calls import record_call_started
from db.followups import FollowupRefused, dormant, mark_customer_done, mark_note_done, today
from db.models import AuditEntry, Customer, Note
from tests.fixtures_db import Database, add_customer, add_note, add_staff, add_transaction

TOKYO = ZoneInfo("Asia/Tokyo")
TODAY = dt.date(2026, 11, 22)
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # when the customers were entered


def _at(day: dt.date, hour: int = 10) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=TOKYO)


def _follow_up_note(
    session: object, customer: Customer, due: dt.date | None, body: str, *, done: bool = False
) -> Note:
    note = add_note(session, customer, _at(due or TODAY) - dt.timedelta(days=10), body)  # type: ignore[arg-type]
    note.follow_up_on = due
    if done:
        note.follow_up_done_at = _at(TODAY)
    return note


def test_today_lists_due_and_overdue_open_follow_ups_oldest_first(database: Database) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        yamada = add_customer(
            session, "山田 太郎", furigana="やまだ たろう", honorific="様", staff=sato
        )
        suzuki = add_customer(session, "鈴木 花子", next_follow_up_on=TODAY - dt.timedelta(days=1))
        kato = add_customer(session, "加藤 美和", next_follow_up_on=TODAY + dt.timedelta(days=1))
        gone = add_customer(session, "削除 済", next_follow_up_on=TODAY)
        gone.deleted_at = _at(TODAY)
        due = _follow_up_note(session, yamada, TODAY, "見積の返事を確認")
        overdue = _follow_up_note(session, yamada, TODAY - dt.timedelta(days=3), "点検の日程")
        _follow_up_note(session, yamada, TODAY - dt.timedelta(days=2), "済んだ件", done=True)
        _follow_up_note(session, yamada, TODAY + dt.timedelta(days=1), "明日の件")
        _follow_up_note(session, kato, None, "フォローなし")
        deleted = _follow_up_note(session, kato, TODAY, "消したメモ")
        deleted.deleted_at = _at(TODAY)
        _follow_up_note(session, gone, TODAY, "削除された顧客のメモ")
        session.commit()
        page = today(session, TODAY, limit=10)
    assert not page.truncated
    assert [(i["kind"], i["note_id"], i["customer"]["id"], i["due"]) for i in page.items] == [
        ("note", overdue.id, yamada.id, TODAY - dt.timedelta(days=3)),
        ("customer", None, suzuki.id, TODAY - dt.timedelta(days=1)),
        ("note", due.id, yamada.id, TODAY),
    ]
    assert [i["overdue"] for i in page.items] == [True, True, False]
    first = page.items[0]
    assert first["body"] == "点検の日程"
    assert first["customer"] == {
        "id": yamada.id,
        "name": "山田 太郎",
        "furigana": "やまだ たろう",
        "honorific": "様",
        "company": None,
        "assigned_staff": {"id": sato.id, "name": "佐藤 健", "furigana": None, "extension": "203"},
    }
    assert page.items[1]["body"] is None
    assert kato.id not in {i["customer"]["id"] for i in page.items}


def test_today_says_when_the_limit_cut_the_list(database: Database) -> None:
    with database.session_factory() as session:
        customer = add_customer(session, "山田 太郎", next_follow_up_on=TODAY)
        for n in range(3):
            _follow_up_note(session, customer, TODAY - dt.timedelta(days=n), f"件{n}")
        session.commit()
        two = today(session, TODAY, limit=2)
        four = today(session, TODAY, limit=4)
    assert two.truncated and [i["body"] for i in two.items] == ["件2", "件1"]
    assert not four.truncated and len(four.items) == 4


def test_ticking_off_removes_the_follow_up_and_writes_the_audit(database: Database) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        yamada = add_customer(session, "山田 太郎", next_follow_up_on=TODAY)
        note = _follow_up_note(session, yamada, TODAY, "見積の返事を確認")
        session.commit()
        assert len(today(session, TODAY).items) == 2
        mark_note_done(session, note.id, staff_id=sato.id)
        mark_note_done(session, note.id, staff_id=sato.id)  # again: nothing more
        assert [i["kind"] for i in today(session, TODAY).items] == ["customer"]
        mark_customer_done(session, yamada.id, staff_id=sato.id)
        assert today(session, TODAY).items == []
    with database.session_factory() as session:
        done = session.get(Note, note.id)
        assert done is not None and done.follow_up_done_at is not None
        assert done.follow_up_done_by == sato.id
        customer = session.get(Customer, yamada.id)
        assert customer is not None and customer.next_follow_up_on is None
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.entity, e.action, e.entity_id, e.staff_id) for e in entries] == [
        ("note", "update", note.id, sato.id),
        ("customer", "update", yamada.id, sato.id),
    ]
    assert entries[0].before is not None and entries[0].before["follow_up_done_at"] is None
    assert entries[0].after is not None and entries[0].after["follow_up_done_by"] == sato.id
    assert entries[1].before is not None
    assert entries[1].before["next_follow_up_on"] == TODAY.isoformat()
    assert entries[1].after is not None and entries[1].after["next_follow_up_on"] is None


def test_ticking_off_what_is_not_there_is_refused(database: Database) -> None:
    with database.session_factory() as session:
        yamada = add_customer(session, "山田 太郎")
        plain = _follow_up_note(session, yamada, None, "フォローなし")
        gone = add_customer(session, "削除 済", next_follow_up_on=TODAY)
        gone.deleted_at = _at(TODAY)
        session.commit()
        for note_id in (plain.id, 999_999):
            with pytest.raises(FollowupRefused):
                mark_note_done(session, note_id, staff_id=1)
        for customer_id in (gone.id, 999_999):
            with pytest.raises(FollowupRefused):
                mark_customer_done(session, customer_id, staff_id=1)


# --- 休眠のお客様 -------------------------------------------------------------------------


def _call(session: object, customer: Customer, at: dt.datetime) -> None:
    record_call_started(
        session,  # type: ignore[arg-type]
        id=uuid.uuid4().hex,
        sip_call_id=uuid.uuid4().hex,
        caller_e164="+81312345678",
        caller_raw="0312345678",
        display_name=None,
        withheld=None,
        dialed_e164=None,
        started_at=at,
        customer_id=customer.id,
    )


def test_dormant_per_rank_each_kind_of_contact_resets_the_clock(database: Database) -> None:
    days = {"A": 60}
    with database.session_factory() as session:

        def customer(name: str, rank: str | None) -> Customer:
            return add_customer(session, name, rank=rank, created_at=LONG_AGO)

        # Rank A: dormant after 60 days; everyone else after 90.
        a_quiet = customer("A 静か", "A")  # transaction 61 days ago: dormant
        add_transaction(session, a_quiet, TODAY - dt.timedelta(days=61), "雨漏り修繕")
        a_tx = customer("A 取引", "A")  # an old transaction, but one 59 days ago
        add_transaction(session, a_tx, TODAY - dt.timedelta(days=400), "外壁塗装")
        add_transaction(session, a_tx, TODAY - dt.timedelta(days=59), "点検")
        a_note = customer("A メモ", "A")
        add_transaction(session, a_note, TODAY - dt.timedelta(days=200), "外壁塗装")
        add_note(session, a_note, _at(TODAY - dt.timedelta(days=10)), "近況確認")
        a_call = customer("A 電話", "A")
        add_transaction(session, a_call, TODAY - dt.timedelta(days=200), "外壁塗装")
        session.flush()
        _call(session, a_call, _at(TODAY - dt.timedelta(days=5)))
        b_70 = customer("B 70日", "B")  # 70 days: dormant for A, not for B (90)
        add_transaction(session, b_70, TODAY - dt.timedelta(days=70), "網戸交換")
        b_95 = customer("B 95日", "B")
        add_note(session, b_95, _at(TODAY - dt.timedelta(days=95)), "見積送付")
        never = customer("無 未連絡", None)  # never contacted, entered long ago
        fresh = add_customer(session, "新規 昨日", rank="B")  # entered now: not dormant
        gone = customer("A 削除", "A")
        add_transaction(session, gone, TODAY - dt.timedelta(days=300), "外壁塗装")
        gone.deleted_at = _at(TODAY)
        deleted_tx = customer("A 取消", "A")  # its only recent transaction was deleted
        add_transaction(session, deleted_tx, TODAY - dt.timedelta(days=61), "点検")
        recent = add_transaction(session, deleted_tx, TODAY - dt.timedelta(days=1), "誤入力")
        recent.deleted_at = _at(TODAY)
        session.commit()
        page = dormant(session, TODAY, days, 90, limit=20)
        only_a = dormant(session, TODAY, days, 90, rank="A", limit=20)
        cut = dormant(session, TODAY, days, 90, limit=2)
    names = [i["customer"]["name"] for i in page.items]
    # Longest without contact first; never contacted counts from when entered.
    assert names == ["無 未連絡", "B 95日", "A 静か", "A 取消"]
    assert not page.truncated
    by_name = {i["customer"]["name"]: i for i in page.items}
    assert by_name["A 静か"]["days"] == 61 and by_name["A 静か"]["threshold_days"] == 60
    assert by_name["A 静か"]["last_contact_on"] == TODAY - dt.timedelta(days=61)
    assert by_name["B 95日"]["threshold_days"] == 90 and by_name["B 95日"]["days"] == 95
    assert by_name["無 未連絡"]["last_contact_on"] is None
    assert {a_tx.id, a_note.id, a_call.id, b_70.id, fresh.id, gone.id}.isdisjoint(
        i["customer"]["id"] for i in page.items
    )
    assert [i["customer"]["name"] for i in only_a.items] == ["A 静か", "A 取消"]
    assert cut.truncated and len(cut.items) == 2
    assert never.id == page.items[0]["customer"]["id"]
