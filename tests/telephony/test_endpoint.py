"""The sans-I/O endpoint's server side: INVITE/CANCEL/ACK/BYE, OPTIONS, errors, timers.

Bytes go in with an explicit ``now``; the responses, events and the next timer come
out. Nothing sleeps: timers fire because a test passes a later ``now``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

import telephony.message
from telephony.callerid import extract_caller_id
from telephony.endpoint import INTERNAL_ERROR_KINDS, EndpointConfig, SipEndpoint
from telephony.events import (
    CallEnded,
    CallRinging,
    EndReason,
    Event,
    RegistrationState,
    RequestRejected,
)
from telephony.message import Headers, SipRequest, SipResponse, parse_message
from telephony.uri import parse_name_addr

PBX = ("192.0.2.20", 5060)
CALLER_PORT = 5062


def make_endpoint(ring_timeout: float = 60.0) -> SipEndpoint:
    return SipEndpoint(
        EndpointConfig(
            mode="trunk",
            local_host="192.0.2.1",
            local_port=5070,
            allowed_hosts=frozenset({PBX[0]}),
            ring_timeout=ring_timeout,
        )
    )


def request(
    method: str,
    *,
    branch: str = "z9hG4bKcall1",
    call_id: str = "call1@pbx",
    cseq: str | None = None,
    to_tag: str | None = None,
    extra: str = "",
    body: str = "",
    version: str = "SIP/2.0",
    via: str | None = None,
) -> bytes:
    to = "<sip:office@192.0.2.1>" + (f";tag={to_tag}" if to_tag else "")
    via_line = via if via is not None else f"SIP/2.0/UDP 192.0.2.20:{CALLER_PORT};branch={branch}"
    text = (
        f"{method} sip:office@192.0.2.1:5070 {version}\r\n"
        f"Via: {via_line}\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Yamada Taro" <sip:0312345678@pbx.example>;tag=from1\r\n'
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    )
    return text.encode()


def feed(endpoint: SipEndpoint, data: bytes, now: float, source: tuple[str, int] = PBX) -> None:
    endpoint.receive_datagram(data, (source[0], CALLER_PORT) if source == PBX else source, now)


def responses(endpoint: SipEndpoint) -> list[SipResponse]:
    out = []
    for data, destination in endpoint.datagrams_to_send():
        assert destination == (PBX[0], CALLER_PORT)  # RFC 3261 §18.2.2: Via sent-by port
        message = parse_message(data)
        assert isinstance(message, SipResponse)
        out.append(message)
    return out


def statuses(endpoint: SipEndpoint) -> list[tuple[int, str]]:
    return [(r.status, r.cseq[1]) for r in responses(endpoint)]


def events(endpoint: SipEndpoint) -> list[Event]:
    out = []
    while (event := endpoint.next_event()) is not None:
        out.append(event)
    return out


def to_tag(response: SipResponse) -> str | None:
    return parse_name_addr(response.headers.get("To") or "").tag


def ringing(endpoint: SipEndpoint, now: float = 0.0, **kwargs: str) -> list[SipResponse]:
    feed(endpoint, request("INVITE", **kwargs), now)
    return responses(endpoint)


def test_invite_rings_with_100_and_180_and_one_event() -> None:
    endpoint = make_endpoint()
    invite = request("INVITE")
    feed(endpoint, invite, 10.0)
    trying, ring = responses(endpoint)
    assert (trying.status, trying.reason) == (100, "Trying")
    assert to_tag(trying) is None  # RFC 3261 §8.2.6.2: 100 creates no dialog
    assert (ring.status, ring.reason) == (180, "Ringing")
    assert to_tag(ring)
    assert ring.headers.get("Contact") == "<sip:callpop@192.0.2.1:5070>"
    assert ring.call_id == "call1@pbx" and ring.cseq == (1, "INVITE")
    parsed = parse_message(invite)
    assert isinstance(parsed, SipRequest)
    (event,) = events(endpoint)
    assert event == CallRinging(
        call_id="call1@pbx",
        caller=extract_caller_id(parsed),
        at=10.0,
        remote=(PBX[0], CALLER_PORT),
    )
    assert event.caller.number == "0312345678"
    assert endpoint.active_calls == 1
    assert endpoint.registration_state is RegistrationState.DISABLED
    assert endpoint.get_timer() == 70.0  # ring timeout


def test_retransmitted_invite_gets_last_provisional_and_no_second_event() -> None:
    endpoint = make_endpoint()
    first = ringing(endpoint)
    events(endpoint)
    feed(endpoint, request("INVITE"), 0.5)
    (again,) = responses(endpoint)
    assert again.status == 180 and to_tag(again) == to_tag(first[1])
    assert events(endpoint) == []
    assert endpoint.stats["retransmissions"] == 1
    assert endpoint.stats["invites"] == 2


@pytest.mark.parametrize(
    ("reason_header", "expected"),
    [
        ("", EndReason.ABANDONED),
        ('Reason: SIP;cause=200;text="Call completed elsewhere"\r\n', EndReason.ANSWERED_ELSEWHERE),
        ("Reason: Q.850;cause=16\r\n", EndReason.ABANDONED),
        ("Reason: SIP;cause=487\r\n", EndReason.ABANDONED),
    ],
)
def test_cancel_gets_200_then_invite_487_and_ack_is_absorbed(
    reason_header: str, expected: EndReason
) -> None:
    endpoint = make_endpoint()
    ring = ringing(endpoint)[1]
    events(endpoint)
    feed(endpoint, request("CANCEL", extra=reason_header), 2.0)
    ok, terminated = responses(endpoint)
    assert (ok.status, ok.cseq) == (200, (1, "CANCEL"))
    assert (terminated.status, terminated.reason, terminated.cseq) == (
        487,
        "Request Terminated",
        (1, "INVITE"),
    )
    # RFC 3261 §9.2: same To tag for the 180, the CANCEL's 200 and the 487.
    assert to_tag(ok) == to_tag(terminated) == to_tag(ring)
    assert events(endpoint) == [CallEnded(call_id="call1@pbx", reason=expected, at=2.0)]
    assert endpoint.active_calls == 0
    ack = request("ACK", to_tag=to_tag(terminated), cseq="1 ACK")
    feed(endpoint, ack, 2.1)
    assert responses(endpoint) == []
    # Confirmed: Timer I (T4 = 5 s) absorbs ACK retransmissions, then the transaction ends.
    assert endpoint.get_timer() == pytest.approx(7.1)
    feed(endpoint, ack, 2.2)
    assert responses(endpoint) == []
    endpoint.handle_timer(7.1)
    assert endpoint.get_timer() is None
    assert endpoint.stats["cancels"] == 1


def test_487_retransmitted_on_timer_g_until_timer_h() -> None:
    endpoint = make_endpoint()
    ringing(endpoint)
    feed(endpoint, request("CANCEL"), 0.0)
    assert [r.status for r in responses(endpoint)] == [200, 487]
    fired = []
    while (timer := endpoint.get_timer()) is not None:
        endpoint.handle_timer(timer)
        out = responses(endpoint)
        if out:
            assert [r.status for r in out] == [487]
            fired.append(timer)
    # RFC 3261 §17.2.1: Timer G = T1, doubling to T2 (4 s); Timer H = 64 * T1 = 32 s.
    assert fired[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert all(b - a == 4.0 for a, b in zip(fired[3:], fired[4:], strict=False))
    assert fired[-1] < 32.0
    assert timer is None
    assert endpoint.stats["protocol_errors"] == 1  # Timer H: the ACK never came
    # An ACK after Timer H matches nothing and is absorbed silently.
    feed(endpoint, request("ACK", cseq="1 ACK", to_tag="x"), 40.0)
    assert responses(endpoint) == []


def test_retransmitted_cancel_gets_the_same_200_and_no_second_event() -> None:
    endpoint = make_endpoint()
    ringing(endpoint)
    feed(endpoint, request("CANCEL"), 1.0)
    first_ok = responses(endpoint)[0]
    events(endpoint)
    feed(endpoint, request("CANCEL"), 1.5)
    (again,) = responses(endpoint)
    assert again.status == 200 and to_tag(again) == to_tag(first_ok)
    assert events(endpoint) == []


def test_cancel_without_matching_invite_gets_481() -> None:
    endpoint = make_endpoint()
    ringing(endpoint)
    feed(endpoint, request("CANCEL", branch="z9hG4bKother"), 1.0)
    (response,) = responses(endpoint)
    assert (response.status, response.cseq[1]) == (481, "CANCEL")
    assert endpoint.active_calls == 1


def test_invite_retransmission_after_487_gets_487_again() -> None:
    endpoint = make_endpoint()
    ringing(endpoint)
    feed(endpoint, request("CANCEL"), 1.0)
    responses(endpoint)
    feed(endpoint, request("INVITE"), 1.2)
    assert [r.status for r in responses(endpoint)] == [487]


def test_bye_for_ringing_call_ends_it_as_hangup() -> None:
    endpoint = make_endpoint()
    ring = ringing(endpoint)[1]
    events(endpoint)
    feed(endpoint, request("BYE", cseq="2 BYE", to_tag=to_tag(ring)), 3.0)
    assert statuses(endpoint) == [(200, "BYE"), (487, "INVITE")]
    assert events(endpoint) == [CallEnded(call_id="call1@pbx", reason=EndReason.HANGUP, at=3.0)]
    feed(endpoint, request("BYE", branch="z9hG4bKbye2", cseq="3 BYE", to_tag="t"), 3.5)
    assert statuses(endpoint) == [(200, "BYE")]  # the call is still known; no new event
    assert events(endpoint) == []


def test_bye_for_unknown_call_gets_481() -> None:
    endpoint = make_endpoint()
    feed(endpoint, request("BYE", call_id="nobody@pbx", to_tag="t"), 0.0)
    assert statuses(endpoint) == [(481, "BYE")]
    assert events(endpoint) == []


def test_ring_timeout_sends_480_and_ends_as_timeout() -> None:
    endpoint = make_endpoint(ring_timeout=30.0)
    ringing(endpoint, now=1.0)
    events(endpoint)
    assert endpoint.get_timer() == 31.0
    endpoint.handle_timer(31.0)
    (unavailable,) = responses(endpoint)
    assert (unavailable.status, unavailable.reason) == (480, "Temporarily Unavailable")
    assert events(endpoint) == [CallEnded(call_id="call1@pbx", reason=EndReason.TIMEOUT, at=31.0)]
    # A CANCEL arriving after the final response gets 200 and changes nothing.
    feed(endpoint, request("CANCEL"), 31.2)
    assert statuses(endpoint) == [(200, "CANCEL")]
    assert events(endpoint) == []


def test_never_answers_200_to_an_invite() -> None:
    endpoint = make_endpoint(ring_timeout=5.0)
    ringing(endpoint)
    seen = []
    while (timer := endpoint.get_timer()) is not None:
        endpoint.handle_timer(timer)
        seen.extend(r.status for r in responses(endpoint))
    assert seen and set(seen) == {480}


def test_same_call_over_a_second_branch_is_a_loop() -> None:
    endpoint = make_endpoint()
    ringing(endpoint)
    events(endpoint)
    feed(endpoint, request("INVITE", branch="z9hG4bKfork2"), 0.1)
    assert statuses(endpoint) == [(482, "INVITE")]
    assert events(endpoint) == []


def test_options_and_notify_get_200_other_methods_405() -> None:
    endpoint = make_endpoint()
    feed(endpoint, request("OPTIONS", branch="z9hG4bKo"), 0.0)
    (ok,) = responses(endpoint)
    assert ok.status == 200
    assert ok.headers.get("Allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY"
    feed(endpoint, request("NOTIFY", branch="z9hG4bKn", extra="Event: dialog\r\n"), 0.0)
    assert statuses(endpoint) == [(200, "NOTIFY")]
    for i, method in enumerate(["REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "FROBNICATE"]):
        feed(endpoint, request(method, branch=f"z9hG4bKm{i}"), 0.0)
        (refused,) = responses(endpoint)
        assert (refused.status, refused.cseq[1]) == (405, method)
        assert "INVITE" in (refused.headers.get("Allow") or "")
    assert endpoint.stats["options"] == 1 and endpoint.stats["not_allowed"] == 5
    assert events(endpoint) == []


def test_unsupported_version_gets_505() -> None:
    endpoint = make_endpoint()
    feed(endpoint, request("INVITE", version="SIP/7.0"), 0.0)
    assert statuses(endpoint) == [(505, "INVITE")]
    assert events(endpoint) == []


def test_cseq_method_mismatch_gets_400_with_reason_and_warning() -> None:
    endpoint = make_endpoint()
    feed(endpoint, request("INVITE", cseq="1 OPTIONS"), 0.0)
    (bad,) = responses(endpoint)
    assert (bad.status, bad.reason) == (400, "CSeq Method Mismatch")
    assert (bad.headers.get("Warning") or "").startswith("399 callpop")
    (rejected,) = events(endpoint)
    assert isinstance(rejected, RequestRejected)
    assert endpoint.stats["bad_requests"] == 1


def test_max_forwards_zero_gets_483() -> None:
    endpoint = make_endpoint()
    data = request("INVITE").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    feed(endpoint, data, 0.0)
    assert statuses(endpoint) == [(483, "INVITE")]
    assert events(endpoint) == []


def test_require_of_an_unknown_extension_gets_420_with_unsupported() -> None:
    endpoint = make_endpoint()
    feed(endpoint, request("INVITE", extra="Require: 100rel, foo\r\n"), 0.0)
    (response,) = responses(endpoint)
    assert response.status == 420
    assert response.headers.get_all("Unsupported") == ["100rel", "foo"]


def test_reinvite_for_a_dialog_we_never_made_gets_481() -> None:
    endpoint = make_endpoint()
    feed(endpoint, request("INVITE", to_tag="someone-else"), 0.0)
    assert statuses(endpoint) == [(481, "INVITE")]


def test_invite_without_magic_cookie_branch_uses_rfc2543_matching() -> None:
    endpoint = make_endpoint()
    via = f"SIP/2.0/UDP 192.0.2.20:{CALLER_PORT}"
    feed(endpoint, request("INVITE", via=via), 0.0)
    assert [s for s, _ in statuses(endpoint)] == [100, 180]
    feed(endpoint, request("CANCEL", via=via), 1.0)
    assert statuses(endpoint) == [(200, "CANCEL"), (487, "INVITE")]


def test_missing_call_id_is_answered_400_when_via_survives() -> None:
    endpoint = make_endpoint()
    data = request("OPTIONS").replace(b"Call-ID: call1@pbx\r\n", b"")
    feed(endpoint, data, 0.0)
    ((bad, destination),) = endpoint.datagrams_to_send()
    assert destination == (PBX[0], CALLER_PORT)
    # No Call-ID to copy (RFC 3261 §8.2.6.2 copies what exists), so read it as text.
    assert bad.startswith(b"SIP/2.0 400 ")
    assert b"Warning: 399 callpop" in bad and b"Call-ID" in bad
    (rejected,) = events(endpoint)
    assert isinstance(rejected, RequestRejected) and "unparseable" in rejected.reason
    assert endpoint.stats["parse_errors"] == 1


def test_content_length_beyond_the_datagram_is_answered_400() -> None:
    endpoint = make_endpoint()
    data = request("INVITE", body="v=0\r\n").replace(b"Content-Length: 5", b"Content-Length: 500")
    feed(endpoint, data, 0.0)
    (bad,) = responses(endpoint)
    assert (bad.status, bad.cseq[1]) == (400, "INVITE")
    assert "Content-Length" in (bad.headers.get("Warning") or "")
    assert endpoint.active_calls == 0


def test_missing_via_is_dropped_and_counted() -> None:
    endpoint = make_endpoint()
    data = request("INVITE").replace(
        f"Via: SIP/2.0/UDP 192.0.2.20:{CALLER_PORT};branch=z9hG4bKcall1\r\n".encode(), b""
    )
    feed(endpoint, data, 0.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats["parse_errors"] == 1
    assert [type(e) for e in events(endpoint)] == [RequestRejected]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\xfe garbage",
        b"INVITE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        "INVITE sip:x SIP/2.0\r\nVia: \xe3\r\n\r\n".encode("latin-1"),
    ],
)
def test_garbage_is_counted_and_dropped(garbage: bytes) -> None:
    endpoint = make_endpoint()
    feed(endpoint, garbage, 0.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats["parse_errors"] == 1
    assert [type(e) for e in events(endpoint)] == [RequestRejected]
    # ...and the endpoint still works.
    assert [r.status for r in ringing(endpoint)] == [100, 180]


def test_keepalives_are_ignored_silently() -> None:
    endpoint = make_endpoint()
    for data in (b"\r\n\r\n", b"\r\n", b"\n"):
        feed(endpoint, data, 0.0)
    assert endpoint.datagrams_to_send() == []
    assert events(endpoint) == []
    assert endpoint.stats["keepalives"] == 3 and endpoint.stats["parse_errors"] == 0


def test_stray_response_is_ignored() -> None:
    endpoint = make_endpoint()
    stray = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n\r\n"
    )
    feed(endpoint, stray, 0.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats["stray_responses"] == 1


def test_host_not_allowed_gets_nothing_and_events_are_rate_limited() -> None:
    endpoint = make_endpoint()
    scanner = ("198.51.100.9", 5060)
    friendly_scanner = request("OPTIONS", extra="User-Agent: friendly-scanner\r\n")
    for i in range(50):
        endpoint.receive_datagram(friendly_scanner, scanner, i * 0.1)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats["rejected_host"] == 50
    (rejected,) = events(endpoint)
    assert rejected == RequestRejected(remote=scanner, reason="host not allowed", at=0.0)
    endpoint.receive_datagram(friendly_scanner, scanner, 10.5)
    assert [e.at for e in events(endpoint) if isinstance(e, RequestRejected)] == [10.5]
    endpoint.receive_datagram(friendly_scanner, ("198.51.100.10", 5060), 10.6)
    assert len(events(endpoint)) == 1  # another host is reported on its own
    assert endpoint.stats["options"] == 0


def test_rport_sends_responses_to_the_source_port() -> None:
    endpoint = make_endpoint()
    via = "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKnat;rport"
    endpoint.receive_datagram(request("OPTIONS", via=via), (PBX[0], 40000), 0.0)
    ((data, destination),) = endpoint.datagrams_to_send()
    assert destination == (PBX[0], 40000)
    assert data.startswith(b"SIP/2.0 200")


def test_two_calls_ring_independently() -> None:
    endpoint = make_endpoint()
    ringing(endpoint, branch="z9hG4bKa", call_id="a@pbx")
    ringing(endpoint, branch="z9hG4bKb", call_id="b@pbx")
    assert endpoint.active_calls == 2
    feed(endpoint, request("CANCEL", branch="z9hG4bKb", call_id="b@pbx"), 1.0)
    assert statuses(endpoint) == [(200, "CANCEL"), (487, "INVITE")]
    ended = [e for e in events(endpoint) if isinstance(e, CallEnded)]
    assert [e.call_id for e in ended] == ["b@pbx"]
    assert endpoint.active_calls == 1


# --- a bug while handling one datagram ---------------------------------------------------


def inject_parser_bug(
    monkeypatch: pytest.MonkeyPatch, fault: Callable[[str], BaseException | None]
) -> None:
    """Make the parser raise ``fault(call_id)`` (when not None) for matching datagrams."""
    real = telephony.message._parse_start_line

    def buggy(line: str, headers: Headers, body: bytes) -> SipRequest | SipResponse:
        exc = fault(headers.get("call-id") or "")
        if exc is not None:
            raise exc
        return real(line, headers, body)

    monkeypatch.setattr(telephony.message, "_parse_start_line", buggy)


def endpoint_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "telephony.endpoint"]


def test_a_parser_bug_drops_the_datagram_logs_once_and_the_next_call_rings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inject_parser_bug(
        monkeypatch, lambda call_id: IndexError("injected") if call_id == "boom@pbx" else None
    )
    endpoint = make_endpoint()
    with caplog.at_level(logging.ERROR, logger="telephony.endpoint"):
        for attempt in range(3):  # the PBX retransmits; each copy hits the same bug
            feed(endpoint, request("INVITE", call_id="boom@pbx"), 0.5 * attempt)
        assert endpoint.datagrams_to_send() == []  # dropped: neither 100 nor 400
        assert events(endpoint) == []
        assert endpoint.stats["internal_errors"] == 3
        assert endpoint.stats["parse_errors"] == 0  # a bug is not the sender's fault
        (record,) = endpoint_logs(caplog)  # one traceback, the rest only counted
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and record.exc_info[0] is IndexError
        assert "IndexError" in record.getMessage() and "test_endpoint.py:" in record.getMessage()
        # The endpoint keeps serving: the next good INVITE rings as usual.
        feed(endpoint, request("INVITE"), 2.0)
        assert statuses(endpoint) == [(100, "INVITE"), (180, "INVITE")]
        assert [type(event) for event in events(endpoint)] == [CallRinging]
    assert len(endpoint_logs(caplog)) == 1


def test_a_bug_in_request_handling_is_caught_the_same_way(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = make_endpoint()

    def broken_invite(*args: object) -> None:
        raise KeyError("injected")

    monkeypatch.setattr(endpoint._invites, "invite", broken_invite)
    with caplog.at_level(logging.ERROR, logger="telephony.endpoint"):
        feed(endpoint, request("INVITE"), 0.0)
        feed(endpoint, request("INVITE", call_id="call2@pbx", branch="z9hG4bKcall2"), 0.1)
        feed(endpoint, request("OPTIONS", branch="z9hG4bKopt"), 0.2)
    assert statuses(endpoint) == [(200, "OPTIONS")]
    assert endpoint.stats["internal_errors"] == 2
    (record,) = endpoint_logs(caplog)
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_different_bugs_are_each_logged_once_and_the_memory_of_them_is_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kinds = [type(f"Bug{index}", (Exception,), {}) for index in range(INTERNAL_ERROR_KINDS + 36)]

    def fault(call_id: str) -> BaseException | None:
        if not call_id.startswith("bug"):
            return None
        return kinds[int(call_id.removeprefix("bug").split("@")[0])]("injected")

    inject_parser_bug(monkeypatch, fault)
    endpoint = make_endpoint()
    with caplog.at_level(logging.ERROR, logger="telephony.endpoint"):
        for round_ in range(2):
            for index in range(len(kinds)):
                feed(endpoint, request("OPTIONS", call_id=f"bug{index}@pbx"), float(round_))
    assert endpoint.stats["internal_errors"] == 2 * len(kinds)
    logged = [record.exc_info[0] for record in endpoint_logs(caplog) if record.exc_info]
    # The first INTERNAL_ERROR_KINDS kinds, once each; later kinds only counted.
    assert logged == kinds[:INTERNAL_ERROR_KINDS]
    assert len(endpoint._internal_kinds) == INTERNAL_ERROR_KINDS


# --- the ringing cap: a burst of INVITEs ----------------------------------------------


def capped_endpoint(max_ringing: int, ring_timeout: float = 60.0) -> SipEndpoint:
    return SipEndpoint(
        EndpointConfig(
            mode="trunk",
            local_host="192.0.2.1",
            local_port=5070,
            allowed_hosts=frozenset({PBX[0]}),
            ring_timeout=ring_timeout,
            max_ringing=max_ringing,
        )
    )


def invite_n(n: int) -> dict[str, str]:
    return {"branch": f"z9hG4bKburst{n}", "call_id": f"burst{n}@pbx"}


def test_the_invite_beyond_max_ringing_gets_486_with_retry_after_and_no_ring() -> None:
    endpoint = capped_endpoint(3, ring_timeout=30.0)
    for n in range(3):
        assert [r.status for r in ringing(endpoint, float(n), **invite_n(n))] == [100, 180]
    assert [type(e) for e in events(endpoint)] == [CallRinging] * 3
    (busy,) = ringing(endpoint, 10.0, **invite_n(3))
    # RFC 3261 §21.4.24 + §20.33: this call only, and when to try again (the oldest ring,
    # started at 0, times out at 30).
    assert (busy.status, busy.reason, busy.cseq) == (486, "Busy Here", (1, "INVITE"))
    assert busy.headers.get("Retry-After") == "20"
    assert to_tag(busy)  # a final response has a To tag
    (rejected,) = events(endpoint)
    assert isinstance(rejected, RequestRejected) and rejected.reason.startswith("busy:")
    assert endpoint.active_calls == 3
    assert endpoint.stats["refused_busy"] == 1
    # Stateless: no transaction, so no timer beyond the three rings; the ACK is absorbed.
    assert endpoint.get_timer() == 30.0
    feed(endpoint, request("ACK", cseq="1 ACK", to_tag=to_tag(busy), **invite_n(3)), 10.1)
    assert responses(endpoint) == []
    # Its retransmission gets the same answer, same tag.
    (again,) = ringing(endpoint, 10.5, **invite_n(3))
    assert (again.status, to_tag(again)) == (486, to_tag(busy))


def test_after_one_ringing_call_ends_a_new_invite_rings_again() -> None:
    endpoint = capped_endpoint(2)
    ringing(endpoint, 0.0, **invite_n(0))
    ringing(endpoint, 0.0, **invite_n(1))
    assert [r.status for r in ringing(endpoint, 1.0, **invite_n(2))] == [486]
    feed(endpoint, request("CANCEL", **invite_n(0)), 2.0)
    assert [r.status for r in responses(endpoint)] == [200, 487]
    events(endpoint)
    assert [r.status for r in ringing(endpoint, 3.0, **invite_n(3))] == [100, 180]
    assert [type(e) for e in events(endpoint)] == [CallRinging]
    assert endpoint.active_calls == 2
    assert endpoint.stats["refused_busy"] == 1


def test_max_ringing_defaults_to_200_and_must_be_positive() -> None:
    endpoint = make_endpoint()
    for n in range(200):
        ringing(endpoint, 0.0, **invite_n(n))
    assert endpoint.active_calls == 200
    assert [r.status for r in ringing(endpoint, 0.0, **invite_n(200))] == [486]
    with pytest.raises(ValueError, match="max_ringing"):
        capped_endpoint(0)
