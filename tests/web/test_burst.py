"""A burst of INVITEs through the real SIP socket, with a browser that keeps reading.

The service runs in this loop (``start_live``) with ``sip.max_ringing`` = 200 and a
short ring timeout, so the burst's rings all time out together — the two moments an
attack on the running service used to drop every browser (1013 after 64 queued
messages). The WebSocket client reads every frame and spends a little time on each,
as a browser drawing it does: slower than the burst is written, never stuck. Its
small receive buffer makes that slowness reach the server (as a busy browser's does)
instead of vanishing into loopback's large socket buffers.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.waiting import wait_for
from tests.web.conftest import DemoTemplate, SipCall, open_phone, start_live, stop_live

INVITES = 300
MAX_RINGING = 200
RING_TIMEOUT = 3.0
WORK_PER_FRAME = 0.01  # seconds a "browser" spends on each frame (it draws it)


async def read_all(ws: ClientConnection, seen: list[dict[str, Any]]) -> None:
    async for frame in ws:
        seen.append(json.loads(frame))
        await asyncio.sleep(WORK_PER_FRAME)


@pytest.mark.asyncio
async def test_a_burst_drops_no_reading_browser_and_it_gets_every_pop_not_refused(
    tmp_path: Path, demo_template: DemoTemplate
) -> None:
    live, task = await start_live(
        tmp_path,
        demo_template,
        sip={"max_ringing": MAX_RINGING, "ring_timeout": RING_TIMEOUT},
    )
    try:
        transport = live.services.transport
        assert transport is not None
        hub = live.services.hub
        cookie = await live.session_cookie()
        seen: list[dict[str, Any]] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", live.port))
        sock.setblocking(False)
        async with (
            live.websocket(
                cookie=cookie, sock=sock, max_size=None, max_queue=1, compression=None
            ) as ws,
            open_phone(live.sip_address) as phone,
        ):
            reader = asyncio.ensure_future(read_all(ws, seen))
            await wait_for(lambda: len(seen) == 1, what="the snapshot")
            # A known customer (a full card, a few KB a pop), each call its own Call-ID.
            calls = [SipCall(phone, "0312345678") for _ in range(INVITES)]
            for n, call in enumerate(calls, 1):
                call.invite()
                if n % 25 == 0:
                    # Only as fast as the socket takes them (a datagram lost to a full
                    # receive buffer would make the counts below guesswork); no pop is
                    # waited for.
                    await wait_for(
                        lambda n=n: transport.stats["invites"] >= n, what=f"{n} INVITEs read"
                    )

            def ringing_ids() -> set[str]:
                return {m["call"]["sip_call_id"] for m in seen if m["type"] == "call.ringing"}

            def ended_ids() -> set[str]:
                return {m["call"]["sip_call_id"] for m in seen if m["type"] == "call.ended"}

            # Every call that rang pops, and ends together with the others at ring_timeout.
            await wait_for(
                lambda: len(ended_ids()) >= MAX_RINGING or reader.done(),
                timeout=RING_TIMEOUT + 60,
                what="the burst's rings popped and timed out",
            )
            assert not reader.done(), f"the browser was closed: {reader!r}"
            stats = transport.stats
            assert stats["invites"] == INVITES
            assert stats["refused_busy"] == INVITES - MAX_RINGING
            assert len(ringing_ids()) == MAX_RINGING
            assert ringing_ids() <= {c.call_id for c in calls}
            assert ended_ids() == ringing_ids()
            assert [m["seq"] for m in seen[1:]] == list(range(1, len(seen)))  # no gap

            # A real call after the burst pops at the same browser, on the same socket.
            real = SipCall(phone, "0312345678")
            real.invite()
            await wait_for(
                lambda: real.call_id in ringing_ids() or reader.done(),
                timeout=30,
                what="the real call's pop",
            )
            assert not reader.done()
            assert hub.stats.dropped_subscribers == 0 and hub.stats.subscribers == 1
            real.cancel()
            await phone.response("INVITE", 487)
            reader.cancel()
    finally:
        await stop_live(live, task)
