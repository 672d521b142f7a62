"""The test caller behind ``callpop call``, against a real SIPp phone on loopback.

SIPp plays a phone that rings and is cancelled (``sipp_uas_ring_cancel.xml``); the
dialer must INVITE, hear 100/180, CANCEL on the INVITE's branch, and ACK the 487 with
its To tag. SIPp's message log is read back to check what it actually received.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from telephony.dialer import DialError, Step, UacCall
from telephony.message import SipRequest, build_response, parse_message
from telephony.timers import T1, T2
from telephony.transport import place_call
from tests.processes import free_udp_port

SCENARIO = Path(__file__).with_name("sipp_uas_ring_cancel.xml")


@dataclass
class Sipp:
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    def wait(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout=timeout)

    def messages(self) -> str:
        logs = sorted(self.workdir.glob("*_messages.log"))
        return "".join(path.read_text(errors="replace") for path in logs)

    def report(self) -> str:
        parts = [f"--- SIPp UAS on 127.0.0.1:{self.port} (exit {self.process.returncode})"]
        for path in sorted(self.workdir.iterdir()):
            if path.suffix in (".log", ".out", ".err"):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)


@pytest.fixture
def sipp_uas(tmp_path: Path) -> Iterator[Sipp]:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp is not installed (Debian package sip-tester); the dialer tests need it")
    port = free_udp_port()
    stdout = (tmp_path / "sipp.out").open("wb")
    stderr = (tmp_path / "sipp.err").open("wb")
    process = subprocess.Popen(
        [
            sipp,
            "-sf",
            str(SCENARIO),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "20s",
            "-timeout_error",
            "-trace_msg",
            "-trace_err",
        ],
        cwd=tmp_path,
        stdout=stdout,
        stderr=stderr,
    )
    uas = Sipp(process=process, port=port, workdir=tmp_path)
    try:
        yield uas
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stdout.close()
        stderr.close()


def _sent_requests(log: str, method: str) -> list[str]:
    """Requests SIPp received, as logged by -trace_msg."""
    chunks = re.split(r"-{10,}.*\n", log)
    return [chunk for chunk in chunks if re.search(rf"^\s*{method} sip:", chunk, re.M)]


def _branch(message: str) -> str:
    match = re.search(r"^Via:.*;branch=([^;\s]+)", message, re.M | re.I)
    assert match, message
    return match.group(1)


@pytest.mark.sipp
@pytest.mark.asyncio
async def test_rings_then_cancels_against_sipp(sipp_uas: Sipp) -> None:
    try:
        result = await place_call(
            "03-1234-5678",
            to=("127.0.0.1", sipp_uas.port),
            name="ヤマダ タロウ",
            ring_seconds=0.3,
            timeout=8.0,
            line="050-1234-5678",
        )
        assert result.responses == (100, 180, 200, 487)
        assert result.final_status == 487
        assert sipp_uas.wait() == 0
    except BaseException:
        print(sipp_uas.report())
        raise

    ringing = result.elapsed(Step.RINGING)
    cancel_sent = result.elapsed(Step.CANCEL_SENT)
    assert ringing is not None and cancel_sent is not None
    assert cancel_sent >= ringing

    log = sipp_uas.messages()
    (invite,) = _sent_requests(log, "INVITE")[:1]
    (cancel,) = _sent_requests(log, "CANCEL")[:1]
    assert result.call_id in invite
    assert "<sip:0312345678@127.0.0.1:" in invite  # separators stripped, digits only
    # The office line dialled is the Request-URI and To user.
    assert re.search(r"^INVITE sip:05012345678@127\.0\.0\.1:\d+ SIP/2\.0", invite, re.M)
    assert re.search(r"^To: <sip:05012345678@127\.0\.0\.1:\d+>", invite, re.M)
    assert '"ヤマダ タロウ"' in invite
    # RFC 3261 §9.1: the CANCEL travels on the INVITE's branch; no Reason for a missed call.
    assert _branch(cancel) == _branch(invite)
    assert "Reason:" not in cancel


@pytest.mark.sipp
@pytest.mark.asyncio
async def test_answered_elsewhere_puts_reason_on_cancel(sipp_uas: Sipp) -> None:
    try:
        result = await place_call(
            "0312345678",
            to=("127.0.0.1", sipp_uas.port),
            ring_seconds=0.1,
            answered_elsewhere=True,
            withheld="payphone",
        )
        assert result.responses == (100, 180, 200, 487)
        assert sipp_uas.wait() == 0
    except BaseException:
        print(sipp_uas.report())
        raise
    log = sipp_uas.messages()
    (invite,) = _sent_requests(log, "INVITE")[:1]
    (cancel,) = _sent_requests(log, "CANCEL")[:1]
    assert re.search(r'^Reason: SIP;cause=200;text="Call completed elsewhere"', cancel, re.M)
    # A withheld caller: the anonymous URI, the reason as display name, Privacy: id.
    assert '"Coin line/payphone" <sip:anonymous@anonymous.invalid>' in invite
    assert re.search(r"^Privacy: id", invite, re.M)
    assert "0312345678" not in invite


@pytest.mark.asyncio
async def test_silence_gives_a_clear_error() -> None:
    # A bound socket that never answers: the INVITE (and its Timer A retransmits) go
    # nowhere, and the caller must say what to check instead of hanging.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with pytest.raises(DialError) as caught:
            await place_call("0312345678", to=("127.0.0.1", port), timeout=1.6)
        silent.settimeout(0)
        first = silent.recv(65535)
    assert str(caught.value) == (
        f"no response from 127.0.0.1:{port} after 1.6 s — is callpop listening there "
        "(trunk mode) and is this host allowed?"
    )
    assert first.startswith(b"INVITE sip:office@127.0.0.1:")


@pytest.mark.asyncio
async def test_nothing_listening_gives_the_same_clear_error() -> None:
    port = free_udp_port()
    with pytest.raises(DialError, match=rf"^no response from 127\.0\.0\.1:{port} after 0\.8 s — "):
        await place_call("0312345678", to=("127.0.0.1", port), timeout=0.8)


@pytest.mark.asyncio
async def test_rejects_what_cannot_be_a_sip_user() -> None:
    with pytest.raises(DialError, match="not a dialable number"):
        await place_call("03@1234", to=("127.0.0.1", 9), timeout=0.5)


# --- the sans-I/O core, with time as an argument ----------------------------------------

TARGET = ("127.0.0.1", 5999)
LOCAL = ("127.0.0.1", 40000)


def _request(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def test_invite_retransmits_on_timer_a_until_the_deadline() -> None:
    call = UacCall("0312345678", target=TARGET, local=LOCAL, timeout=8.0)
    call.start(0.0)
    sent_at = [0.0] if call.datagrams_to_send() else []
    while not call.done:
        due = call.get_timer()
        assert due is not None
        call.handle_timer(due)
        if call.datagrams_to_send():
            sent_at.append(due)
    # RFC 3261 §17.1.1.2: Timer A starts at T1 and doubles; Timer B (here 8 s) gives up.
    assert sent_at == [0.0, T1, 3 * T1, 7 * T1, 15 * T1]
    with pytest.raises(DialError, match="after 8 s"):
        call.result()


def test_provisional_stops_timer_a_and_cancel_follows_on_timer_e() -> None:
    call = UacCall("0312345678", target=TARGET, local=LOCAL, ring_seconds=2.0, timeout=30.0)
    call.start(0.0)
    invite = _request(call.datagrams_to_send()[0])
    call.receive(build_response(invite, 180, to_tag="uas1"), 0.1)
    assert call.get_timer() == pytest.approx(2.1)  # no INVITE retransmit any more
    call.handle_timer(2.1)
    (cancel_bytes,) = call.datagrams_to_send()
    cancel = _request(cancel_bytes)
    assert cancel.method == "CANCEL"
    assert cancel.headers.get("Via") == invite.headers.get("Via")
    assert cancel.headers.get("To") == invite.headers.get("To")  # RFC 3261 §9.1: no tag
    sent_at = []
    now = 2.1
    while now < 2.1 + 12:
        due = call.get_timer()
        assert due is not None
        now = due
        call.handle_timer(now)
        if call.datagrams_to_send():
            sent_at.append(round(now - 2.1, 6))
    # Timer E: T1, 2T1, 4T1, then capped at T2.
    assert sent_at[:5] == [T1, 3 * T1, 7 * T1, 7 * T1 + T2, 7 * T1 + 2 * T2]

    call.receive(build_response(cancel, 200), now)
    call.receive(build_response(invite, 487, to_tag="uas1"), now + 0.01)
    (ack_bytes,) = call.datagrams_to_send()
    ack = _request(ack_bytes)
    assert ack.method == "ACK"
    assert ack.headers.get("Via") == invite.headers.get("Via")  # same branch, §17.1.1.3
    assert "tag=uas1" in (ack.headers.get("To") or "")
    assert call.done
    assert call.result().responses == (180, 200, 487)


def test_a_refusal_is_acked_and_reported() -> None:
    call = UacCall("0312345678", target=TARGET, local=LOCAL)
    call.start(0.0)
    invite = _request(call.datagrams_to_send()[0])
    call.receive(build_response(invite, 403, "Forbidden", to_tag="x"), 0.2)
    (ack,) = call.datagrams_to_send()
    assert _request(ack).method == "ACK"
    with pytest.raises(DialError, match="ended the call with 403 Forbidden"):
        call.result()


def test_an_answer_is_acked_then_hung_up_with_bye() -> None:
    call = UacCall("0312345678", target=TARGET, local=LOCAL, ring_seconds=1.0)
    call.start(0.0)
    invite = _request(call.datagrams_to_send()[0])
    call.receive(build_response(invite, 180, to_tag="p"), 0.1)
    ok = build_response(
        invite, 200, to_tag="p", headers=[("Contact", "<sip:phone@127.0.0.1:5998>")]
    )
    call.receive(ok, 0.5)
    (ack_bytes,) = call.datagrams_to_send()
    ack = _request(ack_bytes)
    assert (ack.method, ack.uri) == ("ACK", "sip:phone@127.0.0.1:5998")
    assert ack.headers.get("Via") != invite.headers.get("Via")  # §13.2.2.4: new transaction
    call.handle_timer(1.1)
    (bye_bytes,) = call.datagrams_to_send()
    bye = _request(bye_bytes)
    assert bye.method == "BYE" and bye.headers.get("CSeq") == "2 BYE"
    call.receive(build_response(bye, 200), 1.2)
    assert call.done
    assert call.result().responses == (180, 200, 200)  # INVITE 200, then BYE 200


@pytest.mark.parametrize(
    ("line", "user"),
    [(None, "office"), ("03-5555-1234", "0355551234"), ("+81355551234", "+81355551234")],
)
def test_the_dialled_line_is_the_request_uri_and_to_user(line: str | None, user: str) -> None:
    call = UacCall("0312345678", target=TARGET, local=LOCAL, line=line)
    call.start(0.0)
    invite = _request(call.datagrams_to_send()[0])
    # RFC 3261 §8.1.1.1-2: the Request-URI and To name whom we call.
    assert invite.uri == f"sip:{user}@127.0.0.1:5999"
    assert invite.headers.get("To") == f"<sip:{user}@127.0.0.1:5999>"
    assert "sip:0312345678@" in (invite.headers.get("From") or "")  # the caller, unchanged


def test_a_line_that_cannot_be_dialled_is_refused() -> None:
    with pytest.raises(DialError, match="not a dialable number"):
        UacCall("0312345678", target=TARGET, local=LOCAL, line="office@pbx")
