"""Roles on every route, and the admin's account routes, over real HTTP.

The walk goes through the app's route table (every HTTP route with each of its
methods, every mount, the WebSocket): a route without a declared level
(``popup_ui.auth.access_of``) fails, so a new route cannot be forgotten; each is then
tried without a session (401, or the WebSocket refused), as ``staff`` (403 on admin
routes) and as ``admin``. Path parameters get ids no row has and bodies are left out,
so no request changes anything.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Mount
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from db.demo import DEMO_ACCOUNTS
from popup_ui.auth import access_of
from popup_ui.ws import CLOSE_UNAUTHENTICATED
from tests.waiting import wait_for
from tests.web.conftest import Live, snapshot

MAX_ID = 2**31 - 1  # no row has it
STAFF = next(a for a in DEMO_ACCOUNTS if a.role == "staff")
ADMIN = next(a for a in DEMO_ACCOUNTS if a.role == "admin")
# The only /api/ routes anyone may use without a session: logging in and out.
PUBLIC_API = {("POST", "/api/session"), ("DELETE", "/api/session")}


async def _login(live: Live, login: str, password: str) -> httpx.AsyncClient:
    client = live.client()
    response = await client.post("/api/session", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    return client


def _cookie(client: httpx.AsyncClient) -> str:
    value = client.cookies.get("callpop_session")
    assert value
    return f"callpop_session={value}"


def _fill(path: str, route: BaseRoute) -> str:
    """The path with harmless values: an id no row has, a call id no call has."""
    types: dict[str, Any] = {}
    dependant = getattr(route, "dependant", None)
    for param in getattr(dependant, "path_params", ()):
        types[param.name] = param.field_info.annotation
    return re.sub(
        r"\{(\w+)(?::\w+)?\}",
        lambda m: str(MAX_ID) if types.get(m[1]) is int else "0" * 32,
        path,
    )


async def _ws_accepted(live: Live, cookie: str | None) -> bool:
    try:
        async with live.websocket(cookie=cookie) as ws:
            await snapshot(ws)
            return True
    except InvalidStatus:
        return False


@pytest.mark.asyncio
async def test_every_route_declares_its_level_and_gets_it(live_web: Live) -> None:
    anonymous = live_web.client()
    staff = await _login(live_web, STAFF.login, STAFF.password)
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    allowed: dict[str, set[str | None]] = {
        "public": {None, "staff", "admin"},
        "staff": {"staff", "admin"},
        "admin": {"admin"},
    }
    undeclared: list[str] = []
    wrong: list[str] = []
    checked: set[str] = set()

    def expect(what: str, ok: bool) -> None:
        if not ok:
            wrong.append(what)

    for context in iter_route_contexts(live_web.app.routes):
        route, path = context.original_route, context.path
        level = access_of(route)
        if level is None or path is None:
            undeclared.append(f"{type(route).__name__} {path}")
            continue
        checked.add(level)
        if isinstance(route, Mount):
            expect(f"mount {path} is {level}", level == "public")
            response = await anonymous.get(f"{path}/no-such-file")
            expect(f"mount {path} anonymous: {response.status_code}", response.status_code == 404)
            continue
        url = _fill(path, route)
        if context.methods is None:  # the WebSocket
            expect(f"WS {path}: a WebSocket route is staff, not {level}", level == "staff")
            for who, cookie in (
                (None, None),
                ("staff", _cookie(staff)),
                ("admin", _cookie(admin)),
            ):
                accepted = await _ws_accepted(live_web, cookie)
                expect(
                    f"WS {path} as {who}: accepted={accepted}", accepted == (who in allowed[level])
                )
            continue
        for method in sorted(context.methods):
            if path.startswith("/api/admin"):
                expect(f"{method} {path} is {level}, not admin", level == "admin")
            if path.startswith("/api/") and (method, path) not in PUBLIC_API:
                expect(f"{method} {path} is public", level != "public")
            if level == "public":  # tried anonymously only (logout would end a session)
                status = (await anonymous.request(method, url)).status_code
                expect(f"{method} {path} anonymous: {status}", status not in (401, 403))
                continue
            for who, client in (("anonymous", anonymous), ("staff", staff), ("admin", admin)):
                status = (await client.request(method, url)).status_code
                if who == "anonymous":
                    expect(f"{method} {path} anonymous: {status}", status == 401)
                elif who in allowed[level]:
                    expect(f"{method} {path} as {who}: {status}", status not in (401, 403))
                else:
                    expect(f"{method} {path} as {who}: {status}", status == 403)
    assert not undeclared, f"routes without a declared access level: {undeclared}"
    assert not wrong, "\n".join(wrong)
    assert checked == {"public", "staff", "admin"}


async def _accounts(admin: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await admin.get("/api/admin/staff")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["truncated"] is False
    return {one["login"]: one for one in body["staff"]}


@pytest.mark.asyncio
async def test_an_admin_adds_an_account_that_logs_in_and_deactivating_it_ends_its_sessions(
    live_web: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="popup_ui.admin")
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    new = {
        "login": "tanaka",
        "name": "田中 一郎",
        "furigana": "たなか いちろう",
        "extension": "205",
        "role": "staff",
        "password": "tanaka-first-205",
    }
    created = await admin.post("/api/admin/staff", json=new)
    assert created.status_code == 201, created.text
    account = created.json()
    assert account["login"] == "tanaka" and account["active"] is True
    assert account["last_login"] is None
    again = await admin.post("/api/admin/staff", json=new)
    assert again.status_code == 409, again.text
    short = await admin.post("/api/admin/staff", json={**new, "login": "x", "password": "short"})
    assert short.status_code == 422

    tanaka = await _login(live_web, "tanaka", "tanaka-first-205")
    me = (await tanaka.get("/api/me")).json()
    assert (me["login"], me["role"], me["extension"]) == ("tanaka", "staff", "205")
    listed = await _accounts(admin)
    assert listed["tanaka"]["last_login"] is not None
    assert listed[ADMIN.login]["role"] == "admin"
    assert (await tanaka.get("/api/admin/staff")).status_code == 403

    async with live_web.websocket(cookie=_cookie(tanaka)) as ws:
        await snapshot(ws)
        changed = await admin.patch(f"/api/admin/staff/{account['id']}", json={"active": False})
        assert changed.status_code == 200, changed.text
        assert changed.json()["active"] is False
        assert changed.json()["last_login"] is not None
        await _closed(ws, "session ended: deactivated")
    assert (await tanaka.get("/api/me")).status_code == 401
    refused = await live_web.client().post(
        "/api/session", json={"login": "tanaka", "password": "tanaka-first-205"}
    )
    assert refused.status_code == 401
    assert (await admin.patch("/api/admin/staff/999999", json={"name": "x"})).status_code == 404
    logged = [r.getMessage() for r in caplog.records if r.name == "popup_ui.admin"]
    assert f"admin {ADMIN.login} added staff tanaka (role staff, extension 205)" in logged
    assert (
        f"admin {ADMIN.login} changed staff tanaka: active True -> False;"
        " all their sessions ended" in logged
    )


async def _closed(ws: ClientConnection, reason: str) -> None:
    await wait_for(lambda: ws.close_code is not None, timeout=10, what="the server's close")
    assert (ws.close_code, ws.close_reason) == (CLOSE_UNAUTHENTICATED, reason)


@pytest.mark.asyncio
async def test_the_last_active_admin_cannot_be_demoted_or_deactivated(live_web: Live) -> None:
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    accounts = await _accounts(admin)
    admin_id, staff_id = accounts[ADMIN.login]["id"], accounts[STAFF.login]["id"]
    for change in ({"role": "staff"}, {"active": False}, {"role": "staff", "active": False}):
        refused = await admin.patch(f"/api/admin/staff/{admin_id}", json=change)
        assert refused.status_code == 409, (change, refused.text)
    assert (await _accounts(admin))[ADMIN.login] == accounts[ADMIN.login]

    # With a second admin, the first may step down, and loses the admin routes at once.
    promoted = await admin.patch(f"/api/admin/staff/{staff_id}", json={"role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    stepped = await admin.patch(f"/api/admin/staff/{admin_id}", json={"role": "staff"})
    assert stepped.status_code == 200, stepped.text
    assert (await admin.get("/api/admin/staff")).status_code == 403
    assert (await admin.get("/api/me")).json()["role"] == "staff"
    new_admin = await _login(live_web, STAFF.login, STAFF.password)
    last = await new_admin.patch(f"/api/admin/staff/{staff_id}", json={"active": False})
    assert last.status_code == 409


@pytest.mark.asyncio
async def test_changing_ones_password_ends_the_other_sessions_and_keeps_this_one(
    live_web: Live,
) -> None:
    here = await _login(live_web, STAFF.login, STAFF.password)
    elsewhere = await _login(live_web, STAFF.login, STAFF.password)
    wrong = await here.post(
        "/api/me/password",
        json={"current_password": "not-the-password", "new_password": "a-new-password-1"},
    )
    assert wrong.status_code == 400, wrong.text
    assert (await elsewhere.get("/api/me")).status_code == 200
    short = await here.post(
        "/api/me/password", json={"current_password": STAFF.password, "new_password": "short"}
    )
    assert short.status_code == 422

    async with live_web.websocket(cookie=_cookie(elsewhere)) as ws:
        await snapshot(ws)
        changed = await here.post(
            "/api/me/password",
            json={"current_password": STAFF.password, "new_password": "a-new-password-1"},
        )
        assert changed.status_code == 204, changed.text
        await _closed(ws, "session ended: password")
    assert (await elsewhere.get("/api/me")).status_code == 401
    assert (await here.get("/api/me")).status_code == 200
    old = await live_web.client().post(
        "/api/session", json={"login": STAFF.login, "password": STAFF.password}
    )
    assert old.status_code == 401
    await _login(live_web, STAFF.login, "a-new-password-1")


@pytest.mark.asyncio
async def test_an_admin_sets_a_new_password_for_someone_and_their_sessions_end(
    live_web: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="popup_ui.admin")
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    forgot = await _login(live_web, STAFF.login, STAFF.password)
    staff_id = (await _accounts(admin))[STAFF.login]["id"]
    reset = f"/api/admin/staff/{staff_id}/password"
    assert (await admin.post(reset, json={"password": "short"})).status_code == 422
    assert (await forgot.post(reset, json={"password": "its-new-one-1"})).status_code == 403
    done = await admin.post(reset, json={"password": "its-new-one-1"})
    assert done.status_code == 204, done.text
    assert (await forgot.get("/api/me")).status_code == 401
    await _login(live_web, STAFF.login, "its-new-one-1")
    old = await live_web.client().post(
        "/api/session", json={"login": STAFF.login, "password": STAFF.password}
    )
    assert old.status_code == 401
    missing = await admin.post(f"/api/admin/staff/{MAX_ID}/password", json={"password": "x" * 8})
    assert missing.status_code == 404
    logged = [r.getMessage() for r in caplog.records if r.name == "popup_ui.admin"]
    assert (
        f"admin {ADMIN.login} set a new password for staff {STAFF.login};"
        " all their sessions ended" in logged
    )
