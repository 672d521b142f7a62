"""callpop's own torture messages (tests/data/torture) through the parser and the endpoint.

Every file has an expectation below: what ``parse_message`` reads from it (or the
``SipParseError`` it raises, and whether the error carries the partial message), and
what the endpoint sends back (the status codes, in order; nothing for what may not be
answered). The fuzz checks of ``fuzzing.py`` then run over these files and the recorded
INVITEs, and the last tests inject a bug into the parser to prove that those checks
report it instead of hiding it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import telephony.message
from telephony.callerid import extract_caller_id
from telephony.endpoint import EndpointConfig, SipEndpoint
from telephony.message import (
    Headers,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    parse_message,
)
from telephony.uri import SipUri, parse_name_addr, parse_uri, parse_via
from tests.telephony.fuzzing import check_mutations, check_prefixes

DATA = Path(__file__).parent.parent / "data"
TORTURE = DATA / "torture"
INVITES = DATA / "invites"
SENDER = ("192.0.2.20", 5062)
RINGS = (100, 180)


@dataclass(frozen=True)
class Parses:
    """The message parses; ``start`` is the method or status; ``headers`` are read back."""

    start: str | int
    cseq: tuple[int, str]
    headers: dict[str, str] = field(default_factory=dict)
    call_id: str | None = None  # default: "<file name>@torture.callpop.test"


@dataclass(frozen=True)
class Rejected:
    """``parse_message`` raises SipParseError containing ``error``; ``partial`` as given."""

    error: str
    partial: bool


@dataclass(frozen=True)
class Torture:
    verdict: Parses | Rejected
    answer: tuple[int, ...]  # statuses the endpoint sends back, () for none


EXPECTED: dict[str, Torture] = {
    # --- escaped and unusual URIs
    "esc_user_ruri": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    "ipv6_everywhere": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    "uri_headers_in_contact": Torture(Parses("OPTIONS", (7, "OPTIONS")), (200,)),
    # RFC 3261 §19.1.1: no headers component in a Request-URI.
    "ruri_with_headers": Torture(Rejected("headers component in Request-URI", True), (400,)),
    "ruri_with_tab": Torture(Rejected("bad Request-URI", True), (400,)),
    "user_with_semicolons": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    "display_name_escapes": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    # --- LWS and line folding (RFC 3261 §7.3.1, §25.1)
    "folded_headers": Torture(
        Parses(
            "INVITE",
            (1, "INVITE"),
            {
                "subject": "first part second part third part",
                "to": "<sip:0312345678@pbx.example.jp>",
            },
        ),
        RINGS,
    ),
    "lws_around_separators": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    # No header to continue and no Via to answer: dropped.
    "continuation_first": Torture(Rejected("continuation line before any header", False), ()),
    # RFC 3261 §7.1: exactly one SP between the elements of the request line.
    "double_space_request_line": Torture(Rejected("bad request line", False), ()),
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    "leading_crlf_lf_endings": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    "leading_crlf_crlf_endings": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    # --- unknown schemes and methods
    # RFC 3261 §8.2.1: a method we do not serve gets 405 with Allow.
    "unknown_method": Torture(Parses("PING", (3, "PING")), (405,)),
    # RFC 3261 §8.2.2.1: an unknown Request-URI scheme gets 416.
    "unknown_ruri_scheme": Torture(Parses("OPTIONS", (4, "OPTIONS")), (416,)),
    "unknown_schemes_in_from_to": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    # RFC 4475 §3.1.2.17 shape: CSeq method differs from the request method.
    "cseq_method_mismatch": Torture(Parses("OPTIONS", (5, "INFO")), (400,)),
    # RFC 3261 §8.2.2: a version we do not speak gets 505.
    "version_sip3": Torture(Parses("INVITE", (1, "INVITE")), (505,)),
    # --- huge and negative values
    # RFC 3261 §8.1.1.5: CSeq below 2**31.
    "cseq_too_big": Torture(Rejected("CSeq number out of range: 2147483648", True), (400,)),
    "cseq_five_thousand_digits": Torture(Rejected("CSeq number out of range", True), (400,)),
    "cseq_zero_padded": Torture(Parses("INVITE", (42, "INVITE")), RINGS),
    "cseq_negative": Torture(Rejected("unparsable CSeq", True), (400,)),
    # RFC 3261 §16.3 step 3 / RFC 4475 §3.3.11 zeromf.
    "max_forwards_zero": Torture(Parses("INVITE", (1, "INVITE")), (483,)),
    # A UAS only cares whether Max-Forwards is zero; 5000 digits are not.
    "max_forwards_huge": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    "max_forwards_negative": Torture(Parses("INVITE", (1, "INVITE")), (400,)),
    # An INVITE's Expires bounds the ring (RFC 3261 §13.3.1); the ring timeout rules here.
    "expires_huge": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    "expires_negative": Torture(Parses("INVITE", (1, "INVITE"), {"expires": "-3600"}), RINGS),
    # --- bad Content-Length (RFC 3261 §18.3: 400 on UDP; RFC 4475 clerr, ncl)
    "content_length_too_long": Torture(Rejected("body shorter than Content-Length", True), (400,)),
    "content_length_too_short": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    "content_length_non_numeric": Torture(Rejected("bad Content-Length 'twelve'", True), (400,)),
    "content_length_fullwidth_digits": Torture(Rejected("bad Content-Length", True), (400,)),
    "content_length_huge": Torture(Rejected("body shorter than Content-Length", True), (400,)),
    "content_length_negative": Torture(Rejected("bad Content-Length '-1'", True), (400,)),
    # --- duplicate and missing headers (RFC 3261 §8.1.1, RFC 4475 §3.3.8 multi01)
    "two_call_ids": Torture(Rejected("more than one Call-ID header", True), (400,)),
    "two_froms_compact": Torture(Rejected("more than one From header", True), (400,)),
    "no_cseq": Torture(Rejected("missing CSeq header", True), (400,)),
    # RFC 3261 §18.2.2: without a Via there is no address to answer.
    "no_via": Torture(Rejected("missing Via header", True), ()),
    "empty_call_id": Torture(Rejected("empty Call-ID header", True), (400,)),
    # --- binary bodies, bytes that are not UTF-8 (RFC 3261 §7.3.1: headers are UTF-8)
    "binary_body": Torture(Parses("INVITE", (1, "INVITE")), RINGS),
    "nul_in_header_value": Torture(
        Parses("INVITE", (1, "INVITE"), {"subject": "before\x00after"}), RINGS
    ),
    "latin1_display_name": Torture(Rejected("header bytes are not UTF-8", False), ()),
    "utf8_surrogate_in_header": Torture(Rejected("header bytes are not UTF-8", False), ()),
    # RFC 3261 §18.1.2: a response matching no transaction is dropped.
    "stray_200_response": Torture(Parses(200, (1, "INVITE")), ()),
}


def read(name: str) -> bytes:
    return (TORTURE / f"{name}.sip").read_bytes()


def parsed(name: str) -> SipMessage:
    return parse_message(read(name))


def request(name: str) -> SipRequest:
    message = parsed(name)
    assert isinstance(message, SipRequest)
    return message


def test_every_torture_file_has_an_expectation() -> None:
    files = {path.stem for path in TORTURE.glob("*.sip")}
    assert files == set(EXPECTED)
    assert len(files) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parser_verdict(name: str) -> None:
    verdict = EXPECTED[name].verdict
    if isinstance(verdict, Rejected):
        with pytest.raises(SipParseError) as caught:
            parsed(name)
        assert verdict.error in str(caught.value)
        assert (caught.value.partial is not None) is verdict.partial
        return
    message = parsed(name)
    if isinstance(verdict.start, int):
        assert isinstance(message, SipResponse) and message.status == verdict.start
    else:
        assert isinstance(message, SipRequest) and message.method == verdict.start
    assert message.call_id == (verdict.call_id or f"{name}@torture.callpop.test")
    assert message.cseq == verdict.cseq
    for header, value in verdict.headers.items():
        assert message.headers.get(header) == value


def _status(data: bytes) -> int:
    # The start line only: a 400 copies the request's CSeq, which may be the bad one.
    version, status, _ = data.split(b" ", 2)
    assert version == b"SIP/2.0"
    return int(status)


def trunk_endpoint() -> SipEndpoint:
    return SipEndpoint(
        EndpointConfig(
            mode="trunk",
            local_host="192.0.2.1",
            local_port=5070,
            allowed_hosts=frozenset({SENDER[0]}),
        )
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_endpoint_answer(name: str) -> None:
    endpoint = trunk_endpoint()
    endpoint.receive_datagram(read(name), SENDER, 0.0)
    sent = endpoint.datagrams_to_send()
    assert tuple(_status(data) for data, _ in sent) == EXPECTED[name].answer
    # RFC 3261 §18.2.2: the Via sent-by port (or the source port with rport).
    assert all(destination == SENDER for _, destination in sent)
    assert endpoint.stats["internal_errors"] == 0


# --- what the messages that parse must yield ---------------------------------------------


def test_escaped_request_uri_and_from_users_are_unescaped() -> None:
    message = request("esc_user_ruri")
    uri = parse_uri(message.uri)
    assert isinstance(uri, SipUri) and uri.user == "0312345678"
    caller = extract_caller_id(message)
    assert caller.number == "+81398765432"
    assert caller.display_name == "Sato Hanako"


def test_ipv6_references_keep_their_brackets_and_ports() -> None:
    message = request("ipv6_everywhere")
    uri = parse_uri(message.uri)
    assert isinstance(uri, SipUri) and (uri.host, uri.port) == ("[2001:db8::1]", 5070)
    via = parse_via(message.headers.get("via") or "")
    assert (via.host, via.port, via.params["rport"]) == ("[2001:db8::20]", 5062, None)
    assert extract_caller_id(message).number == "0398765432"


def test_uri_headers_in_contact_are_unescaped() -> None:
    contact = parse_name_addr(request("uri_headers_in_contact").headers.get("contact") or "")
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == {"transport": "udp"}
    assert contact.uri.headers == {"Subject": "torture test", "Priority": "urgent"}


def test_user_part_keeps_its_semicolons() -> None:
    uri = parse_uri(request("user_with_semicolons").uri)
    assert isinstance(uri, SipUri)
    assert uri.user == "+81312345678;npdi;rn=+81300000000"
    assert uri.params == {"user": "phone"}


def test_quoted_pairs_in_display_name_are_undone() -> None:
    caller = extract_caller_id(request("display_name_escapes"))
    assert caller.display_name == 'Sato "The Boss" \\ Hanako'


def test_folded_via_and_lws_around_separators_are_read() -> None:
    folded = parse_via(request("folded_headers").headers.get("via") or "")
    assert folded.branch == "z9hG4bK-torture-folded"
    spaced = parse_via(request("lws_around_separators").headers.get("via") or "")
    assert (spaced.transport, spaced.host, spaced.port) == ("UDP", "192.0.2.20", 5062)
    assert spaced.branch == "z9hG4bK-torture-lws"


def test_unknown_schemes_in_from_and_to_give_no_number() -> None:
    caller = extract_caller_id(request("unknown_schemes_in_from_to"))
    assert caller.number is None and caller.withheld is None


def test_short_content_length_cuts_the_body() -> None:
    # RFC 3261 §18.3: bytes past Content-Length are not part of the message.
    assert request("content_length_too_short").body == b"v=0\r\no=- 20"


def test_binary_body_is_kept_byte_for_byte() -> None:
    body = request("binary_body").body
    assert body[:256] == bytes(range(256))
    assert body[256:] == b"\r\n\r\nOPTIONS sip:x@192.0.2.1 SIP/2.0\r\n\r\n"


def test_version_is_kept_for_the_core_to_judge() -> None:
    assert request("version_sip3").version == "SIP/3.0"


def test_405_names_what_is_allowed() -> None:
    endpoint = trunk_endpoint()
    endpoint.receive_datagram(read("unknown_method"), SENDER, 0.0)
    ((data, _),) = endpoint.datagrams_to_send()
    response = parse_message(data)
    assert isinstance(response, SipResponse)
    assert response.headers.get("allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY"


# --- fuzzing, and proof that it would see a bug ------------------------------------------

FUZZED = sorted(TORTURE.glob("*.sip")) + sorted(INVITES.glob("*.sip"))


@pytest.mark.parametrize("path", FUZZED, ids=lambda path: path.stem)
def test_prefixes_raise_only_sip_parse_error(path: Path) -> None:
    assert check_prefixes(path.read_bytes()) > 1


@pytest.mark.parametrize("path", FUZZED, ids=lambda path: path.stem)
def test_mutations_raise_only_sip_parse_error(path: Path) -> None:
    assert check_mutations(path.read_bytes(), seed=path.name) == 200


def _mutations(data: bytes) -> int:
    return check_mutations(data, seed="injected")


# Each check with a bug only it finds: a datagram cut before its Content-Length, and a
# start line that is not the original's.
Trigger = Callable[[str, Headers, str], bool]
INJECTIONS: dict[str, tuple[Callable[[bytes], int], Trigger]] = {
    "prefixes": (check_prefixes, lambda line, headers, original: "content-length" not in headers),
    "mutations": (_mutations, lambda line, headers, original: line != original),
}


@pytest.mark.parametrize("check", sorted(INJECTIONS))
def test_an_injected_parser_bug_makes_the_fuzz_checks_fail(
    check: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the parser stopped turning every exception into SipParseError, this
    # IndexError became a parse error and the fuzz checks stayed green whatever the bug.
    run, trigger = INJECTIONS[check]
    data = read("folded_headers")
    original = data.split(b"\r\n", 1)[0].decode()
    real = telephony.message._parse_start_line

    def buggy(line: str, headers: Headers, body: bytes) -> SipMessage:
        if trigger(line, headers, original):
            raise IndexError("injected: string index out of range")
        return real(line, headers, body)

    monkeypatch.setattr(telephony.message, "_parse_start_line", buggy)
    parse_message(data)  # the message itself still parses: only the fuzzing finds the bug
    with pytest.raises(IndexError, match="injected"):
        run(data)
