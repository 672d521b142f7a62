"""Customer record writes (``db.records``), the audit trail (``db.audit``), the record
and its timeline (``db.customers``) on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from db import records
from db.audit import audit_page
from db.calls import record_call_started
from db.customer_import import import_customers
from db.customers import customer_detail, timeline_page
from db.models import Call, Customer, CustomerPhone, FamilyMember, Note, Transaction
from db.notes import NoteDraft, correct_note, save_note
from db.records import RecordRefused
from db.search import search_customers
from lookup.card import CardStatus
from lookup.numbers import Numbering
from lookup.service import CallerLookup
from tests.fixtures_db import Database, add_staff

JST = dt.timezone(dt.timedelta(hours=9))
NOW = dt.datetime(2026, 11, 22, 10, 0, tzinfo=JST)
PLAN = Numbering()


def trail(session: Any, customer_id: int | None = None) -> list[tuple[str, str, Any, Any]]:
    """(action, entity, before, after) oldest first."""
    entries, _ = audit_page(session, customer_id=customer_id, limit=200)
    return [(e["action"], e["entity"], e["before"], e["after"]) for e in reversed(entries)]


def new_customer(session: Any, staff_id: int, **fields: Any) -> int:
    values = {"name": "山田 太郎", "furigana": "やまだ たろう", **fields}
    return records.create_customer(
        session,
        values,
        [{"number": "03-1234-5678", "label": "自宅", "owner_name": None}],
        staff_id=staff_id,
        normalise=PLAN.normalise,
    )


def test_each_write_is_audited_with_before_and_after_and_no_change_writes_nothing(
    database: Database,
) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        session.commit()
        customer_id = new_customer(session, sato.id, rank="A", tags=["VIP"])
        [(action, entity, before, after), (p_action, p_entity, _, phone)] = trail(session)
        assert (action, entity, before) == ("create", "customer", None)
        assert after["name"] == "山田 太郎" and after["tags"] == ["VIP"]
        assert after["deleted_at"] is None and "search_text" not in after
        assert "created_at" not in after
        assert (p_action, p_entity, phone["e164"], phone["raw"]) == (
            "create",
            "phone",
            "+81312345678",
            "03-1234-5678",
        )
        entries, _ = audit_page(session, limit=10)
        assert {e["staff_name"] for e in entries} == {"佐藤 健"}
        assert {e["source"] for e in entries} == {"web"}

        # The same values again: no change, no entry.
        same = {"name": "山田 太郎", "rank": "A", "tags": ["VIP"], "company": None}
        assert records.update_customer(session, customer_id, same, staff_id=sato.id) is False
        assert len(trail(session)) == 2

        changed = records.update_customer(
            session,
            customer_id,
            {"company": "山田工務店", "birthday": dt.date(1970, 5, 1), "rank": "A"},
            staff_id=sato.id,
        )
        assert changed is True
        action, entity, before, after = trail(session)[-1]
        assert (action, entity) == ("update", "customer")
        assert (before["company"], after["company"]) == (None, "山田工務店")
        assert (before["birthday"], after["birthday"]) == (None, "1970-05-01")

        family_id = records.add_family(
            session,
            customer_id,
            {"name": "山田 花子", "relation": "妻", "birthday": dt.date(1972, 3, 3)},
            staff_id=sato.id,
        )
        _, family_changed = records.update_family(
            session, family_id, {"relation": "配偶者"}, staff_id=sato.id
        )
        assert family_changed
        transaction_id = records.add_transaction(
            session,
            customer_id,
            {
                "date": dt.date(2026, 11, 1),
                "title": "外壁塗装",
                "amount": 580000,
                "staff_id": sato.id,
                "detail": "足場あり",
            },
            staff_id=sato.id,
        )
        records.update_transaction(session, transaction_id, {"amount": 600000}, staff_id=sato.id)
        steps = [(a, e) for a, e, _, _ in trail(session)]
        assert steps[-4:] == [
            ("create", "family"),
            ("update", "family"),
            ("create", "transaction"),
            ("update", "transaction"),
        ]
        _, _, before, after = trail(session)[-1]
        assert (before["amount_yen"], after["amount_yen"], after["memo"]) == (
            580000,
            600000,
            "足場あり",
        )

        detail = customer_detail(session, customer_id)
        assert detail is not None
        assert detail["company"] == "山田工務店"
        assert [(m["name"], m["relation"]) for m in detail["family"]] == [("山田 花子", "配偶者")]
        [transaction] = detail["transactions"]
        assert transaction["staff"]["name"] == "佐藤 健"
        assert (transaction["amount"], transaction["detail"]) == (600000, "足場あり")


def test_a_number_that_is_no_phone_number_is_refused_and_nothing_is_written(
    database: Database,
) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        session.commit()
        for bad in ("12-34", "203", "でんわ"):
            with pytest.raises(RecordRefused) as refused:
                records.create_customer(
                    session,
                    {"name": "誰か"},
                    [{"number": bad}],
                    staff_id=sato.id,
                    normalise=PLAN.normalise,
                )
            assert refused.value.reason == "invalid"
            assert bad in str(refused.value)
        assert session.scalar(select(func.count()).select_from(Customer)) == 0
        assert trail(session) == []
        customer_id = new_customer(session, sato.id)
        with pytest.raises(RecordRefused, match="電話番号として読めません"):
            records.add_phone(
                session,
                customer_id,
                {"number": "03-1234-56789"},
                staff_id=sato.id,
                normalise=PLAN.normalise,
            )
        with pytest.raises(RecordRefused) as unknown_staff:
            records.update_customer(
                session, customer_id, {"assigned_staff_id": 999}, staff_id=sato.id
            )
        assert unknown_staff.value.reason == "invalid"


def test_a_deleted_customer_leaves_the_record_the_pop_and_the_search_and_restore_brings_it_back(
    database: Database,
) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        session.commit()
        customer_id = new_customer(session, sato.id, company="山田工務店")
        records.add_family(session, customer_id, {"name": "山田 花子"}, staff_id=sato.id)
        records.add_transaction(
            session, customer_id, {"date": dt.date(2026, 11, 1), "title": "点検"}, staff_id=sato.id
        )
        save_note(
            session,
            NoteDraft(
                idempotency_key="visit-0001",
                staff_id=sato.id,
                body="訪問して見積を渡した",
                customer_id=customer_id,
                kind="visit",
            ),
        )
        before = customer_detail(session, customer_id)
        assert before is not None
        assert [n["kind"] for n in before["notes"]] == ["visit"]
        lookup = CallerLookup(database.session_factory)
        assert lookup.card_for_number("03-1234-5678", now=NOW).status is CardStatus.MATCHED
        assert [h["id"] for h in search_customers(session, "やまだ", limit=10)[0]] == [customer_id]

        records.soft_delete(session, "customer", customer_id, staff_id=sato.id)
        assert customer_detail(session, customer_id) is None
        assert lookup.card_for_number("03-1234-5678", now=NOW).status is CardStatus.UNKNOWN
        assert search_customers(session, "やまだ", limit=10)[0] == []
        # A record of a deleted customer can be neither changed nor restored alone.
        with pytest.raises(RecordRefused) as gone:
            records.update_customer(session, customer_id, {"memo": "x"}, staff_id=sato.id)
        assert gone.value.reason == "not_found"
        action, entity, deleted_before, deleted_after = trail(session)[-1]
        assert (action, entity, deleted_before["deleted_at"]) == ("delete", "customer", None)
        assert deleted_after["deleted_at"] is not None

        [listed], truncated = records.deleted_records(session, "customer")
        assert not truncated
        assert (listed["id"], listed["label"], listed["deleted_by_name"]) == (
            customer_id,
            "山田 太郎（山田工務店）",
            "佐藤 健",
        )

        records.restore(session, "customer", customer_id, staff_id=sato.id)
        after = customer_detail(session, customer_id)
        assert after is not None
        assert {**after, "updated_at": None} == {**before, "updated_at": None}
        assert lookup.card_for_number("03-1234-5678", now=NOW).status is CardStatus.MATCHED
        assert [h["id"] for h in search_customers(session, "やまだ", limit=10)[0]] == [customer_id]
        assert trail(session)[-1][0] == "restore"
        assert records.deleted_records(session, "customer")[0] == []


def test_a_deleted_phone_no_longer_pops_and_is_restored(database: Database) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        session.commit()
        customer_id = new_customer(session, sato.id)
        other = records.create_customer(
            session,
            {"name": "山田 花子"},
            [{"number": "0312345678", "label": "自宅"}],
            staff_id=sato.id,
            normalise=PLAN.normalise,
        )
        detail = customer_detail(session, customer_id, national=lambda e: "03-1234-5678")
        assert detail is not None
        [phone] = detail["phones"]
        assert phone["national"] == "03-1234-5678"
        assert phone["shared_with"] == [{"id": other, "name": "山田 花子"}]
        lookup = CallerLookup(database.session_factory)
        card = lookup.card_for_number("03-1234-5678", now=NOW)
        assert [c.name for c in card.customers] == ["山田 太郎", "山田 花子"]

        records.soft_delete(session, "phone", phone["id"], staff_id=sato.id)
        card = lookup.card_for_number("03-1234-5678", now=NOW)
        assert [c.name for c in card.customers] == ["山田 花子"]
        assert customer_detail(session, customer_id)["phones"] == []  # type: ignore[index]
        assert customer_detail(session, other)["phones"][0]["shared_with"] == []  # type: ignore[index]
        with pytest.raises(RecordRefused) as not_deleted:
            records.purge(
                session,
                "phone",
                session.scalar(select(CustomerPhone.id).where(CustomerPhone.customer_id == other))
                or 0,
                staff_id=sato.id,
            )
        assert not_deleted.value.reason == "conflict"

        records.restore(session, "phone", phone["id"], staff_id=sato.id)
        card = lookup.card_for_number("03-1234-5678", now=NOW)
        assert [c.name for c in card.customers] == ["山田 太郎", "山田 花子"]


def test_purge_only_after_delete_removes_everything_and_keeps_the_trail(
    database: Database,
) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        session.commit()
        customer_id = new_customer(session, sato.id)
        records.add_family(session, customer_id, {"name": "山田 花子"}, staff_id=sato.id)
        records.add_transaction(
            session, customer_id, {"date": dt.date(2026, 11, 1), "title": "点検"}, staff_id=sato.id
        )
        record_call_started(
            session,
            id="c" * 32,
            sip_call_id="c@pbx",
            caller_e164="+81312345678",
            caller_raw=None,
            display_name=None,
            withheld=None,
            dialed_e164=None,
            started_at=NOW,
            customer_id=customer_id,
        )
        session.commit()
        note, _ = save_note(
            session,
            NoteDraft(
                idempotency_key="call-note-1",
                staff_id=sato.id,
                body="電話で見積依頼",
                call_id="c" * 32,
                customer_id=customer_id,
            ),
        )
        correct_note(session, note["id"], body="電話で見積依頼（外壁）", staff_id=sato.id)

        with pytest.raises(RecordRefused) as live:
            records.purge(session, "customer", customer_id, staff_id=sato.id)
        assert live.value.reason == "conflict"
        records.soft_delete(session, "customer", customer_id, staff_id=sato.id)
        kept = len(trail(session, customer_id))
        records.purge(session, "customer", customer_id, staff_id=sato.id)

        for model in (Customer, CustomerPhone, FamilyMember, Transaction, Note):
            assert session.scalar(select(func.count()).select_from(model)) == 0, model
        call = session.get(Call, "c" * 32)
        assert call is not None and call.customer_id is None  # the call log keeps the call
        steps = trail(session, customer_id)
        assert len(steps) == kept + 5  # phone, family, transaction, note, customer
        assert [(a, e) for a, e, _, _ in steps[-5:]] == [
            ("purge", "phone"),
            ("purge", "family"),
            ("purge", "transaction"),
            ("purge", "note"),
            ("purge", "customer"),
        ]
        assert steps[-1][2]["name"] == "山田 太郎" and steps[-1][3] is None
        # The correction of the note was audited too, before and after.
        [(_, _, before, after)] = [s for s in steps if s[:2] == ("update", "note")]
        assert (before["body"], after["body"]) == ("電話で見積依頼", "電話で見積依頼（外壁）")
        with pytest.raises(RecordRefused) as gone:
            records.restore(session, "customer", customer_id, staff_id=sato.id)
        assert gone.value.reason == "not_found"


def test_the_timeline_merges_calls_notes_and_transactions_newest_first_page_by_page(
    database: Database,
) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        session.commit()
        customer_id = new_customer(session, sato.id)
        for day in (1, 3, 5):
            records.add_transaction(
                session,
                customer_id,
                {"date": dt.date(2026, 11, day), "title": f"工事{day}", "staff_id": sato.id},
                staff_id=sato.id,
            )
        for day in (2, 4):
            call_id = f"{day:032d}"
            record_call_started(
                session,
                id=call_id,
                sip_call_id=f"{day}@pbx",
                caller_e164="+81312345678",
                caller_raw=None,
                display_name=None,
                withheld=None,
                dialed_e164=None,
                started_at=dt.datetime(2026, 11, day, 10, 0, tzinfo=JST),
                customer_id=customer_id,
            )
        session.commit()
        # Ties on purpose: the note of day 2 at the call's very moment, the one of day 5
        # at the midnight a transaction of day 5 stands at.
        for day, at in ((2, dt.time(10, 0)), (5, dt.time(0, 0)), (6, dt.time(10, 5))):
            session.add(
                Note(
                    customer_id=customer_id,
                    staff_id=sato.id,
                    body=f"メモ{day}",
                    kind="call" if day == 2 else "email",
                    call_id=f"{day:032d}" if day == 2 else None,
                    created_at=dt.datetime.combine(dt.date(2026, 11, day), at, tzinfo=JST),
                )
            )
        session.commit()

        items, more = timeline_page(session, customer_id, limit=50)
        assert more is None
        assert [(i["kind"], i["at"].date().day) for i in items] == [
            ("note", 6),
            ("note", 5),
            ("transaction", 5),
            ("call", 4),
            ("transaction", 3),
            ("call", 2),
            ("note", 2),
            ("transaction", 1),
        ]
        call_two = items[5]
        assert len(call_two["note_ids"]) == 1 and items[0]["note_kind"] == "email"
        assert items[2]["staff_name"] == "佐藤 健" and items[2]["title"] == "工事5"

        for size in (1, 2, 3):
            paged: list[dict[str, Any]] = []
            cursor = None
            while True:
                page, cursor = timeline_page(session, customer_id, before=cursor, limit=size)
                paged += page
                if cursor is None:
                    break
            assert [(i["kind"], i["id"]) for i in paged] == [(i["kind"], i["id"]) for i in items], (
                size
            )
        detail = customer_detail(session, customer_id, timeline_limit=3)
        assert detail is not None and detail["timeline_more"] is True
        assert detail["timeline"] == items[:3]


def test_the_import_writes_an_audit_entry_per_created_or_updated_customer(
    database: Database,
) -> None:
    text = "顧客番号,名前,電話番号\nC-1,山田 太郎,03-1234-5678\nC-2,鈴木 一郎,06-1234-5678\n"
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        session.commit()
        import_customers(session, text, numbering=PLAN)
        session.commit()
        steps = trail(session)
        assert [(a, e) for a, e, _, _ in steps] == [("create", "customer")] * 2
        assert steps[0][3]["name"] == "山田 太郎" and steps[0][3]["phones"] == ["+81312345678"]
        entries, _ = audit_page(session, limit=10)
        assert {(e["source"], e["staff_id"]) for e in entries} == {("import", None)}

        changed = (
            "顧客番号,名前,電話番号\nC-1,山田 太郎,090-1111-2222\nC-2,鈴木 一郎,06-1234-5678\n"
        )
        import_customers(session, changed, numbering=PLAN, staff_id=sato.id)
        session.commit()
        [(action, _, before, after)] = trail(session)[2:]
        assert action == "update"
        assert before["phones"] == ["+81312345678"]
        assert after["phones"] == ["+81312345678", "+819011112222"]
        assert audit_page(session, limit=1)[0][0]["staff_name"] == "佐藤 健"
