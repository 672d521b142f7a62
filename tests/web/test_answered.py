"""Who answered, from the PBX's dialog events: a phone's confirmed dialog names the call.

Real INVITEs ring on the SIP port and reach a WebSocket client; the dialog changes are
handed to the call service the way the SIP watcher hands it each parsed NOTIFY
(tests/peers/test_dialog_events.py drives the NOTIFYs themselves through Kamailio).
"""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from callpop.calls import StaffOnExtension
from telephony.dialoginfo import Dialog
from telephony.dialogstate import DialogChange
from tests.waiting import wait_for
from tests.web.conftest import Live, Phone, SipCall, next_message, snapshot

SATO = StaffOnExtension(id=1, name="佐藤 健", extension="203")
SUZUKI = StaffOnExtension(id=2, name="鈴木 美咲", extension="204")


def _dialog(
    state: str, *, dialog_id: str = "d1", remote: str | None = None, call_id: str | None = None
) -> Dialog:
    return Dialog(id=dialog_id, state=state, remote_identity=remote, call_id=call_id)


def _change(staff: StaffOnExtension, dialog: Dialog, previous: str | None) -> DialogChange:
    return DialogChange(extension=staff.extension, dialog=dialog, previous=previous)


async def _watching(live: Live) -> tuple[Any, ClientConnection]:
    cookie = await live.session_cookie()
    context = live.websocket(cookie=cookie)
    ws = await context.__aenter__()
    await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
    await snapshot(ws)
    return context, ws


@pytest.mark.asyncio
async def test_the_callers_number_names_the_call_and_the_hang_up_its_talk_time(
    live: Live, phone: Phone
) -> None:
    context, ws = await _watching(live)
    try:
        call = SipCall(phone, "0312345678")
        call.invite()
        ringing = await next_message(ws)
        calls = live.services.calls
        calls.on_dialog(_change(SATO, _dialog("early", remote="sip:0312345678@pbx"), None), SATO)
        confirmed = _dialog("confirmed", remote="<sip:+81312345678@pbx;user=phone>")
        calls.on_dialog(_change(SATO, confirmed, "early"), SATO)
        answered = await next_message(ws)
        assert answered["type"] == "call.answered"
        assert answered["call"]["id"] == ringing["call"]["id"]
        assert answered["call"]["state"] == "answered"
        assert answered["call"]["answered_by"] == {
            "staff_id": 1,
            "name": "佐藤 健",
            "extension": "203",
            "how": "identity",
        }
        # The PBX cancels callpop's ring leg once the phone answered; the talk goes on
        # (the call stays answered) until the phone hangs up.
        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
        calls.on_dialog(_change(SATO, _dialog("terminated"), "confirmed"), SATO)
        hung_up = await next_message(ws)
        assert hung_up["type"] == "call.ended" and hung_up["call"]["outcome"] == "hangup"
        assert hung_up["call"]["talk_seconds"] is not None and hung_up["call"]["talk_seconds"] >= 0
        assert hung_up["call"]["answered_by"]["name"] == "佐藤 健"
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_two_calls_at_once_and_one_number_on_two_lines_are_never_mixed_up(
    live: Live, phone: Phone
) -> None:
    context, ws = await _watching(live)
    try:
        calls = live.services.calls
        first = SipCall(phone, "0312345678")
        first.invite()
        first_id = (await next_message(ws))["call"]["id"]
        second = SipCall(phone, "0312345678", dialed="0335550101")  # same caller, other line
        second.invite()
        second_id = (await next_message(ws))["call"]["id"]
        other = SipCall(phone, "09099990000")
        other.invite()
        other_id = (await next_message(ws))["call"]["id"]

        calls.on_dialog(
            _change(SUZUKI, _dialog("confirmed", remote="sip:09099990000@pbx"), None), SUZUKI
        )
        calls.on_dialog(
            _change(SATO, _dialog("confirmed", remote="sip:0312345678@pbx"), None), SATO
        )
        calls.on_dialog(
            _change(
                SUZUKI, _dialog("confirmed", dialog_id="d2", remote="sip:0312345678@pbx"), None
            ),
            SUZUKI,
        )
        who = {}
        for _ in range(3):
            message = await next_message(ws)
            assert message["type"] == "call.answered"
            who[message["call"]["id"]] = message["call"]["answered_by"]["name"]
        assert who == {other_id: "鈴木 美咲", first_id: "佐藤 健", second_id: "鈴木 美咲"}
        for call in (first, second, other):
            call.cancel(answered_elsewhere=True)
            await phone.response("INVITE", 487)
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_without_an_identity_only_one_call_cancelled_just_now_is_taken(
    live: Live, phone: Phone
) -> None:
    # Asterisk/chan_pjsip: the dialog id is the extension, no call-id, no remote identity.
    context, ws = await _watching(live)
    try:
        calls = live.services.calls
        call = SipCall(phone, "0312345678")
        call.invite()
        call_id = (await next_message(ws))["call"]["id"]
        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
        assert (await next_message(ws))["type"] == "call.ended"
        calls.on_dialog(_change(SATO, _dialog("confirmed", dialog_id="203"), "early"), SATO)
        answered = await next_message(ws)
        assert answered["call"]["id"] == call_id
        assert answered["call"]["answered_by"]["how"] == "time-window"
        # Its ring leg was cancelled because 203 picked up: the talk is on, answered again.
        assert answered["call"]["state"] == "answered" and answered["call"]["outcome"] is None

        # Two calls cancelled together: which one 204 took cannot be told, so nobody is named.
        unmatched = calls.dialogs_unmatched
        pair = [SipCall(phone, "09099990000"), SipCall(phone, "0455551234")]
        for other in pair:
            other.invite()
            await next_message(ws)
        for other in pair:
            other.cancel(answered_elsewhere=True)
            await phone.response("INVITE", 487)
            await next_message(ws)
        calls.on_dialog(_change(SUZUKI, _dialog("confirmed", dialog_id="204"), "early"), SUZUKI)
        assert calls.dialogs_unmatched == unmatched + 1
        snapshot_now = await live.services.hub.snapshot()
        assert [entry.call.id for entry in snapshot_now.calls] == [call_id]  # 佐藤 talks
        assert snapshot_now.calls[0].card is not None  # with the card it had when it rang
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_the_pbx_call_id_names_the_call_when_it_is_kept(live: Live, phone: Phone) -> None:
    context, ws = await _watching(live)
    try:
        call = SipCall(phone, "0312345678")
        call.invite()
        call_id = (await next_message(ws))["call"]["id"]
        dialog = _dialog("confirmed", remote="sip:somebody@pbx", call_id=call.call_id)
        live.services.calls.on_dialog(_change(SATO, dialog, None), SATO)
        answered = await next_message(ws)
        assert answered["call"]["id"] == call_id
        assert answered["call"]["answered_by"]["how"] == "call-id"
        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
    finally:
        await context.__aexit__(None, None, None)


def _notify_body(version: int, state: str, caller: str) -> bytes:
    return (
        '<?xml version="1.0"?>\n'
        '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
        f'version="{version}" state="full" entity="sip:203@pbx">\n'
        f' <dialog id="a1b2" call-id="x@pbx" direction="recipient"><state>{state}</state>\n'
        f"  <remote><identity>sip:{caller}@pbx</identity></remote>\n"
        "  <local><identity>sip:203@pbx</identity></local></dialog>\n"
        "</dialog-info>\n"
    ).encode()


@pytest.mark.asyncio
async def test_notify_bodies_become_the_answer_and_junk_is_counted(
    live: Live, phone: Phone
) -> None:
    from callpop.dialogs import DialogRouter
    from telephony.events import DialogNotified

    router = DialogRouter(live.services.calls, {"203": SATO})
    context, ws = await _watching(live)
    try:
        call = SipCall(phone, "0312345678")
        call.invite()
        call_id = (await next_message(ws))["call"]["id"]

        def notify(body: bytes) -> None:
            router.notified(
                DialogNotified(
                    extension="203", body=body, content_type="application/dialog-info+xml", at=0
                )
            )

        notify(b"<!DOCTYPE x [<!ENTITY a 'aaaa'>]><dialog-info>&a;</dialog-info>")
        assert router.parse_errors == 1
        notify(_notify_body(0, "early", "0312345678"))
        ringing_there = await next_message(ws)
        assert ringing_there["type"] == "staff.presence"
        assert ringing_there["staff"] == [
            {"staff_id": 1, "name": "佐藤 健", "extension": "203", "presence": "ringing"}
        ]
        notify(_notify_body(1, "confirmed", "0312345678"))
        got = {m["type"]: m for m in [await next_message(ws), await next_message(ws)]}
        assert got["call.answered"]["call"]["id"] == call_id
        assert got["call.answered"]["call"]["answered_by"]["name"] == "佐藤 健"
        assert got["staff.presence"]["staff"][0]["presence"] == "busy"
        # A browser connecting now sees 佐藤 on a call in its snapshot.
        board = await live.services.hub.snapshot()
        assert [(s.extension, s.presence) for s in board.staff] == [("203", "busy")]
        # The PBX cancels callpop's ring leg: the call stays answered until 203 hangs up.
        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
        notify(_notify_body(2, "terminated", "0312345678"))
        got = {m["type"]: m for m in [await next_message(ws), await next_message(ws)]}
        assert got["call.ended"]["call"]["talk_seconds"] is not None
        assert got["staff.presence"]["staff"][0]["presence"] == "idle"
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_a_handover_note_follows_the_call_to_the_person_it_was_handed_to(
    live: Live, phone: Phone
) -> None:
    context, ws = await _watching(live)
    try:
        calls = live.services.calls
        sato = live.client()
        for client, account in ((sato, "sato"),):
            demo = next(a for a in live.demo.accounts if a.login == account)
            await client.post("/api/session", json={"login": demo.login, "password": demo.password})
        call = SipCall(phone, "0312345678")
        call.invite()
        call_id = (await next_message(ws))["call"]["id"]
        caller = "sip:0312345678@pbx"
        calls.on_dialog(_change(SATO, _dialog("confirmed", remote=caller), "early"), SATO)
        assert (await next_message(ws))["call"]["answered_by"]["name"] == "佐藤 健"

        note = "雨漏り再発の件、2階北側"
        handed = await sato.post(
            f"/api/calls/{call_id}/handover", json={"to_staff_id": SUZUKI.id, "note": note}
        )
        assert handed.status_code == 200, handed.text
        updated = await next_message(ws)
        assert updated["type"] == "call.updated" and updated["card"] is None
        handover = updated["call"]["handover"]
        assert (handover["note"], handover["to_name"], handover["state"]) == (
            note,
            "鈴木 美咲",
            "requested",
        )
        assert handover["from_name"] == "佐藤 健" and handover["to_extension"] == "204"

        # The PBX rings 204 with the same caller: the handover is ringing there.
        calls.on_dialog(
            _change(SUZUKI, _dialog("early", dialog_id="t1", remote=caller), None), SUZUKI
        )
        assert (await next_message(ws))["call"]["handover"]["state"] == "ringing"
        calls.on_dialog(
            _change(SUZUKI, _dialog("confirmed", dialog_id="t1", remote=caller), "early"), SUZUKI
        )
        moved = await next_message(ws)
        assert moved["type"] == "call.answered"
        assert moved["call"]["answered_by"]["name"] == "鈴木 美咲"
        assert moved["call"]["handover"]["state"] == "answered"

        # 佐藤's phone leaves the call after the transfer: the talk goes on at 204.
        calls.on_dialog(_change(SATO, _dialog("terminated"), "confirmed"), SATO)
        calls.on_dialog(_change(SUZUKI, _dialog("terminated", dialog_id="t1"), "confirmed"), SUZUKI)
        ended = await next_message(ws)
        assert ended["call"]["answered_by"]["name"] == "鈴木 美咲"
        assert ended["call"]["talk_seconds"] is not None
        call.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)

        # The call log keeps who answered first and who it was handed to, with the note.
        async def logged() -> dict[str, Any] | None:
            page = (await sato.get("/api/calls", params={"number": "0312345678"})).json()
            found = [c for c in page["calls"] if c["id"] == call_id]
            done = found and found[0]["handover"] and found[0]["handover"]["state"] == "answered"
            return found[0] if done else None

        record = await wait_for(logged, what="the hand-over in the call log")
        assert record["answered_by"]["name"] == "鈴木 美咲"
        assert record["handover"] == {
            "from_staff_id": SATO.id,
            "from_name": "佐藤 健",
            "to_staff_id": SUZUKI.id,
            "to_name": "鈴木 美咲",
            "to_extension": "204",
            "state": "answered",
            "note": note,
        }
        assert record["routing"] is None
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_only_the_person_who_has_the_call_hands_it_over(live: Live, phone: Phone) -> None:
    client = await live.login()  # 佐藤, who has not taken this call
    call = SipCall(phone, "0312345678")
    call.invite()
    await wait_for(lambda: live.services.hub.stats.active_calls == 1, what="the pop")
    [entry] = (await live.services.hub.snapshot()).calls
    refused = await client.post(
        f"/api/calls/{entry.call.id}/handover", json={"to_staff_id": SUZUKI.id, "note": "x"}
    )
    assert refused.status_code == 409
    nobody = await client.post(
        f"/api/calls/{entry.call.id}/handover", json={"to_staff_id": 999, "note": "x"}
    )
    assert nobody.status_code == 404
    call.cancel()
    await phone.response("INVITE", 487)


@pytest.mark.asyncio
async def test_an_answer_goes_to_the_call_still_ringing_not_to_the_one_given_up_before(
    live: Live, phone: Phone
) -> None:
    """The caller gave up, then called again within minutes: the phone answered the
    second call, not the missed one before it."""
    context, ws = await _watching(live)
    try:
        calls = live.services.calls
        first = SipCall(phone, "0312345678")
        first.invite()
        first_id = (await next_message(ws))["call"]["id"]
        first.cancel()  # the caller hung up while it rang: missed
        await phone.response("INVITE", 487)
        assert (await next_message(ws))["call"]["outcome"] == "abandoned"
        again = SipCall(phone, "0312345678")
        again.invite()
        again_id = (await next_message(ws))["call"]["id"]
        calls.on_dialog(
            _change(SATO, _dialog("confirmed", remote="sip:0312345678@pbx"), None), SATO
        )
        answered = await next_message(ws)
        assert answered["type"] == "call.answered"
        assert answered["call"]["id"] == again_id != first_id
        again.cancel(answered_elsewhere=True)
        await phone.response("INVITE", 487)
    finally:
        await context.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_a_pbx_that_cancels_without_a_reason_still_gets_its_answer(
    live: Live, phone: Phone
) -> None:
    """The ring leg is CANCELled with no ``Reason: SIP;cause=200`` (abandoned, as far as
    callpop's leg knows), and a moment later 203's NOTIFY says it answered this caller:
    the call comes back answered, with its card, and the hang-up ends it as a talk."""
    context, ws = await _watching(live)
    try:
        calls = live.services.calls
        call = SipCall(phone, "0312345678")
        call.invite()
        call_id = (await next_message(ws))["call"]["id"]
        call.cancel()
        await phone.response("INVITE", 487)
        assert (await next_message(ws))["call"]["outcome"] == "abandoned"
        caller = "sip:0312345678@pbx"
        calls.on_dialog(_change(SATO, _dialog("confirmed", remote=caller), "early"), SATO)
        answered = await next_message(ws)
        assert answered["call"]["id"] == call_id
        assert answered["call"]["state"] == "answered" and answered["call"]["outcome"] is None
        [entry] = (await live.services.hub.snapshot()).calls
        assert entry.call.id == call_id and entry.card is not None
        calls.on_dialog(_change(SATO, _dialog("terminated", remote=caller), "confirmed"), SATO)
        ended = await next_message(ws)
        assert ended["type"] == "call.ended" and ended["call"]["outcome"] == "hangup"
        assert ended["call"]["talk_seconds"] is not None
    finally:
        await context.__aexit__(None, None, None)
