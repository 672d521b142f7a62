"""Known-customer routing through a real PBX: Kamailio asks callpop first and follows its 302.

Kamailio runs ``tests/peers/kamailio/routing.cfg``: registrar, proxy and dialog-event
presence server, where a call to the office line 0335550100 goes to the registered
``callpop`` alone (a serial first step) and a 3xx from it is followed with
``get_redirects`` + ``t_relay``. ``callpop serve`` runs as a subprocess with that line
routed (ring group 600, which Kamailio rings on extension 204) and watches the staff
extensions. SIPp phones are registered as 203 (佐藤 健, the 担当者 of 山田 太郎) and 204 (鈴木
美咲, the ring group); the phone that must stay silent is a plain UDP socket on the port
it registered from, so any INVITE reaching it is seen.

* 山田 太郎 calls while 203 is idle: 203's phone rings and answers, 204's gets nothing; the
  browser's pop carries the decision (佐藤 健, assignee-idle) and follows the call to
  佐藤's answer and hang-up through 203's dialog events.
* An unknown number calls: 204 rings and answers, 203 gets nothing; the pop says
  ring group, unknown-caller.

/healthz counts the redirects by reason. Every process is ended by its PID.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.e2e.clients import health, next_message, staff_browser, wait_for
from tests.peers.conftest import (
    KAMAILIO_PASSWORD,
    KAMAILIO_USER,
    PEERS_DIR,
    SIPP_DIR,
    Kamailio,
    run_sipp,
    start_presence_kamailio,
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

ROUTING_CFG = PEERS_DIR / "kamailio" / "routing.cfg"
OFFICE_LINE = "0335550100"
START_DEADLINE = 45.0
STAFF_EXTENSIONS = 3  # the demo's 高橋 201, 佐藤 203, 鈴木 204: all watched


@pytest.fixture
def routing_kamailio(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Kamailio]:
    """Kamailio with routing.cfg on 127.0.0.1:<free port> (pua's dbtext copied to tmp)."""
    instance = start_presence_kamailio(tmp_path / "kamailio", config=ROUTING_CFG)
    try:
        yield instance
    finally:
        instance.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(instance.logs())


@pytest.fixture
def service(
    routing_kamailio: Kamailio, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str, str]]:
    """``callpop serve`` registered at Kamailio with the office line routed; (url, login,
    password) of the demo's staff account."""
    kamailio = routing_kamailio
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
password = "{KAMAILIO_PASSWORD}"
expires = 60
ring_timeout = 30.0

[database]
url = "{url}"
lookup_timeout_ms = 2000

[http]
host = "127.0.0.1"
port = {http_port}
session_secret = "{secrets.token_urlsafe(24)}"

[routing]
decision_deadline = 3.0

[[routing.lines]]
line = "03-3555-0100"
ring_group = "600"
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
    base = f"http://127.0.0.1:{http_port}/"
    try:
        problem = wait_until_serving(process, base, START_DEADLINE)
        assert problem is None, f"{problem}\n{log_path.read_text(errors='replace')}"
        yield base, demo.login, demo.password
    finally:
        stop_process(process)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- callpop log ---\n{log_path.read_text(errors='replace')[-8000:]}")


def sipp_args(kamailio: Kamailio, scenario: str, service: str, port: int) -> list[str]:
    return [
        f"{kamailio.host}:{kamailio.port}",
        "-sf",
        str(SIPP_DIR / scenario),
        "-s",
        service,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "1",
        "-timeout",
        "30s",
        "-timeout_error",
    ]


def register(kamailio: Kamailio, extension: str, workdir: Path) -> int:
    """A desk phone registers ``extension`` from a free port; returns that port."""
    port = free_udp_port()
    done = run_sipp(
        sipp_args(kamailio, "register_phone.xml", extension, port), 40.0, workdir=workdir
    )
    assert done.returncode == 0, f"phone {extension} did not register, see its log above"
    return port


def call(
    kamailio: Kamailio, caller: str, answering_port: int, silent_port: int, workdir: Path
) -> list[bytes]:
    """``caller`` calls the office line; the phone on ``answering_port`` rings, answers
    and hangs up. Returns whatever reached ``silent_port`` meanwhile. Blocking."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", silent_port))
        silent.setblocking(False)
        phone_args = sipp_args(kamailio, "uas_answer_hangup.xml", "phone", answering_port)[1:]
        with ThreadPoolExecutor(1) as pool:
            phone = pool.submit(run_sipp, phone_args, 40.0, workdir=workdir / "phone")
            placed = run_sipp(
                [
                    *sipp_args(
                        kamailio, "uac_call_answered_from.xml", OFFICE_LINE, free_udp_port()
                    ),
                    "-key",
                    "caller",
                    caller,
                ],
                40.0,
                workdir=workdir / "caller",
            )
            answered = phone.result()
        received = []
        while True:
            try:
                received.append(silent.recv(65535))
            except BlockingIOError:
                break
    assert placed.returncode == 0, "the caller's call failed, see its log above"
    assert answered.returncode == 0, "the answering phone's call failed, see its log above"
    return received


async def messages_of_one_call(ws: ClientConnection) -> list[dict[str, Any]]:
    """The messages of the next call, from its pop to its end (presence left out)."""
    seen: list[dict[str, Any]] = []
    while True:
        message = await next_message(ws, timeout=40)
        if message["type"].startswith("call.") and message["type"] != "call.which":
            seen.append(message)
            if message["type"] == "call.ended":
                return seen


async def watching_all(http: httpx.AsyncClient) -> bool:
    sip = (await health(http))["sip"]
    stats = sip["stats"]
    return bool(
        sip["registration"] == "registered"
        and stats["subscriptions_active"] >= STAFF_EXTENSIONS
        and stats["notifies_received"] >= STAFF_EXTENSIONS
    )


async def test_a_known_customer_goes_straight_to_the_idle_assignee_and_others_to_the_ring_group(
    service: tuple[str, str, str], routing_kamailio: Kamailio, tmp_path: Path
) -> None:
    kamailio = routing_kamailio
    url, login, password = service
    async with staff_browser(url, login, password) as (http, ws):
        # Registered, and every staff extension's presence known (idle) from a NOTIFY.
        await wait_for(lambda: watching_all(http), timeout=30, what="registration + presence")
        sato = await asyncio.to_thread(register, kamailio, "203", tmp_path / "reg203")
        suzuki = await asyncio.to_thread(register, kamailio, "204", tmp_path / "reg204")

        # 山田 太郎 (担当 佐藤 健, 203) calls the office line.
        placed = asyncio.ensure_future(
            asyncio.to_thread(call, kamailio, "0312345678", sato, suzuki, tmp_path / "known")
        )
        try:
            known = await messages_of_one_call(ws)
        finally:
            reached_204 = await placed
        assert not [d for d in reached_204 if d.startswith(b"INVITE")], reached_204
        ringing = known[0]
        assert ringing["type"] == "call.ringing"
        assert ringing["card"]["customers"][0]["name"] == "山田 太郎"
        routing = ringing["call"]["routing"]
        assert routing["reason"] == "assignee-idle"
        assert (routing["extension"], routing["name"]) == ("203", "佐藤 健")
        assert routing["target"] == f"sip:203@127.0.0.1:{kamailio.port}"
        assert routing["staff_id"] is not None and routing["decided_at"].endswith("+09:00")
        routing_staff = routing["staff_id"]
        # callpop's leg ended with the 302, yet the call went on: answered on 203, then
        # hung up, both from 203's dialog events.
        answered = [m for m in known if m["type"] == "call.answered"]
        assert answered and answered[0]["call"]["answered_by"]["extension"] == "203"
        assert answered[0]["call"]["answered_by"]["how"] == "call-id"
        ended = known[-1]["call"]
        assert ended["outcome"] == "hangup" and ended["routing"] == routing

        # An unknown number: the ring group (204) rings, 203 gets nothing.
        placed = asyncio.ensure_future(
            asyncio.to_thread(call, kamailio, "09099990000", suzuki, sato, tmp_path / "unknown")
        )
        try:
            unknown = await messages_of_one_call(ws)
        finally:
            reached_203 = await placed
        assert not [d for d in reached_203 if d.startswith(b"INVITE")], reached_203
        ringing = unknown[0]
        assert ringing["card"]["status"] == "unknown"
        routing = ringing["call"]["routing"]
        assert routing["reason"] == "unknown-caller"
        assert (routing["extension"], routing["staff_id"], routing["name"]) == ("600", None, None)
        answered = [m for m in unknown if m["type"] == "call.answered"]
        assert answered and answered[0]["call"]["answered_by"]["extension"] == "204"

        # The call log keeps both decisions (written by the real call-log thread).
        async def logged() -> dict[str, dict[str, object]] | None:
            calls = (await http.get("/api/calls")).json()["calls"]
            found = {c["caller_national"]: c["routing"] for c in calls if c["routing"]}
            return found if len(found) == 2 else None

        decisions = await wait_for(logged, timeout=10, what="the routing in the call log")
        assert decisions["03-1234-5678"] == {
            "to": "203",
            "staff_id": routing_staff,
            "name": "佐藤 健",
            "reason": "assignee-idle",
        }
        assert decisions["090-9999-0000"] == {
            "to": "600",
            "staff_id": None,
            "name": None,
            "reason": "unknown-caller",
        }

        stats = (await health(http))["sip"]["stats"]
        assert stats["redirects"] == 2
        assert stats["redirect_deadline_fallbacks"] == 0
        assert stats["routed_assignee_idle"] == 1 and stats["routed_unknown_caller"] == 1
        # Kamailio ACKed each 302 (hop by hop), which ended Timer G: nothing out of place.
        assert stats["acks"] == 2 and stats["invites"] == 2
        assert stats["protocol_errors"] == 0 and stats["redirects_late"] == 0
        assert stats["routing_errors"] == 0
