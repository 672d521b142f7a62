"""``/ws``: the WebSocket that pushes pop messages to a logged-in browser.

Owns the same-origin and session checks (both before the handshake is accepted) and
the per-connection pump from the hub: the board's snapshot first, then every live
message. A connection lasts only as long as its session: when the session ends
(logout, expiry, deactivation, password change) the connection is closed with 4401
within a few seconds (``SessionStore.watch``). It knows messages only as the hub's
encoded text; nothing of SIP or the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from fastapi import APIRouter, WebSocket
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

from popup_ui.auth import COOKIE_NAME, declare_access
from popup_ui.context import get_web
from popup_ui.hub import CLOSE_TOO_SLOW, Subscription, SubscriptionDropped
from popup_ui.sessions import SessionStore

log = logging.getLogger(__name__)

# Close codes sent before accept (the server turns them into HTTP 403 on the handshake);
# the 4000-4999 range is for applications (RFC 6455 §7.4.2).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FOREIGN_ORIGIN = 4403
CLOSE_GOING_AWAY = 1001

# How long a close may wait for a browser that stopped reading before we give up on it.
_CLOSE_TIMEOUT = 5.0

_DEFAULT_PORTS = {"http": "80", "https": "443"}

router = APIRouter()


def _canonical_origin(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased, with the scheme's default port dropped."""
    origin = origin.strip().rstrip("/").lower()
    scheme, sep, hostport = origin.partition("://")
    if not sep:
        return origin
    host, colon, port = hostport.rpartition(":")
    if colon and not host.endswith("]") and "]" in port:  # bare IPv6 without a port
        return origin
    if colon and port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return origin


def origin_allowed(conn: HTTPConnection, allowed_origins: Iterable[str]) -> bool:
    """Same-origin rule for a browser request: Origin is this Host, or configured.

    A missing Origin is refused too: every browser sends one on a WebSocket handshake,
    so its absence means a non-browser client, which has no business here without it.
    """
    origin = conn.headers.get("origin")
    host = conn.headers.get("host")
    if not origin or origin == "null":
        return False
    wanted = _canonical_origin(origin)
    if host and wanted in {_canonical_origin(f"{scheme}://{host}") for scheme in ("http", "https")}:
        return True
    return wanted in {_canonical_origin(o) for o in allowed_origins}


@router.websocket("/ws")
@declare_access("staff")  # checks the session itself: a WebSocket cannot answer 401
async def pops(websocket: WebSocket) -> None:
    web = get_web(websocket)
    if not origin_allowed(websocket, web.config.allowed_origins):
        await websocket.close(code=CLOSE_FOREIGN_ORIGIN)
        return
    store = web.sessions
    token = websocket.cookies.get(COOKIE_NAME)
    factory = web.services.session_factory
    try:
        logged_in = await store.staff_for(token, factory) is not None
    except SQLAlchemyError as exc:
        # The database is down, and pops still go out with degraded cards: a browser
        # that reconnects now must get them. A session the database said was live a
        # short while ago (and that has not expired or been logged out here since) is
        # the proof of login until the database can say more (docs/security.md).
        log.warning("session check without the database: %s", str(exc).splitlines()[0])
        logged_in = store.cached_staff(token) is not None
    if not logged_in or token is None:
        await websocket.close(code=CLOSE_UNAUTHENTICATED)
        return

    # The subscription's first message is the board's snapshot, the rest is live: every
    # call arrives exactly once, and seq tells the browser of any gap.
    subscription = await web.services.hub.subscribe()
    session_ended = store.watch(token, factory)
    try:
        await websocket.accept()
        await _serve(websocket, subscription, session_ended, store)
    except WebSocketDisconnect:
        pass  # the browser went away: the normal end of a connection
    finally:
        store.unwatch(token, session_ended)
        web.services.hub.unsubscribe(subscription)


async def _serve(
    websocket: WebSocket,
    subscription: Subscription,
    session_ended: asyncio.Future[str],
    store: SessionStore,
) -> None:
    """Pump hub messages out until the browser leaves, the hub drops it, or its session
    ends."""
    pump = asyncio.ensure_future(_pump(websocket, subscription))
    listen = asyncio.ensure_future(_listen(websocket))
    dropped = asyncio.ensure_future(subscription.wait_dropped())
    ended = asyncio.ensure_future(asyncio.shield(session_ended))
    tasks = (pump, listen, dropped, ended)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        reason: str | None = None
        code = CLOSE_GOING_AWAY
        if ended in done:
            # RFC 6455 §7.4.2: 4000-4999 are ours; 4401 is the same "log in" as before
            # accept, so the browser shows the login form instead of reconnecting.
            reason, code = f"session ended: {ended.result()}", CLOSE_UNAUTHENTICATED
            store.websockets_closed += 1
            log.info("WebSocket closed: %s", reason)
        elif dropped in done:
            reason = dropped.result()
        elif pump in done and (error := pump.exception()) is not None:
            if not isinstance(error, SubscriptionDropped):
                raise error  # a bug, not a browser leaving: let the server log it
            reason = error.reason
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if reason is not None:
        if reason == "too slow":
            code = CLOSE_TOO_SLOW
        # A browser that stopped reading may never let the close frame out: bounded.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, TimeoutError):
            await asyncio.wait_for(websocket.close(code=code, reason=reason), _CLOSE_TIMEOUT)


async def _pump(websocket: WebSocket, subscription: Subscription) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await websocket.send_text(await subscription.get())


async def _listen(websocket: WebSocket) -> None:
    """Read (and ignore) what the browser sends, to notice when it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
