"""The HTTP port under attack: idle, slow and too many connections, against ``callpop serve``.

``callpop serve`` runs as a subprocess with a low open-file limit (soft 128, hard 256,
set for the child only) and a 1 s request deadline. Strangers open sockets that send
nothing, or a request head a line at a time, or more connections than the process has
file handles. Each must be closed after the bound, or at once beyond the cap, while a
logged-in browser keeps its session and a real SIP call from a country never seen
before still pops on ``/ws``. Every process is ended by its PID.

Before this guard, 1,100 idle connections exhausted a 1,024-handle process; the next
call from a new country then failed to load its number metadata and left phonenumbers'
lock held, and the call after it froze the whole service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.clients import health, next_message, staff_browser
from tests.processes import (
    callpop_command,
    free_tcp_port,
    free_udp_port,
    stop_process,
    wait_until_serving,
)
from tests.waiting import wait_for
from tests.web.conftest import seed

FILE_LIMIT = (128, 256)  # the child's RLIMIT_NOFILE: soft, hard
REQUEST_TIMEOUT = 1.0
REPO = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class Service:
    url: str
    sip_port: int
    login: str
    password: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _lower_file_limit() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, FILE_LIMIT)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``callpop serve`` in trunk mode with small bounds and a low open-file limit."""
    workdir = tmp_path_factory.mktemp("http-limits")
    url = f"sqlite:///{workdir / 'callpop.db'}"
    demo = seed(url)
    http_port, sip_port = free_tcp_port(), free_udp_port()
    config = workdir / "callpop.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [sip]
            mode = "trunk"
            bind_host = "127.0.0.1"
            bind_port = {sip_port}
            allowed_hosts = ["127.0.0.1"]

            [numbering.lines]
            "03-3555-0100" = "代表"

            [database]
            url = "{url}"
            lookup_timeout_ms = 2000

            [http]
            host = "127.0.0.1"
            port = {http_port}
            session_secret = "{secrets.token_urlsafe(24)}"
            request_timeout = {REQUEST_TIMEOUT}
            keep_alive_timeout = 30
            """
        ),
        encoding="utf-8",
    )
    log_path = workdir / "callpop.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*callpop_command(), "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_lower_file_limit,
        )
    base = f"http://127.0.0.1:{http_port}/"
    running = Service(base, sip_port, demo.login, demo.password, process, log_path)
    try:
        problem = wait_until_serving(process, base, 45)
        assert problem is None, f"{problem}\n--- callpop log ---\n{running.log()[-4000:]}"
        yield running
    finally:
        stop_process(process)


@dataclass(slots=True)
class Attacker:
    """Sockets that hold connections open: idle, or sending a request head slowly.

    Each socket's reader records what the server sent and when it closed; ``keep``
    opens a new socket for each one closed until stopped, so the pressure lasts.
    """

    port: int
    slow: bool = False
    opened: int = 0
    closed: int = 0
    refused: int = 0  # answered 503 and closed (the cap)
    answered: int = 0  # got any other response: must stay 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def open(self) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return  # the listen backlog is full for a moment: not what we measure
        self.opened += 1
        self._writers.append(writer)
        if self.slow:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        task = asyncio.ensure_future(self._watch(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = b""
        with contextlib.suppress(OSError):
            while chunk := await reader.read(4096):
                received += chunk
        self.closed += 1
        if received.startswith(b"HTTP/1.1 503"):
            self.refused += 1
        elif received:
            self.answered += 1
        writer.close()

    async def trickle(self) -> None:
        """One more header line on every slow socket still open: never a whole head."""
        for writer in self._writers:
            if not writer.is_closing():
                with contextlib.suppress(OSError):
                    writer.write(b"X-Slow: 1\r\n")

    @property
    def open_now(self) -> int:
        return self.opened - self.closed

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def keep(attacker: Attacker, target: int, *, limit: int = 5000) -> AsyncIterator[None]:
    """Keep ``target`` sockets of ``attacker`` open (at most ``limit`` opened in all)."""

    async def press() -> None:
        while attacker.opened < limit:
            for _ in range(target - attacker.open_now):
                await attacker.open()
            await attacker.trickle()
            await asyncio.sleep(0.05)  # the attacker's own pace, not a wait for a result

    task = asyncio.ensure_future(press())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await attacker.stop()


async def place_call(service: Service, number: str) -> None:
    """``callpop call`` as a person would run it: a real INVITE, ring, CANCEL."""
    process = await asyncio.create_subprocess_exec(
        *callpop_command(),
        "call",
        number,
        "--to",
        f"127.0.0.1:{service.sip_port}",
        "--ring-seconds",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, output.decode(errors="replace")


async def pop_for(service: Service, ws: Any, number: str, e164: str) -> dict[str, Any]:
    """Call from ``number``; the ringing message the browser got for it."""
    caller = asyncio.ensure_future(place_call(service, number))
    try:
        while True:
            message = await next_message(ws, timeout=20)
            if message["type"] == "call.ringing" and message["call"]["caller"]["number"] == e164:
                return message
    finally:
        await caller


async def http_counters(service: Service) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        counters: dict[str, int] = (await health(http))["http"]
    return counters


@pytest.mark.asyncio
async def test_idle_and_slow_connections_are_closed_while_the_service_keeps_working(
    service: Service,
) -> None:
    port = int(service.url.rsplit(":", 1)[1].strip("/"))
    before = await http_counters(service)
    idle, slow = Attacker(port), Attacker(port, slow=True)
    for _ in range(40):
        await idle.open()
        await slow.open()
    # While those are open, a member of staff logs in, reads /api/me and gets a pop.
    async with staff_browser(service.url, service.login, service.password) as (http, ws):
        assert (await http.get("/api/me")).status_code == 200
        ringing = await pop_for(service, ws, "+676 771 5123", "+6767715123")
        assert ringing["call"]["caller"]["national"].startswith("+676")
        # Every one of the 80 is closed by the deadline, none of them answered or refused.
        for _ in range(200):  # a bounded trickle: a header line each 0.05 s
            if idle.closed == idle.opened and slow.closed == slow.opened:
                break
            await slow.trickle()
            await asyncio.sleep(0.05)
        await wait_for(
            lambda: idle.closed == 40 and slow.closed == 40,
            timeout=10,
            what="the idle and slow connections to be closed",
        )
        assert idle.refused == slow.refused == 0
        assert idle.answered == slow.answered == 0
        # The staff's own kept-alive connection and WebSocket were not touched.
        assert (await http.get("/api/me")).status_code == 200
    await idle.stop()
    await slow.stop()
    after = await http_counters(service)
    assert after["closed_idle"] - before["closed_idle"] >= 40
    assert after["closed_slow"] - before["closed_slow"] >= 40
    assert after["refused_over_cap"] == before["refused_over_cap"]
    # Said in the log, throttled: one line per client address and kind per minute.
    slow_lines = [line for line in service.log().splitlines() if "sent only part" in line]
    assert 1 <= len(slow_lines) <= 2, slow_lines
    assert "WARNING callpop.http: closed a connection from 127.0.0.1" in slow_lines[0]


@pytest.mark.asyncio
async def test_more_connections_than_file_handles_are_refused_and_calls_still_pop(
    service: Service,
) -> None:
    port = int(service.url.rsplit(":", 1)[1].strip("/"))
    before = await http_counters(service)
    soft, hard = FILE_LIMIT
    # callpop raised its soft limit to the hard one, and capped connections below it.
    assert before["file_limit"] == hard
    cap = before["max_connections"]
    assert 0 < cap < hard
    attacker = Attacker(port)
    async with staff_browser(service.url, service.login, service.password) as (http, ws):
        async with keep(attacker, target=hard + 50):
            await wait_for(
                lambda: attacker.refused >= hard + 50 - cap,
                timeout=20,
                what="connections beyond the cap to be refused",
            )
            # The cap is full and new sockets keep coming: the open WebSocket still
            # gets pops, for two countries whose numbers nobody has called before.
            tonga = await pop_for(service, ws, "+676 771 5123", "+6767715123")
            fiji = await pop_for(service, ws, "+679 701 2345", "+6797012345")
            assert tonga["card"]["status"] == fiji["card"]["status"] == "unknown"
            # The staff's kept-alive connection answers too.
            assert (await http.get("/api/me")).status_code == 200
            assert attacker.answered == 0
        # The attack over, a new connection is served again.
        async with httpx.AsyncClient(base_url=service.url, timeout=5) as fresh:

            async def served() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await fresh.get("/healthz")).status_code == 200
                return False

            await wait_for(served, timeout=10, what="a new connection to be served")
    after = await http_counters(service)
    assert after["refused_over_cap"] - before["refused_over_cap"] >= hard + 50 - cap
    assert after["peak_connections"] <= cap
    assert service.process.poll() is None
    lines = [line for line in service.log().splitlines() if "refused a connection" in line]
    assert 1 <= len(lines) <= 2, lines


def test_no_number_metadata_is_read_after_start_up(tmp_path: Path) -> None:
    """A fresh interpreter starts callpop's parts, then every file open fails: a number
    from a country never seen before still normalises (nothing left to load lazily)."""
    url = f"sqlite:///{tmp_path / 'callpop.db'}"
    script = textwrap.dedent(
        """
        import asyncio, builtins, errno, io, json, sys
        import phonenumbers
        from phonenumbers import PhoneMetadata
        from callpop.service import running
        from callpop.settings import Settings

        assert "TO" not in PhoneMetadata._region_metadata, "loaded before start-up"
        settings = Settings.model_validate({"database": {"url": sys.argv[1]}})

        def refuse(*args, **kwargs):
            raise OSError(errno.EMFILE, "Too many open files (test)")

        class RefuseImports:
            def find_spec(self, name, path=None, target=None):
                if name.startswith("phonenumbers"):
                    refuse()
                return None

        async def main():
            async with running(settings, sip=False) as runtime:
                missing = sorted(
                    set(phonenumbers.SUPPORTED_REGIONS) - set(PhoneMetadata._region_metadata)
                )
                lazy = [r for r, loader in PhoneMetadata._region_available.items() if loader]
                lazy += [c for c, loader in PhoneMetadata._country_code_available.items() if loader]
                # From here on no file can be opened, as when handles run out.
                sys.meta_path.insert(0, RefuseImports())
                builtins.open = io.open = io.open_code = refuse
                numbers = [runtime.numbering.normalise(n) for n in ("+6767715123", "+6797012345")]
            print(json.dumps({
                "missing": missing,
                "lazy": [str(x) for x in lazy],
                "e164": [n.e164 for n in numbers],
            }))

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, url],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["missing"] == []
    assert found["lazy"] == []
    assert found["e164"] == ["+6767715123", "+6797012345"]


def test_the_connection_cap_stays_below_the_open_file_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from callpop.http_server import ConnectionGuard
    from callpop.settings import HttpSettings

    # 0: computed, leaving a quarter of the handles (at least 64) for everything else.
    assert ConnectionGuard.from_settings(HttpSettings(), file_limit=256).max_connections == 192
    assert ConnectionGuard.from_settings(HttpSettings(), file_limit=1024).max_connections == 768
    assert ConnectionGuard.from_settings(HttpSettings(), file_limit=65536).max_connections == 1024
    configured = HttpSettings(max_connections=50)
    assert ConnectionGuard.from_settings(configured, file_limit=256).max_connections == 50
    # A configured cap the handles cannot carry is lowered, and that is said.
    too_many = HttpSettings(max_connections=5000)
    with caplog.at_level("WARNING", logger="callpop.http"):
        guard = ConnectionGuard.from_settings(too_many, file_limit=1024)
    assert guard.max_connections == 768
    assert "http.max_connections = 5000" in caplog.text
