"""応答しました: staff claim a call, every browser sees who has it, nobody else can.

A real INVITE rings on the SIP port; two staff members are logged in over HTTP with a
WebSocket open. Claims go through ``POST /api/calls/{id}/claim``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import httpx
import pytest

from tests.waiting import wait_for
from tests.web.conftest import Live, Phone, SipCall, next_message, snapshot

YAMADA = "0312345678"


async def _login(live: Live, login: str) -> httpx.AsyncClient:
    account = next(a for a in live.demo.accounts if a.login == login)
    client = live.client()
    response = await client.post(
        "/api/session", json={"login": account.login, "password": account.password}
    )
    assert response.status_code == 200, response.text
    return client


def _call_row(live: Live, call_id: str) -> dict[str, Any] | None:
    with contextlib.closing(sqlite3.connect(live.db_path)) as connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
    return dict(row) if row is not None else None


@pytest.mark.asyncio
async def test_the_first_claim_wins_and_every_browser_sees_who(live: Live, phone: Phone) -> None:
    sato = await _login(live, "sato")
    suzuki = await _login(live, "suzuki")
    cookie = f"callpop_session={suzuki.cookies['callpop_session']}"
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        call = SipCall(phone, YAMADA)
        call.invite()
        ringing = await next_message(ws)
        call_id = ringing["call"]["id"]

        first = await sato.post(f"/api/calls/{call_id}/claim")
        assert first.status_code == 200, first.text
        taken = first.json()
        assert taken["state"] == "answered"
        assert taken["answered_by"] == {
            "staff_id": taken["answered_by"]["staff_id"],
            "name": "佐藤 健",
            "extension": "203",
            "how": "claimed",
        }
        answered = await next_message(ws)
        assert answered["type"] == "call.answered"
        assert answered["seq"] == ringing["seq"] + 1
        assert answered["call"]["answered_by"]["name"] == "佐藤 健"
        assert answered["call"]["answered_at"] is not None

        # Someone else is refused and told who has it; the same person again is a no-op.
        second = await suzuki.post(f"/api/calls/{call_id}/claim")
        assert second.status_code == 409
        assert second.json()["detail"] == "佐藤 健が応答済みです"
        again = await sato.post(f"/api/calls/{call_id}/claim")
        assert again.status_code == 200 and again.json() == taken

        # The board keeps the answered call until its end, with who has it.
        [entry] = (await live.services.hub.snapshot()).calls
        assert entry.call.state == "answered" and entry.call.answered_by is not None

        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
        ended = await next_message(ws)
        assert ended["type"] == "call.ended"
        assert ended["call"]["answered_by"]["name"] == "佐藤 健"
    row = await wait_for(
        lambda: (r := _call_row(live, call_id)) and r["state"] == "ended" and r,
        what="the call row, ended",
    )
    assert row["answered_how"] == "claimed" and row["answered_by"] == "203"
    assert row["talk_seconds"] is None  # the end of the talk is not known for a claim
    assert row["answered_staff_id"] == taken["answered_by"]["staff_id"]


@pytest.mark.asyncio
async def test_a_call_picked_up_elsewhere_is_claimed_after_its_leg_ended(
    live: Live, phone: Phone
) -> None:
    # In a ring group callpop's leg is CANCELled the moment someone picks up; that
    # person then claims a call the board shows under recent calls.
    suzuki = await _login(live, "suzuki")
    cookie = f"callpop_session={suzuki.cookies['callpop_session']}"
    async with live.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        call = SipCall(phone, "09099990000", display="")
        call.invite()
        call_id = (await next_message(ws))["call"]["id"]
        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
        assert (await next_message(ws))["type"] == "call.ended"

        claimed = await suzuki.post(f"/api/calls/{call_id}/claim")
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["state"] == "ended"
        message = await next_message(ws)
        assert message["type"] == "call.answered"
        assert message["call"]["state"] == "ended"
        assert message["call"]["answered_by"]["name"] == "鈴木 美咲"
    assert (await live.services.hub.snapshot()).calls == []  # not back on the board


@pytest.mark.asyncio
async def test_claims_need_a_session_and_a_real_call(live: Live) -> None:
    anonymous = live.client()
    assert (await anonymous.post(f"/api/calls/{'0' * 32}/claim")).status_code == 401
    sato = await _login(live, "sato")
    assert (await sato.post(f"/api/calls/{'0' * 32}/claim")).status_code == 404
    assert (await sato.post("/api/calls/not-a-call-id/claim")).status_code == 422
