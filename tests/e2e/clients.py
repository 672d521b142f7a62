"""A staff browser without the browser: log in over HTTP, watch ``/ws`` for pops.

Used by the end-to-end tests against a ``callpop`` started as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tests.waiting import wait_for


async def health(http: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get("/healthz")).json()
    return body


async def next_message(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


@asynccontextmanager
async def staff_browser(
    url: str, login: str, password: str
) -> AsyncIterator[tuple[httpx.AsyncClient, ClientConnection]]:
    """Log in at ``url`` (``http://host:port/``) and open ``/ws`` the way the page does;
    yields once the hub counts the subscription."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.post("/api/session", json={"login": login, "password": password})
        assert response.status_code == 200, response.text
        subscribers = (await health(http))["hub"]["subscribers"]
        cookie = f"callpop_session={response.cookies['callpop_session']}"
        async with connect(
            url.replace("http://", "ws://") + "ws",
            additional_headers={"Cookie": cookie},
            origin=url.rstrip("/"),  # type: ignore[arg-type]
        ) as ws:

            async def subscribed() -> bool:
                return bool((await health(http))["hub"]["subscribers"] > subscribers)

            await wait_for(subscribed, timeout=5, what="the browser's subscription")
            first = await next_message(ws)
            assert first["type"] == "board.snapshot", first
            yield http, ws
