"""Notes and the call log's new queries (``db.notes``, ``db.calls``) on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

import db.notes
from db.calls import (
    missed_calls,
    record_call_answered,
    record_call_ended,
    record_call_started,
    resolve_missed,
)
from db.models import Call, Customer, Note, NoteRevision
from db.notes import NewCustomer, NoteDraft, NoteRefused, correct_note, save_note
from tests.fixtures_db import Database, add_customer, add_staff

JST = dt.timezone(dt.timedelta(hours=9))
T0 = dt.datetime(2026, 11, 22, 10, 0, tzinfo=JST)


def start(session: Any, call_id: str, at: dt.datetime, caller: str | None, **kw: Any) -> None:
    record_call_started(
        session,
        id=call_id,
        sip_call_id=f"{call_id}@pbx",
        caller_e164=caller,
        caller_raw=None,
        display_name=None,
        withheld=kw.get("withheld"),
        dialed_e164=None,
        started_at=at,
        customer_id=kw.get("customer_id"),
    )


def test_a_lost_race_for_the_key_returns_the_winners_note(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with database.session_factory() as session:
        staff = add_staff(session, "佐藤 健", "203", "sato")
        customer = add_customer(session, "山田 太郎", ("+81312345678", "自宅"))
        session.commit()
        draft = NoteDraft(
            idempotency_key="k" * 16, staff_id=staff.id, body="初回", customer_id=customer.id
        )
        winner, created = save_note(session, draft)
        assert created
    # The loser looked for the key before the winner committed: it saw nothing.
    real = db.notes.note_by_key
    looked = []

    def not_yet(session: Any, key: str) -> Any:
        if not looked:
            looked.append(key)
            return None
        return real(session, key)

    monkeypatch.setattr(db.notes, "note_by_key", not_yet)
    with database.session_factory() as session:
        loser = NoteDraft(
            idempotency_key="k" * 16,
            staff_id=staff.id,
            body="初回",
            new_customer=NewCustomer(name="別人"),
        )
        found, created = save_note(session, loser)
    assert (found["id"], created) == (winner["id"], False)
    with database.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Note)) == 1
        # The customer the loser created went with its transaction.
        assert session.scalar(select(func.count()).where(Customer.name == "別人")) == 0


def test_saves_racing_in_threads_store_one_note(database: Database) -> None:
    with database.session_factory() as session:
        staff = add_staff(session, "佐藤 健", "203", "sato")
        customer = add_customer(session, "山田 太郎", ("+81312345678", "自宅"))
        session.commit()
    draft = NoteDraft(
        idempotency_key="race-" + "x" * 10, staff_id=staff.id, body="同時", customer_id=customer.id
    )
    barrier = threading.Barrier(8)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def save() -> None:
        try:
            with database.session_factory() as session:
                barrier.wait(10)
                found, created = save_note(session, draft)
                results.append((found["id"], created))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=save) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len({note_id for note_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 7 + [True]


def test_corrections_keep_each_earlier_text(database: Database) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato")
        suzuki = add_staff(session, "鈴木 花", "204", "suzuki")
        customer = add_customer(session, "山田 太郎")
        session.commit()
        saved, _ = save_note(
            session,
            NoteDraft(
                idempotency_key="n" * 8, staff_id=sato.id, body="一", customer_id=customer.id
            ),
        )
        correct_note(session, saved["id"], body="二", staff_id=suzuki.id)
        after = correct_note(session, saved["id"], body="三", staff_id=sato.id)
        assert after["body"] == "三"
        assert [(r["body"], r["staff_name"]) for r in after["revisions"]] == [
            ("一", "鈴木 花"),
            ("二", "佐藤 健"),
        ]
        assert session.scalar(select(func.count()).select_from(NoteRevision)) == 2
        with pytest.raises(NoteRefused) as refused:
            correct_note(session, saved["id"] + 1, body="x", staff_id=sato.id)
        assert refused.value.reason == "not_found"


def test_answered_calls_get_their_talk_time_and_leave_the_missed_list(
    database: Database,
) -> None:
    with database.session_factory() as session:
        staff = add_staff(session, "佐藤 健", "203", "sato")
        customer = add_customer(session, "山田 太郎", ("+81312345678", "自宅"))
        start(session, "a" * 32, T0, "+81312345678", customer_id=customer.id)
        start(session, "b" * 32, T0 + dt.timedelta(minutes=5), "+81312345678")
        start(session, "c" * 32, T0 + dt.timedelta(minutes=9), "+81312345678")
        start(session, "d" * 32, T0 + dt.timedelta(minutes=1), None, withheld="anonymous")
        start(session, "e" * 32, T0 + dt.timedelta(minutes=2), None, withheld="anonymous")
        start(session, "f" * 32, T0 + dt.timedelta(minutes=3), "+81661234567")
        record_call_answered(
            session,
            id="f" * 32,
            staff_id=staff.id,
            extension="203",
            at=T0 + dt.timedelta(minutes=3, seconds=4),
            how="identity",
        )
        session.commit()
        answered = session.get(Call, "f" * 32)
        assert answered is not None and answered.state == "answered"
        for call_id, minutes, outcome in (
            ("a", 1, "abandoned"),
            ("b", 6, "timeout"),
            ("c", 10, "hangup"),
            ("d", 2, "abandoned"),
            ("e", 3, "abandoned"),
            ("f", 5, "abandoned"),  # someone answered it: not missed whatever the PBX says
        ):
            record_call_ended(
                session,
                id=call_id * 32,
                ended_at=T0 + dt.timedelta(minutes=minutes),
                outcome=outcome,
            )
        session.commit()
        session.expire_all()
        answered = session.get(Call, "f" * 32)
        assert answered is not None
        assert (answered.state, answered.talk_seconds, answered.answered_how) == (
            "ended",
            116,
            "identity",
        )
        assert session.get(Call, "a" * 32).talk_seconds is None  # type: ignore[union-attr]
        # An answer learnt after the end does not reopen the call.
        record_call_answered(
            session, id="c" * 32, staff_id=staff.id, extension="203", at=T0, how="time-window"
        )
        session.commit()
        session.expire_all()
        assert session.get(Call, "c" * 32).state == "ended"  # type: ignore[union-attr]

        groups = missed_calls(session)
        assert [(g["number"], g["call_ids"], g["attempts"]) for g in groups] == [
            ("+81312345678", ["b" * 32, "a" * 32], 2),
            (None, ["e" * 32], 1),  # withheld: one row per call
            (None, ["d" * 32], 1),
        ]
        assert groups[0]["customer"] == {"id": customer.id, "name": "山田 太郎"}
        assert (groups[0]["first_at"], groups[0]["last_at"]) == (
            T0,
            T0 + dt.timedelta(minutes=5),
        )

        resolved = resolve_missed(
            session,
            call_ids=["a" * 32, "b" * 32, "c" * 32, "f" * 32],
            status="called_back",
            staff_id=staff.id,
            at=T0 + dt.timedelta(hours=1),
            note="折り返し済み",
        )
        session.commit()
        assert resolved == 2  # c and f were answered: not missed calls
        assert [g["call_ids"] for g in missed_calls(session)] == [["e" * 32], ["d" * 32]]
        everything = missed_calls(session, include_resolved=True)
        [done] = [g for g in everything if g["status"] is not None]
        assert (done["status"], done["resolved_by"], done["resolution_note"]) == (
            "called_back",
            "佐藤 健",
            "折り返し済み",
        )
        # A colleague's second click changes nothing.
        assert (
            resolve_missed(
                session,
                call_ids=["a" * 32],
                status="no_action",
                staff_id=staff.id,
                at=T0,
                note=None,
            )
            == 0
        )
