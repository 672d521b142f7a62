"""A real INVITE on the SIP port becomes a pop in a real WebSocket client, end to end.

The app runs with its SIP transport in trunk mode on a free UDP port; the phone is a
UDP socket sending literal SIP requests from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from websockets.exceptions import InvalidStatus

from db.engine import make_engine
from telephony.events import CallEnded, EndReason
from tests.fixtures_db import PostgresSchema, sqlite_locked
from tests.waiting import wait_for
from tests.web.conftest import (
    DemoTemplate,
    Live,
    Phone,
    SipCall,
    drop_table,
    make_settings,
    next_message,
    open_phone,
    ringing,
    seed,
    serve,
    snapshot,
    start_live,
    stop_live,
)

YAMADA = "0312345678"


def _call_row(db_path: Path, call_id: str) -> dict[str, Any] | None:
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
    return dict(row) if row is not None else None


def _pg_call_state(url: str, call_id: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            state = connection.execute(
                text("SELECT state FROM calls WHERE id = :id"), {"id": call_id}
            ).scalar()
    finally:
        engine.dispose()
    return None if state is None else str(state)


async def _ring_and_cancel(call: SipCall, *, answered_elsewhere: bool) -> None:
    call.cancel(answered_elsewhere=answered_elsewhere)
    await call.phone.response("CANCEL", 200)
    final = await call.phone.response("INVITE", 487)
    call.ack(final)


@pytest.mark.asyncio
async def test_invite_pops_the_customer_card_and_cancel_ends_it(live: Live, phone: Phone) -> None:
    cookie = await live.session_cookie()
    async with live.websocket(cookie=cookie) as first:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(first)
        call = SipCall(phone, YAMADA)
        call.invite()
        await phone.response("INVITE", 180)

        ringing = await next_message(first)
        assert ringing["type"] == "call.ringing"
        pop = ringing["call"]
        assert pop["state"] == "ringing"
        assert pop["sip_call_id"] == call.call_id
        assert pop["outcome"] is None and pop["ended_at"] is None
        assert pop["started_at"].endswith("+09:00")
        assert pop["caller"] == {
            "number": "+81312345678",
            "national": "03-1234-5678",
            "raw": YAMADA,
            "display_name": "ヤマダ タロウ",
            "withheld": None,
            "source": "from",
        }
        assert pop["dialed_line"] == {
            "number": "+81335550100",
            "national": "03-3555-0100",
            "name": "代表",
        }
        card = ringing["card"]
        assert card["status"] == "matched"
        assert card["customers"][0]["name"] == "山田 太郎"
        assert card["customers"][0]["assigned_staff"]["extension"] == "203"

        # A browser that connects during the ring gets the active call in the snapshot,
        # whose seq is the last message's: what follows is seq + 1.
        async with live.websocket(cookie=cookie) as second:
            board = await snapshot(second)
            assert board["seq"] == ringing["seq"]
            assert board["calls"] == [{"call": ringing["call"], "card": ringing["card"]}]

            client = await live.login()
            active = (await client.get("/api/calls/active")).json()
            assert active == board

            await _ring_and_cancel(call, answered_elsewhere=False)
            for ws in (first, second):
                ended = await next_message(ws)
                assert ended["type"] == "call.ended"
                assert "card" not in ended
                assert ended["call"]["id"] == pop["id"]
                assert ended["call"]["state"] == "ended"
                assert ended["call"]["outcome"] == "abandoned"
                assert ended["call"]["ended_at"].endswith("+09:00")
                assert ended["seq"] == ringing["seq"] + 1
            active = (await client.get("/api/calls/active")).json()
            assert active == {
                "type": "board.snapshot",
                "seq": ringing["seq"] + 1,
                "calls": [],
                "staff": [],
                "questions": [],
            }

    row = await wait_for(
        lambda: (r := _call_row(live.db_path, pop["id"])) and r.get("outcome") and r,
        what="the call row with its outcome",
    )
    assert row["outcome"] == "abandoned"
    assert row["sip_call_id"] == call.call_id


@pytest.mark.asyncio
async def test_cancel_with_reason_200_is_answered_elsewhere(live: Live, phone: Phone) -> None:
    cookie = await live.session_cookie()
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        call = SipCall(phone, "09099990000", display="")
        call.invite()
        ringing = await next_message(ws)
        assert ringing["card"]["status"] == "unknown"
        await _ring_and_cancel(call, answered_elsewhere=True)
        ended = await next_message(ws)
        assert ended["call"]["outcome"] == "answered_elsewhere"
    await wait_for(
        lambda: (r := _call_row(live.db_path, ended["call"]["id"])) and r.get("outcome"),
        what="the call row",
    )


@pytest.mark.asyncio
async def test_a_cancel_right_after_the_invite_still_pops_then_ends(
    live: Live, phone: Phone
) -> None:
    cookie = await live.session_cookie()
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        call = SipCall(phone, YAMADA)
        call.invite()
        call.cancel()  # before the lookup can have finished
        first = await next_message(ws)
        second = await next_message(ws)
        assert [first["type"], second["type"]] == ["call.ringing", "call.ended"]
        assert first["call"]["id"] == second["call"]["id"]
    assert (await live.services.hub.snapshot()).calls == []


@pytest.mark.asyncio
async def test_database_down_still_pops_with_a_degraded_card(live: Live, phone: Phone) -> None:
    cookie = await live.session_cookie()
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        drop_table(live.db_path, "customer_phones")
        call = SipCall(phone, YAMADA)
        call.invite()
        ringing = await next_message(ws)
        assert ringing["call"]["caller"]["number"] == "+81312345678"
        card = ringing["card"]
        assert card["status"] == "degraded"
        assert card["degraded_reason"] == "database"
        assert card["number"] == "+81312345678"
        assert card["customers"] == []
        assert card["message"]
        await _ring_and_cancel(call, answered_elsewhere=False)
        assert (await next_message(ws))["type"] == "call.ended"


@pytest.mark.asyncio
async def test_a_slow_lookup_pops_at_once_and_completes_the_card_when_it_arrives(
    tmp_path: Path, demo_template: DemoTemplate
) -> None:
    live, task = await start_live(tmp_path, demo_template, database={"lookup_timeout_ms": 200})
    try:
        cookie = await live.session_cookie()
        async with open_phone(live.sip_address) as phone, live.websocket(cookie=cookie) as ws:
            await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
            await snapshot(ws)
            live.services.engine.dispose()  # the lock needs every other connection closed
            with sqlite_locked(live.db_path) as release:
                call = SipCall(phone, YAMADA)
                call.invite()
                await phone.response("INVITE", 180)  # SIP never waits for the database
                ringing = await next_message(ws)
                assert ringing["type"] == "call.ringing"
                assert ringing["card"]["status"] == "degraded"
                assert ringing["card"]["degraded_reason"] == "timeout"
                assert ringing["card"]["message"] == "lookup timed out after 200 ms"
                assert ringing["call"]["caller"]["national"] == "03-1234-5678"
                release.set()
                updated = await next_message(ws)
            assert updated["type"] == "call.updated"
            assert updated["call"]["id"] == ringing["call"]["id"]
            assert updated["call"]["state"] == "ringing"
            card = updated["card"]
            assert card["status"] == "matched" and card["degraded_reason"] is None
            [yamada] = card["customers"]
            assert yamada["name"] == "山田 太郎"
            assert yamada["assigned_staff"]["extension"] == "203"
            # A browser that connects now gets the completed card in the snapshot.
            async with live.websocket(cookie=cookie) as later:
                [entry] = (await snapshot(later))["calls"]
                assert entry["call"]["id"] == ringing["call"]["id"]
                assert entry["card"] == card
            await _ring_and_cancel(call, answered_elsewhere=False)
            assert (await next_message(ws))["type"] == "call.ended"
        # The call log links the call to the customer the late card found.
        row = await wait_for(
            lambda: (
                (r := _call_row(live.db_path, ringing["call"]["id"])) is not None
                and r["state"] == "ended"
                and r["customer_id"] is not None
                and r
            ),
            what="the call row with its customer",
        )
        assert row["customer_id"] == yamada["id"]
    finally:
        await stop_live(live, task)


@pytest.mark.asyncio
async def test_healthz_in_trunk_mode(live: Live, phone: Phone) -> None:
    call = SipCall(phone, YAMADA)
    call.invite()
    await phone.response("INVITE", 180)
    await wait_for(lambda: live.services.hub.stats.seq == 1, what="the pop")
    response = await live.client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["sip"]["mode"] == "trunk"
    assert body["sip"]["registration"] == "disabled"
    assert body["sip"]["local_address"] == f"127.0.0.1:{live.settings.sip.bind_port}"
    assert isinstance(body["sip"]["stats"], dict) and body["sip"]["stats"]
    assert body["database"]["ok"] is True
    assert body["hub"] == {
        "seq": 1,
        "active_calls": 1,
        "subscribers": 0,
        "dropped_subscribers": 0,
    }
    assert body["calls"] == {
        "calls": 1,
        "record_failures": 0,
        "lookup_timeouts": 0,
        "lookup_failures": 0,
        "dialogs_matched": 0,
        "dialogs_unmatched": 0,
        "which_asked": 0,
        "which_dropped": 0,
    }
    assert "山田" not in response.text  # no customer data
    await _ring_and_cancel(call, answered_elsewhere=False)


@pytest.mark.asyncio
async def test_a_withheld_caller_pops_a_withheld_card(live: Live, phone: Phone) -> None:
    cookie = await live.session_cookie()
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        call = SipCall(
            phone, "anonymous", display="Anonymous", from_uri="sip:anonymous@anonymous.invalid"
        )
        call.invite()
        ringing = await next_message(ws)
        caller = ringing["call"]["caller"]
        assert caller["withheld"] == "anonymous"
        assert caller["number"] is None and caller["national"] is None
        assert ringing["card"]["status"] == "withheld"
        assert ringing["card"]["customers"] == []
        await _ring_and_cancel(call, answered_elsewhere=False)
        assert (await next_message(ws))["type"] == "call.ended"


@pytest.mark.asyncio
async def test_the_end_of_an_unknown_call_is_ignored(live: Live) -> None:
    cookie = await live.session_cookie()
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        await live.services.calls.place(
            CallEnded(call_id="never-rang@127.0.0.1", reason=EndReason.ABANDONED, at=0.0)
        )
        # Nothing was published for it: the next message is the marker sent after it.
        await live.services.hub.publish(ringing("marker"))
        assert (await next_message(ws))["call"]["id"] == "marker"
    assert [e.call.id for e in (await live.services.hub.snapshot()).calls] == ["marker"]


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_on_postgresql_a_pop_matches_and_a_dropped_schema_degrades(tmp_path: Path) -> None:
    schema = PostgresSchema()
    url = schema.create()
    try:
        demo = seed(url)
        settings = make_settings(tmp_path / "unused.db", database={"url": url})
        live, task = await serve(settings, demo, tmp_path / "unused.db")
        try:
            cookie = await live.session_cookie()
            async with open_phone(live.sip_address) as phone, live.websocket(cookie=cookie) as ws:
                await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
                await snapshot(ws)
                call = SipCall(phone, YAMADA)
                call.invite()
                ringing = await next_message(ws)
                assert ringing["card"]["customers"][0]["name"] == "山田 太郎"
                await _ring_and_cancel(call, answered_elsewhere=False)
                assert (await next_message(ws))["type"] == "call.ended"
                # The call row is written after the pop; let that finish, or dropping
                # the schema under the INSERT is a deadlock in PostgreSQL, not a test.
                await wait_for(
                    lambda: _pg_call_state(url, ringing["call"]["id"]) == "ended",
                    what="the call row",
                )

                # The database is gone from under the running service.
                schema.drop()
                second = SipCall(phone, YAMADA)
                second.invite()
                degraded = await next_message(ws)
                assert degraded["card"]["status"] == "degraded"
                assert degraded["call"]["caller"]["number"] == "+81312345678"
                await _ring_and_cancel(second, answered_elsewhere=True)
                assert (await next_message(ws))["call"]["outcome"] == "answered_elsewhere"
            health = await live.client().get("/healthz")
            assert health.status_code == 503
            assert health.json()["database"]["ok"] is False
        finally:
            await stop_live(live, task)
    finally:
        schema.drop()


@pytest.mark.asyncio
async def test_with_the_database_gone_a_logged_in_browser_still_connects_and_pops(
    live: Live, phone: Phone
) -> None:
    client = await live.login()
    cookie = f"callpop_session={client.cookies['callpop_session']}"
    for table in ("customer_phones", "staff"):
        drop_table(live.db_path, table)
    # REST answers that the database is unavailable, without a stack trace.
    me = await client.get("/api/me")
    assert me.status_code == 503
    assert me.json() == {"detail": "データベースに接続できません"}
    # The WebSocket still takes a signed session (and still refuses none).
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        call = SipCall(phone, YAMADA)
        call.invite()
        ringing = await next_message(ws)
        assert ringing["card"]["status"] == "degraded"
        await _ring_and_cancel(call, answered_elsewhere=False)
        assert (await next_message(ws))["type"] == "call.ended"
    with pytest.raises(InvalidStatus) as refused:
        async with live.websocket(cookie=None):
            pass
    assert refused.value.response.status_code == 403
