"""The whole product in register mode: ``callpop serve`` behind a real Kamailio.

Kamailio (``tests/peers/kamailio/registrar.cfg``) is the office PBX: a registrar with
digest auth and a ring group ``sip:100@…`` that forks to the registered ``callpop``.
``callpop serve`` runs as a subprocess on a seeded SQLite file with a TOML config, the
way an installation runs it. SIPp is the outside caller; a logged-in WebSocket client is
the staff browser. The pop must arrive with the customer's card, the CANCEL must end it,
and after Kamailio restarts (forgetting every binding) callpop must register again by
itself and pop the next call. Every process is ended by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.e2e.clients import health, next_message, staff_browser, wait_for
from tests.peers.conftest import (
    KAMAILIO_PASSWORD,
    KAMAILIO_USER,
    Kamailio,
    call_ring_group,
)
from tests.processes import (
    callpop_command,
    free_tcp_port,
    free_udp_port,
    stop_process,
    wait_until_serving,
)
from tests.web.conftest import seed

pytestmark = [pytest.mark.kamailio, pytest.mark.sipp, pytest.mark.asyncio]

START_DEADLINE = 45.0


@dataclass(slots=True, kw_only=True)
class Running:
    url: str
    login: str
    password: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready: str | None = "not started"  # None once it serves, else why not

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@pytest.fixture
def service(
    kamailio: Kamailio, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Running]:
    """``callpop serve --config callpop.toml``, registering at ``kamailio``."""
    with serving(kamailio, tmp_path, request, password=KAMAILIO_PASSWORD) as running:
        assert running.ready is None, f"{running.ready}\n--- callpop log ---\n{running.log()}"
        yield running


@contextlib.contextmanager
def serving(
    kamailio: Kamailio, tmp_path: Path, request: pytest.FixtureRequest, *, password: str
) -> Iterator[Running]:
    """Start ``callpop serve`` with a config registering at ``kamailio``; stop it by PID."""
    url = f"sqlite:///{tmp_path / 'callpop.db'}"
    demo = seed(url)
    http_port = free_tcp_port()
    config = tmp_path / "callpop.toml"
    config.write_text(
        f"""
[sip]
mode = "register"
bind_host = "127.0.0.1"
bind_port = {free_udp_port()}
registrar_host = "{kamailio.host}"
registrar_port = {kamailio.port}
user = "{KAMAILIO_USER}"
password = "{password}"
expires = 10
ring_timeout = 30.0

[database]
url = "{url}"

[http]
host = "127.0.0.1"
port = {http_port}
session_secret = "{secrets.token_urlsafe(24)}"
""",
        encoding="utf-8",
    )
    log_path = tmp_path / "callpop.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*callpop_command(), "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{http_port}/"
    running = Running(
        url=url,
        login=demo.login,
        password=demo.password,
        process=process,
        log_path=log_path,
    )
    try:
        running.ready = wait_until_serving(process, url, START_DEADLINE)
        yield running
    finally:
        stop_process(process)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- callpop log ---\n{running.log()}")


async def ring_and_watch(
    kamailio: Kamailio, ws: ClientConnection, workdir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """SIPp calls the ring group; return the ringing and ended messages the browser got."""
    caller = asyncio.ensure_future(asyncio.to_thread(call_ring_group, kamailio, workdir))
    try:
        ringing = await next_message(ws)
        ended = await next_message(ws)
    finally:
        await caller  # SIPp's own checks: 180, then 200 to the CANCEL and 487
    return ringing, ended


async def test_a_call_to_the_ring_group_pops_the_customer_and_survives_a_pbx_restart(
    service: Running, kamailio: Kamailio, tmp_path: Path
) -> None:
    async with staff_browser(service.url, service.login, service.password) as (http, ws):
        await wait_for(
            lambda: _registered(http), timeout=15, what="callpop to register at Kamailio"
        )
        ringing, ended = await ring_and_watch(kamailio, ws, tmp_path / "call1")

        assert ringing["type"] == "call.ringing"
        caller = ringing["call"]["caller"]
        assert caller["number"] == "+81312345678"
        assert caller["national"] == "03-1234-5678"
        assert caller["source"] == "p-asserted-identity"
        card = ringing["card"]
        assert card["status"] == "matched"
        [yamada] = card["customers"]
        assert yamada["name"] == "山田 太郎"
        assert yamada["assigned_staff"]["name"] == "佐藤 健"
        assert yamada["assigned_staff"]["extension"] == "203"
        assert any(t["title"] == "雨漏り修繕" for t in yamada["transactions"])
        assert ended["type"] == "call.ended"
        assert ended["call"]["id"] == ringing["call"]["id"]
        # Kamailio's tm builds its own CANCEL but carries the Reason over (RFC 3326).
        assert ended["call"]["outcome"] == "answered_elsewhere"

        # The PBX restarts and forgets every binding; callpop registers again by itself.
        # Read after the restart: any binding confirmed from now on is at the new Kamailio.
        kamailio.restart()
        registered_before = (await health(http))["sip"]["stats"]["bindings_confirmed"]
        await wait_for(
            lambda: _registered(http, after=registered_before),
            timeout=30,
            what="a new registration at the restarted Kamailio",
        )
        again, again_ended = await ring_and_watch(kamailio, ws, tmp_path / "call2")
        assert again["card"]["customers"][0]["name"] == "山田 太郎"
        assert again["call"]["id"] != ringing["call"]["id"]
        assert again_ended["call"]["id"] == again["call"]["id"]

        body = await health(http)
        assert body["status"] == "ok"
        assert body["sip"]["stats"]["rejected_host"] == 0
        assert body["sip"]["stats"]["parse_errors"] == 0
        calls = await http.get("/api/calls/active")
        assert calls.status_code == 200 and calls.json()["calls"] == []
    # Ctrl+C ends the service cleanly: the lifespan finishes (un-REGISTER included),
    # and the exit status is the shell's for an interrupt, 128 + SIGINT.
    stop_process(service.process)
    assert service.process.returncode == 130, service.log()
    assert "Application shutdown complete." in service.log()


async def _registered(http: httpx.AsyncClient, *, after: int = -1) -> bool:
    sip = (await health(http))["sip"]
    confirmed = sip["stats"]["bindings_confirmed"]
    return bool(sip["registration"] == "registered" and confirmed > after)


async def test_a_wrong_sip_password_is_said_in_the_log(
    kamailio: Kamailio, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with serving(kamailio, tmp_path, request, password="not-the-password") as running:
        assert running.ready is None, running.log()
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:

            async def failed() -> bool:
                return bool((await health(http))["sip"]["registration"] == "failed")

            await wait_for(failed, timeout=20, what="the registration to fail")
            sip = (await health(http))["sip"]
        assert "credentials rejected" in sip["registration_detail"]

        async def said() -> str | None:
            log = running.log()
            return log if "credentials rejected" in log else None

        log = await wait_for(said, timeout=10, what="the reason in the log")
    # One line an operator can act on: the state, the PBX's answer and what it means.
    [line] = [line for line in log.splitlines() if "credentials rejected" in line][:1]
    assert "WARNING callpop.sip: registration failed: 401" in line
    # The start-up summary says what runs where.
    assert "SIP register mode on 127.0.0.1:" in log and "HTTP http://127.0.0.1:" in log
