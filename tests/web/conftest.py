"""A real callpop server in the test's event loop, a real SIP phone, real WebSocket clients.

``live`` starts ``callpop.service.build_app`` under uvicorn on a free port (the same WebSocket
implementation the CLI uses) over a fresh SQLite database seeded with the demo data,
SIP in trunk mode on a free UDP port that only 127.0.0.1 may call. ``Phone`` sends
literal SIP requests from a UDP socket and collects the responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from callpop.cli import server_config
from callpop.service import Runtime, build_app
from callpop.settings import Settings
from db.demo import DemoInfo, seed_demo
from db.engine import make_engine, make_session_factory, migrate
from lookup.card import CallerCard, CardStatus
from popup_ui.context import WebState
from popup_ui.messages import Call, Caller, CallRingingMessage
from tests.processes import free_udp_port
from tests.waiting import wait_for

TOKYO = ZoneInfo("Asia/Tokyo")
T = TypeVar("T")


def make_settings(db_path: Path, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "sip": {
            "mode": "trunk",
            "bind_host": "127.0.0.1",
            "bind_port": free_udp_port(),
            "allowed_hosts": ["127.0.0.1"],
            "ring_timeout": 30.0,
        },
        "numbering": {"lines": {"03-3555-0100": "代表"}},
        "database": {"url": f"sqlite:///{db_path}", "lookup_timeout_ms": 2000},
        "http": {"host": "127.0.0.1", "port": 0, "session_secret": "test-secret"},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)


def seed(url: str) -> DemoInfo:
    engine = make_engine(url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            info = seed_demo(session, today=datetime.now(TOKYO).date())
            session.commit()
    finally:
        engine.dispose()  # the last connection closed: the WAL is folded into the file
    return info


@dataclass(frozen=True)
class DemoTemplate:
    """A migrated, seeded database file that each test copies (argon2 seeding is slow)."""

    path: Path
    info: DemoInfo

    def copy_to(self, directory: Path) -> Path:
        target = directory / "callpop.db"
        shutil.copyfile(self.path, target)
        return target


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> DemoTemplate:
    path = tmp_path_factory.mktemp("demo-template") / "callpop.db"
    return DemoTemplate(path, seed(f"sqlite:///{path}"))


@dataclass
class Live:
    """A running callpop: its URLs, its parts, and clients bound to it."""

    app: FastAPI
    server: uvicorn.Server
    settings: Settings
    demo: DemoInfo
    db_path: Path
    port: int
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return self.base_url

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def services(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def web(self) -> WebState:
        web: WebState = self.app.state.web
        return web

    @property
    def sip_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.settings.sip.bind_port)

    def client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.base_url, trust_env=False, timeout=10)
        self.clients.append(client)
        return client

    async def login(self, client: httpx.AsyncClient | None = None) -> httpx.AsyncClient:
        client = client or self.client()
        response = await client.post(
            "/api/session", json={"login": self.demo.login, "password": self.demo.password}
        )
        assert response.status_code == 200, response.text
        return client

    async def session_cookie(self) -> str:
        client = await self.login()
        value = client.cookies.get("callpop_session")
        assert value
        return f"callpop_session={value}"

    def websocket(self, *, cookie: str | None, origin: str | None = "same", **kwargs: Any) -> Any:
        headers = {"Cookie": cookie} if cookie else {}
        return connect(
            self.ws_url,
            origin=self.origin if origin == "same" else origin,  # type: ignore[arg-type]
            additional_headers=headers,
            proxy=None,
            open_timeout=5,
            **kwargs,
        )

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path)


async def _serve(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits on a failed start-up; never let it out
        raise RuntimeError(f"uvicorn exited with status {exc.code} (see the log above)") from None


async def start_live(
    tmp_path: Path, template: DemoTemplate, *, with_sip: bool = True, **sections: dict[str, Any]
) -> tuple[Live, asyncio.Task[None]]:
    """callpop on a copy of the demo database, ``sections`` overriding settings."""
    db_path = template.copy_to(tmp_path)
    settings = make_settings(db_path, **sections)
    return await serve(settings, template.info, db_path, with_sip=with_sip)


async def serve(
    settings: Settings, demo: DemoInfo, db_path: Path, *, with_sip: bool = True
) -> tuple[Live, asyncio.Task[None]]:
    """Run ``build_app(settings)`` under uvicorn on a free port until ``stop_live``."""
    app = build_app(settings, sip=with_sip)
    config = server_config(app, host="127.0.0.1", port=0)
    server = uvicorn.Server(config)
    # The test runner owns the signals; uvicorn must not take SIGINT from pytest.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.ensure_future(_serve(server))
    await wait_for(lambda: server.started or task.done(), timeout=15, what="uvicorn start-up")
    if task.done():
        task.result()
        pytest.fail("uvicorn stopped during start-up (see the log above)")
    port = server.servers[0].sockets[0].getsockname()[1]
    return Live(app, server, settings, demo, db_path, port), task


async def stop_live(live: Live, task: asyncio.Task[None]) -> None:
    for client in live.clients:
        await client.aclose()
    live.server.should_exit = True
    await asyncio.wait_for(task, 15)


@pytest_asyncio.fixture
async def live(tmp_path: Path, demo_template: DemoTemplate) -> AsyncIterator[Live]:
    running, task = await start_live(tmp_path, demo_template)
    try:
        yield running
    finally:
        await stop_live(running, task)


@pytest_asyncio.fixture
async def live_web(tmp_path: Path, demo_template: DemoTemplate) -> AsyncIterator[Live]:
    """The web side only (no SIP listener)."""
    running, task = await start_live(tmp_path, demo_template, with_sip=False)
    try:
        yield running
    finally:
        await stop_live(running, task)


# --- a SIP phone on loopback ------------------------------------------------------------


class _PhoneProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


@dataclass
class Phone:
    """Sends literal SIP requests (INVITE, CANCEL, ACK) and keeps every response."""

    transport: asyncio.DatagramTransport
    protocol: _PhoneProtocol
    target: tuple[str, int]
    responses: list[bytes] = field(default_factory=list)

    @property
    def port(self) -> int:
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def send(self, text: str) -> None:
        self.transport.sendto(text.replace("\n", "\r\n").encode(), self.target)

    async def response(self, method: str, code: int, timeout: float = 5.0) -> bytes:
        """Wait for a response with ``code`` to ``method`` (by CSeq)."""
        for seen in self.responses:
            if _matches(seen, method, code):
                return seen
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await self.protocol.received.get()
                    self.responses.append(data)
                    if _matches(data, method, code):
                        return data
        except TimeoutError:
            trace = "\n---\n".join(r.decode(errors="replace") for r in self.responses)
            pytest.fail(f"no {code} to {method} within {timeout} s; SIP trace:\n{trace}")


def _matches(data: bytes, method: str, code: int) -> bool:
    text = data.decode(errors="replace")
    first, _, rest = text.partition("\r\n")
    if not first.startswith(f"SIP/2.0 {code} "):
        return False
    return any(
        line.lower().startswith("cseq:") and line.split()[-1].upper() == method
        for line in rest.split("\r\n")
    )


@dataclass
class SipCall:
    """One call the phone places: enough dialog state to CANCEL and ACK it."""

    phone: Phone
    number: str
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@127.0.0.1")
    branch: str = field(default_factory=lambda: f"z9hG4bK{uuid.uuid4().hex[:16]}")
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    display: str = "ヤマダ タロウ"
    dialed: str = "0335550100"
    from_uri: str = ""  # default: sip:<number>@127.0.0.1

    def _common(self, method: str) -> str:
        host, port = self.phone.target
        return (
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.phone.port};branch={self.branch};rport\n"
            "Max-Forwards: 70\n"
            f'From: "{self.display}" <{self.from_uri or f"sip:{self.number}@127.0.0.1"}>'
            f";tag={self.tag}\n"
            f"To: <sip:{self.dialed}@{host}:{port}>\n"
            f"Call-ID: {self.call_id}\n"
            f"CSeq: 1 {method}\n"
        )

    def invite(self) -> None:
        host, port = self.phone.target
        self.phone.send(
            f"INVITE sip:{self.dialed}@{host}:{port} SIP/2.0\n"
            + self._common("INVITE")
            + f"Contact: <sip:{self.number}@127.0.0.1:{self.phone.port}>\n"
            "User-Agent: callpop-tests\n"
            "Content-Length: 0\n\n"
        )

    def cancel(self, *, answered_elsewhere: bool = False) -> None:
        host, port = self.phone.target
        reason = 'Reason: SIP;cause=200;text="Call completed elsewhere"\n'
        self.phone.send(
            f"CANCEL sip:{self.dialed}@{host}:{port} SIP/2.0\n"
            + self._common("CANCEL")
            + (reason if answered_elsewhere else "")
            + "Content-Length: 0\n\n"
        )

    def ack(self, final: bytes) -> None:
        """ACK a non-2xx final response (RFC 3261 §17.1.1.3: same branch, its To tag)."""
        host, port = self.phone.target
        to = next(
            line for line in final.decode().split("\r\n") if line.lower().startswith(("to:", "t:"))
        )
        common = self._common("ACK")
        common = "\n".join(to if line.startswith("To:") else line for line in common.split("\n"))
        self.phone.send(
            f"ACK sip:{self.dialed}@{host}:{port} SIP/2.0\n" + common + "Content-Length: 0\n\n"
        )


@contextlib.asynccontextmanager
async def open_phone(target: tuple[str, int]) -> AsyncIterator[Phone]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _PhoneProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        yield Phone(transport, protocol, target)
    finally:
        transport.close()


@pytest_asyncio.fixture
async def phone(live: Live) -> AsyncIterator[Phone]:
    async with open_phone(live.sip_address) as opened:
        yield opened


async def next_message(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    message: dict[str, Any] = json.loads(raw)
    return message


async def snapshot(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The board snapshot that opens every connection."""
    message = await next_message(ws, timeout)
    assert message["type"] == "board.snapshot", message
    return message


def ringing(call_id: str, *, display_name: str | None = None) -> CallRingingMessage:
    """A ``call.ringing`` message for an unknown caller, to publish straight to the hub."""
    return CallRingingMessage(
        call=Call(
            id=call_id,
            sip_call_id=f"{call_id}@pbx",
            started_at=datetime.now(TOKYO),
            caller=Caller(
                number="+819099990000",
                national="090-9999-0000",
                raw="09099990000",
                display_name=display_name,
                withheld=None,
                source="from",
            ),
        ),
        card=CallerCard(
            status=CardStatus.UNKNOWN,
            number="+819099990000",
            national="090-9999-0000",
            raw_number="09099990000",
        ),
    )


def drop_table(db_path: Path, table: str) -> None:
    """Break the lookup's query the way a damaged database would: a table is gone."""
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        connection.execute("PRAGMA foreign_keys=OFF")
        connection.execute(f"DROP TABLE {table}")
        connection.commit()
