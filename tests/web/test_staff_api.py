"""``GET /api/staff``: the colleagues a call can be handed to, for logged-in staff only.

A real callpop (web only, the demo database) on a free port; requests over HTTP. The
presence comes from the board (``staff.presence`` published into the hub, as the
dialog events would); deactivated staff are not listed.
"""

from __future__ import annotations

import contextlib

import pytest

from popup_ui.messages import StaffPresence, StaffPresenceMessage
from popup_ui.schemas import StaffList
from tests.web.conftest import Live

pytestmark = pytest.mark.asyncio


async def test_staff_list_needs_a_session(live_web: Live) -> None:
    response = await live_web.client().get("/api/staff")
    assert response.status_code == 401
    assert "staff" not in response.json()
    # A session that ended is no session.
    client = await live_web.login()
    assert (await client.delete("/api/session")).status_code == 204
    assert (await client.get("/api/staff")).status_code == 401


async def test_staff_list_names_extensions_and_presence(live_web: Live) -> None:
    client = await live_web.login()
    response = await client.get("/api/staff")
    assert response.status_code == 200
    listed = StaffList.model_validate(response.json())
    by_login = {a.name: a for a in live_web.demo.accounts}
    assert not listed.truncated
    # Every demo account, by extension; nothing is known of any phone yet.
    assert [(s.name, s.extension, s.presence) for s in listed.staff] == sorted(
        ((a.name, a.extension, "unknown") for a in by_login.values()), key=lambda t: t[1] or ""
    )
    assert "login" not in response.json()["staff"][0]  # no login names, no roles
    assert "role" not in response.json()["staff"][0]

    # The board hears 佐藤's 203 is on a call: the list says so.
    sato = next(s for s in listed.staff if s.extension == "203")
    await live_web.services.hub.publish(
        StaffPresenceMessage(
            staff=[
                StaffPresence(staff_id=sato.id, name=sato.name, extension="203", presence="busy")
            ]
        )
    )
    again = StaffList.model_validate((await client.get("/api/staff")).json())
    assert {s.extension: s.presence for s in again.staff}["203"] == "busy"
    assert {s.extension: s.presence for s in again.staff}["204"] == "unknown"


async def test_deactivated_staff_are_not_listed(live_web: Live) -> None:
    client = await live_web.login()
    with contextlib.closing(live_web.db()) as connection:
        connection.execute("UPDATE staff SET active = 0 WHERE login = 'suzuki'")
        connection.execute("UPDATE staff SET furigana = 'さとう けん' WHERE login = 'sato'")
        connection.commit()
    listed = StaffList.model_validate((await client.get("/api/staff")).json())
    names = {s.name: s for s in listed.staff}
    assert "鈴木 美咲" not in names
    assert names["佐藤 健"].furigana == "さとう けん"
    assert names["佐藤 健"].extension == "203"
