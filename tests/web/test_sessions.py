"""Server-side sessions over a real server: logout, deactivation, a new password and
expiry end a session for REST and ``/ws``, and close a ``/ws`` already open on it."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from db.staff import deactivate, set_password
from popup_ui.ws import CLOSE_UNAUTHENTICATED
from tests.processes import callpop_command
from tests.waiting import wait_for
from tests.web.conftest import DemoTemplate, Live, drop_table, snapshot, start_live, stop_live

REPO = Path(__file__).resolve().parents[2]


def _cookie_header(value: str) -> str:
    return f"callpop_session={value}"


async def _logged_in(live: Live) -> tuple[str, Any]:
    client = await live.login()
    value = client.cookies.get("callpop_session")
    assert value
    return value, client


async def _closed(ws: ClientConnection, *, timeout: float = 10.0) -> tuple[int | None, str]:
    """Wait for the server to close ``ws``; its close code and reason."""
    await wait_for(lambda: ws.close_code is not None, timeout=timeout, what="the server's close")
    return ws.close_code, ws.close_reason or ""


async def _health_auth(live: Live) -> dict[str, Any]:
    response = await live.client().get("/healthz")
    auth: dict[str, Any] = response.json()["auth"]
    return auth


async def _refused_ws(live: Live, cookie: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with live.websocket(cookie=cookie):
            pass
    status: int = refused.value.response.status_code
    return status


@pytest.mark.asyncio
async def test_the_cookie_is_an_opaque_token_stored_only_as_its_sha256(live_web: Live) -> None:
    value, _ = await _logged_in(live_web)
    with live_web.db() as db:
        rows = db.execute("SELECT token_hash, ended_at FROM sessions").fetchall()
    assert rows == [(hashlib.sha256(value.encode()).hexdigest(), None)]
    assert str(live_web.demo.login) not in value and "." not in value  # no signed payload


@pytest.mark.asyncio
async def test_logout_ends_the_cookie_for_me_customers_and_ws(live_web: Live) -> None:
    value, client = await _logged_in(live_web)
    copy = live_web.client()  # an attacker's copy of the cookie
    copy.cookies.set("callpop_session", value)
    assert (await copy.get("/api/me")).status_code == 200

    assert (await client.delete("/api/session")).status_code == 204

    assert (await copy.get("/api/me")).status_code == 401
    assert (await copy.get("/api/customers/1")).status_code == 401
    assert await _refused_ws(live_web, _cookie_header(value)) == 403
    with live_web.db() as db:
        assert db.execute("SELECT end_reason FROM sessions").fetchall() == [("logout",)]
    auth = await _health_auth(live_web)
    assert auth["sessions_ended"] == {"logout": 1}


@pytest.mark.asyncio
async def test_logout_closes_an_open_websocket(live_web: Live) -> None:
    value, client = await _logged_in(live_web)
    async with live_web.websocket(cookie=_cookie_header(value)) as ws:
        await snapshot(ws)
        assert (await client.delete("/api/session")).status_code == 204
        code, reason = await _closed(ws)
    assert (code, reason) == (CLOSE_UNAUTHENTICATED, "session ended: logout")
    auth = await _health_auth(live_web)
    assert auth["websockets_closed"] == 1


@pytest.mark.asyncio
async def test_deactivation_closes_an_open_websocket_and_ends_rest(live_web: Live) -> None:
    value, client = await _logged_in(live_web)
    async with live_web.websocket(cookie=_cookie_header(value)) as ws:
        await snapshot(ws)
        with live_web.services.session_factory() as session:
            assert deactivate(session, live_web.demo.login) is not None
            session.commit()
        code, reason = await _closed(ws)
    assert (code, reason) == (CLOSE_UNAUTHENTICATED, "session ended: deactivated")
    assert (await client.get("/api/me")).status_code == 401
    assert (await _health_auth(live_web))["sessions_ended"] == {"deactivated": 1}


@pytest.mark.asyncio
async def test_a_new_password_ends_every_session_and_closes_its_websockets(
    live_web: Live,
) -> None:
    first, client = await _logged_in(live_web)
    second, _ = await _logged_in(live_web)
    async with (
        live_web.websocket(cookie=_cookie_header(first)) as ws1,
        live_web.websocket(cookie=_cookie_header(second)) as ws2,
    ):
        await snapshot(ws1)
        await snapshot(ws2)
        with live_web.services.session_factory() as session:
            set_password(session, live_web.demo.login, "a-brand-new-password")
            session.commit()
        assert (await _closed(ws1))[1] == "session ended: password"
        assert (await _closed(ws2))[1] == "session ended: password"
    assert (await client.get("/api/me")).status_code == 401
    relogin = await live_web.client().post(
        "/api/session", json={"login": live_web.demo.login, "password": "a-brand-new-password"}
    )
    assert relogin.status_code == 200


@pytest_asyncio.fixture
async def short_sessions(tmp_path: Path, demo_template: DemoTemplate) -> AsyncIterator[Live]:
    running, task = await start_live(
        tmp_path, demo_template, with_sip=False, http={"session_max_age": 3}
    )
    try:
        yield running
    finally:
        await stop_live(running, task)


@pytest.mark.asyncio
async def test_expiry_closes_an_open_websocket_and_ends_rest(short_sessions: Live) -> None:
    live = short_sessions
    value, client = await _logged_in(live)
    async with live.websocket(cookie=_cookie_header(value)) as ws:
        await snapshot(ws)
        code, reason = await _closed(ws, timeout=15)
    assert (code, reason) == (CLOSE_UNAUTHENTICATED, "session ended: expired")
    assert (await client.get("/api/me")).status_code == 401
    assert (await _health_auth(live))["sessions_ended"] == {"expired": 1}


@pytest.mark.asyncio
async def test_with_the_database_down_an_ended_session_stays_ended(live_web: Live) -> None:
    kept, _ = await _logged_in(live_web)
    ended, client = await _logged_in(live_web)
    assert (await client.delete("/api/session")).status_code == 204
    drop_table(live_web.db_path, "sessions")
    # A session the database said was live a moment ago still opens /ws (pops go on)...
    async with live_web.websocket(cookie=_cookie_header(kept)) as ws:
        await snapshot(ws)
    # ...a logged-out one, or one this process never saw live, does not.
    assert await _refused_ws(live_web, _cookie_header(ended)) == 403
    assert await _refused_ws(live_web, _cookie_header("x" * 43)) == 403


def _config(live: Live, tmp_path: Path) -> Path:
    config = tmp_path / "cli.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{live.db_path}"\n', encoding="utf-8")
    return config


def _callpop(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*callpop_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@pytest.mark.asyncio
async def test_cli_user_deactivate_closes_the_open_websocket(
    live_web: Live, tmp_path: Path
) -> None:
    value, _ = await _logged_in(live_web)
    config = _config(live_web, tmp_path)
    async with live_web.websocket(cookie=_cookie_header(value)) as ws:
        await snapshot(ws)
        done = await asyncio.to_thread(
            _callpop, "user", "deactivate", live_web.demo.login, "--config", str(config)
        )
        assert done.returncode == 0, done.stderr
        assert "all sessions ended" in done.stdout
        code, reason = await _closed(ws)
    assert (code, reason) == (CLOSE_UNAUTHENTICATED, "session ended: deactivated")
    login = await live_web.client().post(
        "/api/session", json={"login": live_web.demo.login, "password": live_web.demo.password}
    )
    assert login.status_code == 401


@pytest.mark.asyncio
async def test_cli_user_passwd_ends_sessions_and_sets_the_password(
    live_web: Live, tmp_path: Path
) -> None:
    value, client = await _logged_in(live_web)
    config = _config(live_web, tmp_path)
    done = await asyncio.to_thread(
        _callpop,
        "user",
        "passwd",
        live_web.demo.login,
        "--password-stdin",
        "--config",
        str(config),
        stdin="another-password-1\n",
    )
    assert done.returncode == 0, done.stderr
    assert (await client.get("/api/me")).status_code == 401
    fresh = live_web.client()
    old = await fresh.post(
        "/api/session", json={"login": live_web.demo.login, "password": live_web.demo.password}
    )
    new = await fresh.post(
        "/api/session", json={"login": live_web.demo.login, "password": "another-password-1"}
    )
    assert (old.status_code, new.status_code) == (401, 200)
    unknown = await asyncio.to_thread(
        _callpop, "user", "deactivate", "nobody-here", "--config", str(config)
    )
    assert unknown.returncode == 2
    assert "no staff member" in unknown.stderr
