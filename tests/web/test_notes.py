"""Notes through the real server: saved once per key, corrected with history, a new
customer from a call that pops on the next call, and the note first on the caller's card."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from db.calls import record_call_started
from tests.fixtures_db import PostgresSchema
from tests.waiting import wait_for
from tests.web.conftest import (
    TOKYO,
    Live,
    Phone,
    SipCall,
    make_settings,
    next_message,
    seed,
    serve,
    snapshot,
    stop_live,
)

pytestmark = pytest.mark.asyncio

YAMADA_ID = 1  # the demo's first customer, 山田 太郎 (03-1234-5678)
UNKNOWN = "0661234567"  # nobody's number in the demo (Osaka)


def note(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "idempotency_key": uuid.uuid4().hex,
        "call_id": None,
        "customer_id": YAMADA_ID,
        "body": "見積の件で折り返し希望",
        "tags": ["見積依頼"],
        "follow_up_on": None,
        "new_customer": None,
    }
    body.update(fields)
    return body


def add_call(live: Live, *, caller: str | None, customer_id: int | None = None) -> str:
    """A call row as the call log writes it, for the notes to refer to."""
    call_id = uuid.uuid4().hex
    with live.web.services.session_factory() as session:
        record_call_started(
            session,
            id=call_id,
            sip_call_id=f"{call_id}@pbx",
            caller_e164=caller,
            caller_raw=None,
            display_name=None,
            withheld=None if caller else "anonymous",
            dialed_e164=None,
            started_at=datetime.now(TOKYO),
            customer_id=customer_id,
        )
        session.commit()
    return call_id


def count_notes(db_path: Path, key: str) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        row = connection.execute(
            "SELECT count(*) FROM notes WHERE idempotency_key = ?", (key,)
        ).fetchone()
    return int(row[0])


async def test_a_retried_save_is_stored_once_and_answers_200_with_the_same_note(
    live_web: Live,
) -> None:
    client = await live_web.login()
    body = note(follow_up_on="2026-12-01", tags=["見積依頼", "予約"])
    first = await client.post("/api/notes", json=body)
    assert first.status_code == 201, first.text
    saved = first.json()
    assert saved["staff_name"] == "佐藤 健"  # the logged-in writer
    assert saved["customer_id"] == YAMADA_ID
    assert saved["tags"] == ["見積依頼", "予約"]
    assert saved["follow_up_on"] == "2026-12-01"
    assert saved["revisions"] == []
    assert saved["at"].endswith("+09:00")

    again = await client.post("/api/notes", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == saved
    assert count_notes(live_web.db_path, body["idempotency_key"]) == 1


async def test_twenty_identical_saves_at_once_store_one_note(live_web: Live) -> None:
    client = await live_web.login()
    body = note()
    answers = await asyncio.gather(*(client.post("/api/notes", json=body) for _ in range(20)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 19 + [201], [a.text for a in answers if a.status_code >= 300]
    assert len({a.json()["id"] for a in answers}) == 1
    assert count_notes(live_web.db_path, body["idempotency_key"]) == 1


@pytest.mark.postgres
async def test_twenty_identical_saves_at_once_on_postgresql(tmp_path: Path) -> None:
    schema = PostgresSchema()
    url = schema.create()
    try:
        demo = seed(url)
        settings = make_settings(tmp_path / "unused.db", database={"url": url})
        live, task = await serve(settings, demo, tmp_path / "unused.db", with_sip=False)
        try:
            client = await live.login()
            call_id = add_call(live, caller="+81661234567")
            body = note(
                customer_id=None,
                call_id=call_id,
                new_customer={"name": "大阪 花子", "furigana": None},
            )
            answers = await asyncio.gather(
                *(client.post("/api/notes", json=body) for _ in range(20))
            )
            codes = sorted(a.status_code for a in answers)
            assert codes == [200] * 19 + [201], [a.text for a in answers if a.status_code >= 300]
        finally:
            await stop_live(live, task)
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                notes = connection.scalar(
                    text("SELECT count(*) FROM notes WHERE idempotency_key = :k"),
                    {"k": body["idempotency_key"]},
                )
                # The losers' customers went with their rolled-back transactions.
                customers = connection.scalar(
                    text("SELECT count(*) FROM customers WHERE name = '大阪 花子'")
                )
        finally:
            engine.dispose()
        assert (notes, customers) == (1, 1)
    finally:
        schema.drop()


async def test_a_correction_keeps_the_earlier_texts_and_who_changed_them(
    live_web: Live,
) -> None:
    sato = await live_web.login()
    saved = (await sato.post("/api/notes", json=note(body="初回の文"))).json()
    suzuki = live_web.client()
    other = next(a for a in live_web.demo.accounts if a.login != live_web.demo.login)
    response = await suzuki.post(
        "/api/session", json={"login": other.login, "password": other.password}
    )
    assert response.status_code == 200

    first = await suzuki.patch(f"/api/notes/{saved['id']}", json={"body": "二回目の文"})
    assert first.status_code == 200, first.text
    second = await sato.patch(f"/api/notes/{saved['id']}", json={"body": "三回目の文"})
    corrected = second.json()
    assert corrected["body"] == "三回目の文"
    assert corrected["staff_name"] == "佐藤 健"  # the writer stays the writer
    assert [(r["body"], r["staff_name"]) for r in corrected["revisions"]] == [
        ("初回の文", other.name),
        ("二回目の文", "佐藤 健"),
    ]
    assert corrected["revisions"][0]["at"] <= corrected["revisions"][1]["at"]
    # The same text again is no change and no revision.
    same = await sato.patch(f"/api/notes/{saved['id']}", json={"body": "三回目の文"})
    assert len(same.json()["revisions"]) == 2
    record = (await sato.get(f"/api/customers/{YAMADA_ID}")).json()
    assert record["notes"][0]["body"] == "三回目の文"

    assert (await sato.patch("/api/notes/999999", json={"body": "x"})).status_code == 404
    assert (await sato.patch(f"/api/notes/{saved['id']}", json={"body": ""})).status_code == 422


async def test_the_revisions_route_reads_a_notes_history_oldest_first(live_web: Live) -> None:
    sato = await live_web.login()
    saved = (await sato.post("/api/notes", json=note(body="最初の文"))).json()
    untouched = (await sato.get(f"/api/notes/{saved['id']}/revisions")).json()
    assert untouched == {
        "note_id": saved["id"],
        "body": "最初の文",
        "staff_name": "佐藤 健",
        "at": saved["at"],
        "revisions": [],
    }
    await sato.patch(f"/api/notes/{saved['id']}", json={"body": "二番目の文"})
    await sato.patch(f"/api/notes/{saved['id']}", json={"body": "三番目の文\n二行目"})
    history = (await sato.get(f"/api/notes/{saved['id']}/revisions")).json()
    assert history["body"] == "三番目の文\n二行目"
    assert [(r["body"], r["staff_name"]) for r in history["revisions"]] == [
        ("最初の文", "佐藤 健"),
        ("二番目の文", "佐藤 健"),
    ]
    assert history["revisions"][0]["at"].endswith("+09:00")
    assert (await sato.get("/api/notes/999999/revisions")).status_code == 404
    assert (await sato.get("/api/notes/0/revisions")).status_code == 422


async def test_the_call_log_carries_each_calls_notes_with_their_history(live_web: Live) -> None:
    client = await live_web.login()
    call_id = add_call(live_web, caller="+81312345678", customer_id=YAMADA_ID)
    saved = (
        await client.post("/api/notes", json=note(call_id=call_id, body="一行目\n二行目"))
    ).json()
    await client.patch(f"/api/notes/{saved['id']}", json={"body": "直した一行目\n二行目"})
    page = (await client.get("/api/calls", params={"number": "03-1234-5678"})).json()
    [row] = [c for c in page["calls"] if c["id"] == call_id]
    assert row["note_ids"] == [saved["id"]]
    [shown] = row["notes"]
    assert shown["body"] == "直した一行目\n二行目"
    assert [r["body"] for r in shown["revisions"]] == ["一行目\n二行目"]
    assert row["customer"] == {"id": YAMADA_ID, "name": "山田 太郎"}
    # Calls without notes say so with an empty list, not null.
    assert all(c["notes"] == [] for c in page["calls"] if c["id"] != call_id)


async def test_a_new_note_is_first_on_the_callers_card(live_web: Live) -> None:
    client = await live_web.login()
    saved = await client.post("/api/notes", json=note(body="今日の電話: 雨樋の相談"))
    assert saved.status_code == 201
    card = (await client.get("/api/lookup", params={"number": "03-1234-5678"})).json()
    [yamada] = [c for c in card["customers"] if c["id"] == YAMADA_ID]
    assert yamada["notes"][0]["body"] == "今日の電話: 雨樋の相談"
    assert yamada["notes"][0]["staff_name"] == "佐藤 健"
    # The card's line names its note (修正 and 履歴 on the pop) and says when it was corrected.
    assert yamada["notes"][0]["id"] == saved.json()["id"]
    assert yamada["notes"][0]["corrected_at"] is None
    await client.patch(f"/api/notes/{saved.json()['id']}", json={"body": "雨樋と屋根の相談"})
    card = (await client.get("/api/lookup", params={"number": "03-1234-5678"})).json()
    [yamada] = [c for c in card["customers"] if c["id"] == YAMADA_ID]
    assert yamada["notes"][0]["body"] == "雨樋と屋根の相談"
    assert yamada["notes"][0]["corrected_at"].endswith("+09:00")
    assert all(n["corrected_at"] is None for n in yamada["notes"][1:])


async def test_a_note_on_a_call_takes_the_calls_customer(live_web: Live) -> None:
    client = await live_web.login()
    call_id = add_call(live_web, caller="+81312345678", customer_id=YAMADA_ID)
    saved = await client.post("/api/notes", json=note(customer_id=None, call_id=call_id))
    assert saved.status_code == 201, saved.text
    assert (saved.json()["call_id"], saved.json()["customer_id"]) == (call_id, YAMADA_ID)
    page = (await client.get("/api/calls", params={"number": "03-1234-5678"})).json()
    [logged] = [c for c in page["calls"] if c["id"] == call_id]
    assert logged["note_ids"] == [saved.json()["id"]]


async def test_a_note_needs_a_customer_and_real_references(live_web: Live) -> None:
    client = await live_web.login()
    unmatched = add_call(live_web, caller="+81661234567")
    refused = [
        (note(customer_id=None), 422),  # nobody to file it under
        (note(customer_id=None, call_id=unmatched), 422),  # a call of nobody known
        (note(call_id="f" * 32), 404),
        (note(customer_id=999_999), 404),
        (note(tags=["重要"]), 422),  # not one of the five tags
        (note(idempotency_key="short"), 422),
        (note(body=""), 422),
        (note(body="x" * 5001), 422),
        (note(body="a\x00b"), 422),
        (note(customer_id=2**31), 422),
    ]
    for body, code in refused:
        response = await client.post("/api/notes", json=body)
        assert response.status_code == code, (body, response.text)
    with contextlib.closing(sqlite3.connect(live_web.db_path)) as connection:
        assert connection.execute(
            "SELECT count(*) FROM notes WHERE idempotency_key IS NOT NULL"
        ).fetchone() == (0,)


@contextlib.asynccontextmanager
async def board(live: Live) -> AsyncIterator[Any]:
    cookie = await live.session_cookie()
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers >= 1, what="subscriber")
        await snapshot(ws)
        yield ws


async def ring_and_hang_up(live: Live, phone: Phone, ws: Any, number: str) -> dict[str, Any]:
    """A real SIP call that rings, pops and is abandoned; the pop, once its row is logged."""
    call = SipCall(phone, number, display="オオサカ ハナコ")
    call.invite()
    ringing = await next_message(ws)
    assert ringing["type"] == "call.ringing"
    call.cancel()
    await phone.response("CANCEL", 200)
    call.ack(await phone.response("INVITE", 487))
    ended = await next_message(ws)
    assert ended["type"] == "call.ended"

    def logged() -> bool:
        with contextlib.closing(sqlite3.connect(live.db_path)) as connection:
            row = connection.execute(
                "SELECT state FROM calls WHERE id = ?", (ringing["call"]["id"],)
            ).fetchone()
        return row is not None and row[0] == "ended"

    await wait_for(logged, what="the call row")
    return ringing


async def test_a_new_customer_from_a_call_pops_on_the_next_call(live: Live, phone: Phone) -> None:
    client = await live.login()
    async with board(live) as ws:
        first = await ring_and_hang_up(live, phone, ws, UNKNOWN)
        assert first["card"]["status"] == "unknown"
        saved = await client.post(
            "/api/notes",
            json=note(
                customer_id=None,
                call_id=first["call"]["id"],
                body="新規のお客様。見積希望",
                new_customer={"name": "大阪 花子", "furigana": "おおさか はなこ"},
            ),
        )
        assert saved.status_code == 201, saved.text
        customer_id = saved.json()["customer_id"]
        record = (await client.get(f"/api/customers/{customer_id}")).json()
        assert record["name"] == "大阪 花子"
        assert [(p["number"], p["label"]) for p in record["phones"]] == [("+81661234567", "電話")]

        second = SipCall(phone, UNKNOWN)
        second.invite()
        ringing = await next_message(ws)
        assert ringing["type"] == "call.ringing"
        assert ringing["card"]["status"] == "matched"
        [popped] = ringing["card"]["customers"]
        assert (popped["id"], popped["name"]) == (customer_id, "大阪 花子")
        assert popped["notes"][0]["body"] == "新規のお客様。見積希望"
        second.cancel()
        await phone.response("CANCEL", 200)
        second.ack(await phone.response("INVITE", 487))
    # The first call is now that customer's call in the log.
    page = (await client.get("/api/calls", params={"number": UNKNOWN})).json()
    logged = {c["id"]: c for c in page["calls"]}
    assert logged[first["call"]["id"]]["customer"] == {"id": customer_id, "name": "大阪 花子"}


ROUTES = [
    ("POST", "/api/notes", note()),
    ("PATCH", "/api/notes/1", {"body": "x"}),
    ("GET", "/api/notes/1/revisions", None),
    ("GET", "/api/calls", None),
    ("GET", "/api/calls/missed", None),
    ("POST", "/api/calls/missed/resolve", {"call_ids": ["a"], "status": "no_action"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=lambda v: str(v)[:30])
async def test_every_records_route_needs_a_session(
    live_web: Live, method: str, path: str, body: Any
) -> None:
    stranger: httpx.AsyncClient = live_web.client()
    response = await stranger.request(method, path, json=body)
    assert response.status_code == 401, response.text
    with contextlib.closing(sqlite3.connect(live_web.db_path)) as connection:
        assert connection.execute(
            "SELECT count(*) FROM notes WHERE idempotency_key IS NOT NULL"
        ).fetchone() == (0,)
