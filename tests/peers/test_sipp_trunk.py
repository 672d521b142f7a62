"""The listener in trunk mode against real SIPp callers on loopback.

The transport runs in the test's event loop on 127.0.0.1:<free port>; SIPp runs in a
thread (it is a blocking subprocess) and checks every response on the wire: its exit
code 0 means 100/180, then 200 + 487 (CANCEL) or 200 + 487 (BYE) arrived as RFC 3261
says. The events the listener emitted are then compared call by call.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_asyncio

from telephony.endpoint import EndpointConfig
from telephony.events import (
    CallEnded,
    CallerIdSource,
    CallRinging,
    EndReason,
    Event,
    RequestRejected,
    Withheld,
)
from telephony.transport import SipTransport
from tests.waiting import wait_for

from .conftest import SIPP_DIR, free_udp_port, run_sipp

E = TypeVar("E", bound=Event)

pytestmark = [pytest.mark.sipp, pytest.mark.asyncio]

P = CallerIdSource.P_ASSERTED_IDENTITY
R = CallerIdSource.REMOTE_PARTY_ID
F = CallerIdSource.FROM
ELSEWHERE = EndReason.ANSWERED_ELSEWHERE
ABANDONED = EndReason.ABANDONED

# case id (Call-ID prefix in callers.csv) -> (number, display, withheld, source, end reason)
EXPECTED: dict[str, tuple[str | None, str | None, Withheld | None, CallerIdSource, EndReason]] = {
    "pai-tel": ("+81312345678", "山田 太郎", None, P, ELSEWHERE),
    "rpid": ("0312345679", "Phone22", None, R, ABANDONED),
    "from-plain": ("09012345678", None, None, F, ABANDONED),
    "from-tel": ("0312345678", "鈴木 一郎", None, F, ELSEWHERE),
    "anonymous": (None, None, Withheld.ANONYMOUS, F, ABANDONED),
    "payphone": (None, None, Withheld.PAYPHONE, F, ABANDONED),
    "unavailable": (None, None, Withheld.UNAVAILABLE, F, ELSEWHERE),
    "privacy-id": (None, None, Withheld.ANONYMOUS, P, ABANDONED),
    "jp-company": ("0667890123", "株式会社テスト 営業部", None, F, ELSEWHERE),
    "plus81-pai": ("+819012345678", "佐藤 花子", None, P, ABANDONED),
    "glued": ("0471234567", "Kato", None, F, ABANDONED),
    "escaped": ("0120123456", 'Yamada "Jr"', None, F, ELSEWHERE),
    "interaction": (None, None, Withheld.INTERACTION, P, ABANDONED),
}


@dataclass
class Listener:
    transport: SipTransport
    events: list[Event] = field(default_factory=list)

    @property
    def target(self) -> str:
        host, port = self.transport.local_address
        return f"{host}:{port}"

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[Listener]:
    events: list[Event] = []
    config = EndpointConfig(
        mode="trunk",
        local_host="127.0.0.1",
        local_port=0,
        allowed_hosts=frozenset({"127.0.0.1"}),
        ring_timeout=20.0,
    )
    transport = await SipTransport.start(config, events.append, bind_host="127.0.0.1", bind_port=0)
    try:
        yield Listener(transport=transport, events=events)
    finally:
        await transport.close()


async def sipp(listener: Listener, workdir: Path, *args: str, returncode: int = 0) -> None:
    result = await asyncio.to_thread(
        run_sipp,
        [listener.target, "-s", "office", "-i", "127.0.0.1", "-p", str(free_udp_port()), *args],
        60.0,
        workdir=workdir,
        expect_returncode=returncode,
    )
    assert result.returncode == returncode, f"SIPp exited {result.returncode}, see log above"


def csv_case_ids() -> list[str]:
    lines = (SIPP_DIR / "callers.csv").read_text(encoding="utf-8").splitlines()
    return [line.split(";", 1)[0] for line in lines[1:] if line.strip()]


def case_of(call_id: str, cases: list[str]) -> str:
    # SIPp's Call-ID is "<call number>-<pid>@<ip>"; with a SEQUENTIAL CSV, call N
    # used row N (1-based).
    return cases[int(call_id.split("-", 1)[0]) - 1]


async def test_caller_id_variants_ring_and_end(listener: Listener, tmp_path: Path) -> None:
    cases = csv_case_ids()
    assert sorted(cases) == sorted(EXPECTED)
    await sipp(
        listener,
        tmp_path,
        "-sf",
        str(SIPP_DIR / "uac_invite_cancel.xml"),
        "-inf",
        str(SIPP_DIR / "callers.csv"),
        "-m",
        str(len(cases)),
        "-r",
        "20",
        "-d",
        "200",
        "-timeout",
        "30s",
        "-timeout_error",
    )
    await wait_for(lambda: len(listener.of_type(CallEnded)) == len(cases))
    ringing: dict[str, CallRinging] = {}
    for event in listener.of_type(CallRinging):
        assert isinstance(event, CallRinging)
        case = case_of(event.call_id, cases)
        assert case not in ringing, f"two rings for {case}"
        ringing[case] = event
    ended: dict[str, CallEnded] = {}
    for event in listener.of_type(CallEnded):
        assert isinstance(event, CallEnded)
        ended[case_of(event.call_id, cases)] = event
    assert sorted(ringing) == sorted(ended) == sorted(EXPECTED)
    for case, (number, display, withheld, source, reason) in EXPECTED.items():
        caller = ringing[case].caller
        got = (caller.number, caller.display_name, caller.withheld, caller.source)
        assert got == (number, display, withheld, source), case
        assert caller.dialed == "office", case
        assert ringing[case].remote[0] == "127.0.0.1"
        assert ended[case].reason is reason, case
        assert ended[case].at >= ringing[case].at
    assert listener.transport.endpoint.active_calls == 0
    stats = listener.transport.stats
    assert stats["invites"] >= len(cases) and stats["cancels"] == len(cases)
    assert stats["parse_errors"] == 0 and stats["rejected_host"] == 0


async def test_bye_in_early_dialog_ends_call_as_hangup(listener: Listener, tmp_path: Path) -> None:
    await sipp(
        listener,
        tmp_path,
        "-sf",
        str(SIPP_DIR / "uac_invite_bye.xml"),
        "-m",
        "2",
        "-d",
        "100",
        "-timeout",
        "20s",
        "-timeout_error",
    )
    await wait_for(lambda: len(listener.of_type(CallEnded)) == 2)
    assert [e.reason for e in listener.of_type(CallEnded)] == [EndReason.HANGUP] * 2
    rung = listener.of_type(CallRinging)
    assert len(rung) == 2
    assert all(e.caller.number == "0312340000" for e in rung)


async def test_options_gets_200_with_allow(listener: Listener, tmp_path: Path) -> None:
    await sipp(
        listener,
        tmp_path,
        "-sf",
        str(SIPP_DIR / "uac_options.xml"),
        "-m",
        "3",
        "-timeout",
        "20s",
        "-timeout_error",
    )
    assert listener.transport.stats["options"] == 3
    assert listener.events == []


async def test_caller_from_a_host_not_allowed_gets_no_answer(
    listener: Listener, tmp_path: Path
) -> None:
    result = await asyncio.to_thread(
        run_sipp,
        [
            listener.target,
            "-s",
            "office",
            "-i",
            "127.0.0.2",
            "-p",
            str(free_udp_port("127.0.0.2")),
            "-sf",
            str(SIPP_DIR / "uac_invite_cancel.xml"),
            "-inf",
            str(SIPP_DIR / "callers.csv"),
            "-m",
            "1",
            "-timeout",
            "4s",
            "-timeout_error",
        ],
        60.0,
        workdir=tmp_path,
        expect_returncode=None,
    )
    assert result.returncode != 0  # SIPp heard nothing and timed out
    messages = (tmp_path / "sipp_messages.log").read_text(errors="replace")
    assert "SIP/2.0 " not in messages, "the listener answered a host that is not allowed"
    stats = listener.transport.stats
    assert stats["rejected_host"] >= 1  # the INVITE and its retransmissions
    assert stats["invites"] == 0
    assert listener.of_type(CallRinging) == []
    (rejected,) = listener.of_type(RequestRejected)
    assert isinstance(rejected, RequestRejected)
    assert rejected.remote[0] == "127.0.0.2" and rejected.reason == "host not allowed"


GARBAGE = [
    b"",
    b"\r\n\r\n",
    b"\x00" * 64,
    b"\xff\xfe\xfd not sip at all",
    b"INVITE sip:office@127.0.0.1 SIP/2.0\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKg\r\n\r\n",
    b"SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\n\r\n",
    b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n",
    bytes(range(256)) * 200,
]


async def test_malformed_datagrams_do_not_kill_the_transport(
    listener: Listener, tmp_path: Path
) -> None:
    host, port = listener.transport.local_address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for datagram in GARBAGE:
            sock.sendto(datagram[:60000], (host, port))
    await wait_for(lambda: listener.transport.stats["received"] >= len(GARBAGE) - 1)
    stats = listener.transport.stats
    assert stats["parse_errors"] >= 6
    # A valid call afterwards still rings and ends.
    await sipp(
        listener,
        tmp_path,
        "-sf",
        str(SIPP_DIR / "uac_invite_cancel.xml"),
        "-inf",
        str(SIPP_DIR / "callers.csv"),
        "-m",
        "1",
        "-d",
        "100",
        "-timeout",
        "20s",
        "-timeout_error",
    )
    await wait_for(lambda: len(listener.of_type(CallEnded)) == 1)
    (ring,) = listener.of_type(CallRinging)
    assert isinstance(ring, CallRinging) and ring.caller.number == "+81312345678"
