"""「どちらが応答しましたか」: a phone answers and the PBX does not say which call.

Asterisk's chan_pjsip sends a dialog with no remote identity and no Call-ID. When two
calls had their ring legs cancelled as answered elsewhere at that moment, callpop
cannot tell which one the phone took: instead of guessing it asks the person on that
extension (``call.which``), who answers by claiming one. Real INVITEs and CANCELs go
to the SIP port; the dialog changes are handed to the call service the way the SIP
watcher hands it each parsed NOTIFY (as in test_answered.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from callpop.calls import StaffOnExtension
from telephony.dialoginfo import Dialog
from telephony.dialogstate import DialogChange
from tests.waiting import wait_for
from tests.web.conftest import Live, Phone, SipCall, next_message, snapshot

pytestmark = pytest.mark.asyncio

YAMADA = "0312345678"  # the demo's 山田 太郎
STRANGER = "09099990000"  # nobody's number in the demo


async def _login(live: Live, login: str) -> tuple[httpx.AsyncClient, StaffOnExtension]:
    account = next(a for a in live.demo.accounts if a.login == login)
    client = live.client()
    response = await client.post(
        "/api/session", json={"login": account.login, "password": account.password}
    )
    assert response.status_code == 200, response.text
    me = response.json()["staff"]
    return client, StaffOnExtension(id=me["id"], name=me["name"], extension=me["extension"])


def _cookie(client: httpx.AsyncClient) -> str:
    return f"callpop_session={client.cookies['callpop_session']}"


def _asterisk_dialog(staff: StaffOnExtension, state: str, previous: str | None) -> DialogChange:
    # chan_pjsip: the dialog id is the extension; no call-id, direction or <remote>.
    dialog = Dialog(id=staff.extension, state=state, remote_identity=None, call_id=None)
    return DialogChange(extension=staff.extension, dialog=dialog, previous=previous)


async def _two_calls_cancelled_together(ws: Any, phone: Phone) -> list[str]:
    """Two calls ring, and the PBX cancels both of callpop's legs as answered elsewhere."""
    calls = [SipCall(phone, YAMADA), SipCall(phone, STRANGER)]
    ids = []
    for call in calls:
        call.invite()
        ids.append((await next_message(ws))["call"]["id"])
    for call in calls:
        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
        assert (await next_message(ws))["type"] == "call.ended"
    return ids


async def test_the_phones_person_is_asked_and_their_claim_closes_the_question(
    live: Live, phone: Phone
) -> None:
    suzuki, suzuki_staff = await _login(live, "suzuki")
    calls = live.services.calls
    async with live.websocket(cookie=_cookie(suzuki)) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        first, second = await _two_calls_cancelled_together(ws, phone)
        unmatched = calls.dialogs_unmatched

        calls.on_dialog(_asterisk_dialog(suzuki_staff, "confirmed", "early"), suzuki_staff)
        question = await next_message(ws)
        assert question["type"] == "call.which"
        assert question["state"] == "open"
        assert (question["staff_id"], question["name"], question["extension"]) == (
            suzuki_staff.id,
            "鈴木 美咲",
            "204",
        )
        offered = question["calls"]
        assert [c["call_id"] for c in offered] == [first, second]  # oldest first
        assert offered[0]["customer_name"] == "山田 太郎"
        assert offered[0]["caller"]["national"] == "03-1234-5678"
        assert offered[1]["customer_name"] is None
        assert offered[1]["caller"]["national"] == "090-9999-0000"
        assert offered[0]["started_at"].endswith("+09:00")
        # Nobody was named: the count of what could not be told stays, and the question
        # is counted (both in /healthz).
        assert calls.dialogs_unmatched == unmatched + 1
        assert calls.which_asked == 1
        health = (await suzuki.get("/healthz")).json()
        assert (health["calls"]["dialogs_unmatched"], health["calls"]["which_asked"]) == (
            calls.dialogs_unmatched,
            1,
        )

        # A browser that connects now gets the open question in its snapshot.
        async with live.websocket(cookie=_cookie(suzuki)) as late:
            replay = await snapshot(late)
        assert [q["question_id"] for q in replay["questions"]] == [question["question_id"]]
        assert replay["questions"][0]["calls"] == offered

        # Suzuki answers: the call is theirs, the question closes.
        answer = await suzuki.post(f"/api/calls/{second}/claim")
        assert answer.status_code == 200, answer.text
        answered = await next_message(ws)
        assert answered["type"] == "call.answered" and answered["call"]["id"] == second
        assert answered["call"]["answered_by"]["how"] == "claimed"
        closed = await next_message(ws)
        assert closed["type"] == "call.which"
        assert (closed["question_id"], closed["state"], closed["calls"]) == (
            question["question_id"],
            "closed",
            [],
        )
        assert closed["seq"] == answered["seq"] + 1
        assert (await live.services.hub.snapshot()).questions == []

        # The phone's hang-up now ends the talk of the call it was.
        calls.on_dialog(_asterisk_dialog(suzuki_staff, "terminated", "confirmed"), suzuki_staff)
        hung_up = await next_message(ws)
        assert hung_up["type"] == "call.updated" and hung_up["call"]["id"] == second
        assert hung_up["call"]["talk_seconds"] is not None


async def test_calls_others_take_leave_the_question_and_the_last_one_closes_it(
    live: Live, phone: Phone
) -> None:
    suzuki, suzuki_staff = await _login(live, "suzuki")
    sato, sato_staff = await _login(live, "sato")
    calls = live.services.calls
    async with live.websocket(cookie=_cookie(suzuki)) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        first, second = await _two_calls_cancelled_together(ws, phone)
        calls.on_dialog(_asterisk_dialog(suzuki_staff, "confirmed", "early"), suzuki_staff)
        question = await next_message(ws)
        assert [c["call_id"] for c in question["calls"]] == [first, second]

        # Sato's phone says whose call it took (its remote identity): one call fewer.
        dialog = Dialog(id="s1", state="confirmed", remote_identity=f"sip:{YAMADA}@pbx")
        calls.on_dialog(DialogChange(extension="203", dialog=dialog, previous=None), sato_staff)
        answered = await next_message(ws)
        assert answered["type"] == "call.answered" and answered["call"]["id"] == first
        fewer = await next_message(ws)
        assert fewer["type"] == "call.which" and fewer["state"] == "open"
        assert [c["call_id"] for c in fewer["calls"]] == [second]
        assert [q.calls[0].call_id for q in (await live.services.hub.snapshot()).questions] == [
            second
        ]

        # Sato claims the other one too: nothing is left to ask about.
        assert (await sato.post(f"/api/calls/{second}/claim")).status_code == 200
        assert (await next_message(ws))["type"] == "call.answered"
        closed = await next_message(ws)
        assert (closed["type"], closed["state"]) == ("call.which", "closed")
        assert (await live.services.hub.snapshot()).questions == []


async def test_one_call_cancelled_is_taken_without_asking(live: Live, phone: Phone) -> None:
    suzuki, suzuki_staff = await _login(live, "suzuki")
    calls = live.services.calls
    async with live.websocket(cookie=_cookie(suzuki)) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        call = SipCall(phone, STRANGER)
        call.invite()
        call_id = (await next_message(ws))["call"]["id"]
        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
        await next_message(ws)
        calls.on_dialog(_asterisk_dialog(suzuki_staff, "confirmed", "early"), suzuki_staff)
        answered = await next_message(ws)
        assert answered["type"] == "call.answered" and answered["call"]["id"] == call_id
        assert answered["call"]["answered_by"]["how"] == "time-window"
        assert calls.which_asked == 0


async def test_too_many_open_questions_close_the_oldest_and_are_counted(
    live: Live, phone: Phone, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("callpop.calls.OPEN_QUESTIONS", 1)
    suzuki, suzuki_staff = await _login(live, "suzuki")
    _, sato_staff = await _login(live, "sato")
    calls = live.services.calls
    async with live.websocket(cookie=_cookie(suzuki)) as ws:
        await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
        await snapshot(ws)
        await _two_calls_cancelled_together(ws, phone)
        calls.on_dialog(_asterisk_dialog(suzuki_staff, "confirmed", "early"), suzuki_staff)
        first = await next_message(ws)
        assert (first["type"], first["staff_id"]) == ("call.which", suzuki_staff.id)

        # Sato's phone answers one of the same calls: a second question, one too many.
        calls.on_dialog(_asterisk_dialog(sato_staff, "confirmed", "early"), sato_staff)
        sent = {}
        for _ in range(2):
            message = await next_message(ws)
            sent[message["staff_id"]] = (message["question_id"], message["state"])
        assert sent[suzuki_staff.id] == (first["question_id"], "closed")
        assert sent[sato_staff.id][1] == "open"
        assert (calls.which_asked, calls.which_dropped) == (2, 1)
        open_now = (await live.services.hub.snapshot()).questions
        assert [q.staff_id for q in open_now] == [sato_staff.id]
        health = (await suzuki.get("/healthz")).json()
        assert health["calls"]["which_dropped"] == 1
    assert "the oldest closed unanswered" in caplog.text
