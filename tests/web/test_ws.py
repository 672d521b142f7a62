"""``/ws`` with a real WebSocket client: handshake checks, fan-out, slow browsers."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed, InvalidStatus

from db.models import Staff
from popup_ui.hub import CLOSE_TOO_SLOW, DEFAULT_QUEUE_SIZE
from tests.waiting import wait_for
from tests.web.conftest import (
    DemoTemplate,
    Live,
    next_message,
    ringing,
    snapshot,
    start_live,
    stop_live,
)


async def _refused(live: Live, *, cookie: str | None, origin: str | None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with live.websocket(cookie=cookie, origin=origin):
            pass
    status: int = refused.value.response.status_code
    return status


@pytest.mark.asyncio
async def test_refused_without_a_session_cookie(live_web: Live) -> None:
    assert await _refused(live_web, cookie=None, origin="same") == 403
    assert live_web.services.hub.stats.subscribers == 0


@pytest.mark.asyncio
async def test_refused_with_a_foreign_origin_even_with_a_session(live_web: Live) -> None:
    cookie = await live_web.session_cookie()
    assert await _refused(live_web, cookie=cookie, origin="http://evil.example") == 403
    # Same host, other port: another origin.
    other = f"http://127.0.0.1:{live_web.port + 1}"
    assert await _refused(live_web, cookie=cookie, origin=other) == 403


@pytest.mark.asyncio
async def test_refused_without_an_origin_header(live_web: Live) -> None:
    cookie = await live_web.session_cookie()
    assert await _refused(live_web, cookie=cookie, origin=None) == 403


@pytest.mark.asyncio
async def test_refused_once_the_account_is_deactivated(live_web: Live) -> None:
    client = await live_web.login()
    cookie = f"callpop_session={client.cookies['callpop_session']}"
    # Deactivation is the server-side end of a session; a logged-out cookie copied
    # elsewhere is still signed, so the account check is what must refuse it.
    with live_web.services.session_factory() as session:
        session.execute(update(Staff).values(active=False))
        session.commit()
    assert await _refused(live_web, cookie=cookie, origin="same") == 403


@pytest.mark.asyncio
async def test_accepted_with_session_and_own_origin_and_receives_published_messages(
    live_web: Live,
) -> None:
    cookie = await live_web.session_cookie()
    async with live_web.websocket(cookie=cookie) as ws:
        # The client offered permessage-deflate (browsers do); the server declines it,
        # so the fan-out writes the one encoded message as is to every browser.
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await wait_for(lambda: live_web.services.hub.stats.subscribers == 1, what="subscriber")
        assert (await snapshot(ws))["calls"] == []
        seq = await live_web.services.hub.publish(ringing("x"))
        message = await next_message(ws)
        assert (message["type"], message["seq"], message["call"]["id"]) == (
            "call.ringing",
            seq,
            "x",
        )
    await wait_for(lambda: live_web.services.hub.stats.subscribers == 0, what="unsubscribe")


@pytest.mark.asyncio
async def test_configured_extra_origin_is_accepted(
    tmp_path: Path, demo_template: DemoTemplate
) -> None:
    live, task = await start_live(
        tmp_path,
        demo_template,
        with_sip=False,
        http={"allowed_origins": ["https://pop.example.jp"]},
    )
    try:
        cookie = await live.session_cookie()
        async with live.websocket(cookie=cookie, origin="https://pop.example.jp") as ws:
            await wait_for(lambda: live.services.hub.stats.subscribers == 1, what="subscriber")
            await ws.ping()
    finally:
        await stop_live(live, task)


@pytest.mark.asyncio
async def test_client_disconnects_leave_no_subscribers(live_web: Live) -> None:
    cookie = await live_web.session_cookie()
    for _ in range(5):
        async with live_web.websocket(cookie=cookie):
            pass
    await wait_for(lambda: live_web.services.hub.stats.subscribers == 0, what="all unsubscribed")
    # Publishing to nobody is fine, and a newcomer still gets messages.
    await live_web.services.hub.publish(ringing("y"))
    async with live_web.websocket(cookie=cookie) as ws:
        await wait_for(lambda: live_web.services.hub.stats.subscribers == 1, what="subscriber")
        assert [c["call"]["id"] for c in (await snapshot(ws))["calls"]] == ["y"]
        await live_web.services.hub.publish(ringing("z"))
        assert (await next_message(ws))["call"]["id"] == "z"


@pytest.mark.asyncio
async def test_a_slow_browser_is_dropped_and_does_not_hold_up_the_others(live_web: Live) -> None:
    cookie = await live_web.session_cookie()
    hub = live_web.services.hub
    # The slow browser: a tiny receive buffer and a client that stops reading after one
    # message, so the server's writes back up into its queue.
    slow_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_sock.connect(("127.0.0.1", live_web.port))
    slow_sock.setblocking(False)
    padding = "あ" * 20_000  # ~60 KB of UTF-8 per message, sent uncompressed
    async with (
        live_web.websocket(cookie=cookie, sock=slow_sock, max_queue=1, compression=None) as slow,
        live_web.websocket(cookie=cookie, max_size=None, compression=None) as fast,
    ):
        await wait_for(lambda: hub.stats.subscribers == 2, what="two subscribers")
        await snapshot(fast)
        sent = 0
        while hub.stats.dropped_subscribers == 0:
            assert sent < DEFAULT_QUEUE_SIZE * 4, "the slow browser was never dropped"
            await hub.publish(ringing(str(sent), display_name=padding))
            # The fast browser gets every message, in order, while the slow one lags.
            assert (await next_message(fast))["call"]["id"] == str(sent)
            sent += 1
        assert hub.stats.subscribers == 1
        await hub.publish(ringing("after"))
        assert (await next_message(fast))["call"]["id"] == "after"

        # Once the slow browser reads again it finds the close: 1013 try again later.
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(slow.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_TOO_SLOW
