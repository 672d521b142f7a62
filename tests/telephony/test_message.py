"""SIP message syntax: parsing rules, header multi-dict, and building requests/responses."""

from __future__ import annotations

import pytest

from telephony.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    build_request,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from telephony.uri import (
    AbsoluteUri,
    SipUri,
    TelUri,
    hostport,
    parse_name_addr,
    parse_uri,
    parse_via,
)


def invite(*extra: str, body: bytes = b"", length: str | None = None, end: str = "\r\n") -> bytes:
    lines = [
        "INVITE sip:0398765432@pbx.example.jp SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport",
        "Max-Forwards: 70",
        'From: "Caller" <sip:0312345678@carrier.example.net>;tag=f1',
        "To: <sip:0398765432@pbx.example.jp>",
        "Call-ID: c1@192.0.2.1",
        "CSeq: 1 INVITE",
        *extra,
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return (end.join(lines) + end + end).encode() + body


def request(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


# --- parsing -------------------------------------------------------------------------


def test_basic_invite() -> None:
    message = request(invite(length="0"))
    assert (message.method, message.uri, message.version) == (
        "INVITE",
        "sip:0398765432@pbx.example.jp",
        "SIP/2.0",
    )
    assert message.call_id == "c1@192.0.2.1"
    assert message.cseq == (1, "INVITE")
    assert message.body == b""


def test_bare_lf_line_endings() -> None:
    message = request(invite(length="4", body=b"abcd", end="\n"))
    assert message.headers.get("to") == "<sip:0398765432@pbx.example.jp>"
    assert message.body == b"abcd"


def test_folded_header_joined_with_one_space() -> None:
    data = invite("Subject: first\r\n   second\r\n\tthird", length="0")
    assert request(data).headers.get("subject") == "first second third"


def test_lws_around_colon_and_case_insensitive_names() -> None:
    data = invite("sUbJeCt   :   hello  ", length="0")
    headers = request(data).headers
    assert headers.get("SUBJECT") == "hello"
    assert headers.get("s") == "hello"
    assert "Subject" in headers


@pytest.mark.parametrize(
    ("compact", "long"),
    [
        ("f", "from"),
        ("t", "to"),
        ("v", "via"),
        ("i", "call-id"),
        ("m", "contact"),
        ("l", "content-length"),
        ("c", "content-type"),
        ("e", "content-encoding"),
        ("k", "supported"),
        ("s", "subject"),
        ("o", "event"),
        ("u", "allow-events"),
        ("r", "refer-to"),
        ("b", "referred-by"),
        ("x", "session-expires"),
        ("a", "accept-contact"),
        ("j", "reject-contact"),
        ("d", "request-disposition"),
        ("y", "identity"),
        ("n", "identity-info"),
    ],
)
def test_compact_forms(compact: str, long: str) -> None:
    headers = Headers([(compact, "value")])
    assert list(headers.items()) == [(long, "value")]
    assert headers.get(long) == "value"
    assert headers.get(compact.upper()) == "value"


def test_whole_message_in_compact_form() -> None:
    data = (
        b"INVITE sip:200@pbx SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"f: <sip:0312345678@h>;tag=1\r\nt: <sip:200@pbx>\r\ni: abc\r\n"
        b"CSeq: 5 INVITE\r\nl: 3\r\n\r\nxyz"
    )
    message = request(data)
    assert message.call_id == "abc"
    assert message.body == b"xyz"


def test_comma_lists_split_outside_quotes_and_brackets() -> None:
    data = invite(
        'Contact: "Doe, John" <sip:a@h;x=1,2>, <sip:b@h>',
        "Contact: <sip:c@h>",
        "Via: SIP/2.0/UDP p1;branch=z9hG4bK2, SIP/2.0/TCP p2;branch=z9hG4bK3",
        "Allow: INVITE, ACK,CANCEL , BYE",
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        length="0",
    )
    headers = request(data).headers
    assert headers.get_all("contact") == [
        '"Doe, John" <sip:a@h;x=1,2>',
        "<sip:b@h>",
        "<sip:c@h>",
    ]
    assert [parse_via(v).host for v in headers.get_all("v")] == ["192.0.2.1", "p1", "p2"]
    assert headers.get_all("allow") == ["INVITE", "ACK", "CANCEL", "BYE"]
    # Date (and From/To) are not lists: their commas stay.
    assert headers.get_all("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_content_length_truncates_longer_body() -> None:
    assert request(invite(length="3", body=b"abcdef")).body == b"abc"


def test_missing_content_length_takes_rest_of_datagram() -> None:
    assert request(invite(body=b"v=0\r\n")).body == b"v=0\r\n"


@pytest.mark.parametrize(
    ("length", "body", "error"),
    [
        ("10", b"short", "body shorter than Content-Length"),
        ("-1", b"", "bad Content-Length"),
        ("ten", b"", "bad Content-Length"),
    ],
)
def test_bad_content_length(length: str, body: bytes, error: str) -> None:
    with pytest.raises(SipParseError, match=error):
        parse_message(invite(length=length, body=body))


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_required_header(missing: str) -> None:
    lines = invite(length="0").decode().split("\r\n")
    kept = [line for line in lines if not line.startswith(f"{missing}:")]
    with pytest.raises(SipParseError, match=f"missing {missing} header") as caught:
        parse_message("\r\n".join(kept).encode())
    assert isinstance(caught.value.partial, SipRequest)


def test_max_forwards_may_be_absent() -> None:
    lines = invite(length="0").decode().split("\r\n")
    data = "\r\n".join(line for line in lines if not line.startswith("Max-Forwards")).encode()
    assert "max-forwards" not in request(data).headers


@pytest.mark.parametrize(
    ("cseq", "error"),
    [
        ("abc INVITE", "unparsable CSeq"),
        ("1", "unparsable CSeq"),
        ("1 INVITE extra", "unparsable CSeq"),
        ("2147483648 INVITE", "CSeq number out of range"),
    ],
)
def test_bad_cseq(cseq: str, error: str) -> None:
    data = invite(length="0").replace(b"CSeq: 1 INVITE", f"CSeq: {cseq}".encode())
    with pytest.raises(SipParseError, match=error):
        parse_message(data)


@pytest.mark.parametrize(
    ("start", "error"),
    [
        ("INVITE sip:a@h SIP/2.0 extra", "bad request line"),
        ("INVITE sip:a@h", "bad request line"),
        ("INVITE sip:a@h HTTP/1.1", "bad SIP version"),
        ("INV(TE sip:a@h SIP/2.0", "bad method"),
        ("INVITE a@h SIP/2.0", "URI without scheme"),
        ("SIP/2.0 099 Too Small", "status code out of range"),
        ("SIP/2.0 2000 OK", "bad status code"),
        ("SIP/2.0", "bad status line"),
        ("hello", "bad request line"),
    ],
)
def test_bad_start_line(start: str, error: str) -> None:
    data = invite(length="0").replace(
        b"INVITE sip:0398765432@pbx.example.jp SIP/2.0", start.encode()
    )
    with pytest.raises(SipParseError, match=error):
        parse_message(data)


def test_other_sip_version_parses_so_core_can_answer_505() -> None:
    data = invite(length="0").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    assert request(data).version == "SIP/3.0"


def test_header_line_without_colon_is_rejected() -> None:
    data = invite("this is not a header", length="0")
    with pytest.raises(SipParseError, match="header line without colon"):
        parse_message(data)


def test_body_without_blank_line_is_rejected() -> None:
    data = invite(length="0").rstrip(b"\r\n") + b"\r\nv=0 no blank line before me"
    with pytest.raises(SipParseError, match="header"):
        parse_message(data)


def test_cut_off_header_is_rejected() -> None:
    with pytest.raises(SipParseError, match="not terminated"):
        parse_message(invite(length="0").rstrip(b"\r\n"))


def test_non_utf8_header_bytes_rejected_but_binary_body_kept() -> None:
    with pytest.raises(SipParseError, match="not UTF-8"):
        parse_message(invite(length="0").replace(b"CSeq:", b"Subject: \xff\r\nCSeq:"))
    assert request(invite(length="2", body=b"\xff\xfe")).body == b"\xff\xfe"


def test_response_parses() -> None:
    data = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    message = parse_message(data)
    assert isinstance(message, SipResponse)
    assert (message.status, message.reason, message.cseq) == (180, "Ringing", (1, "INVITE"))


@pytest.mark.parametrize(
    "data", [b"", b"\r\n\r\n", b"\x00\x01\x02", "山".encode() * 3, b":\r\n\r\n"]
)
def test_garbage_raises_sip_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(data)


def test_not_bytes_raises_sip_parse_error() -> None:
    with pytest.raises(SipParseError):
        parse_message("INVITE")  # type: ignore[arg-type]


# --- URIs and addresses -------------------------------------------------------------


def test_parse_sip_uri_parts() -> None:
    uri = parse_uri("sips:alice:secret@[2001:db8::1]:5061;transport=tls;LR?Subject=hi%20there")
    assert uri == SipUri(
        "sips",
        "alice",
        "secret",
        "[2001:db8::1]",
        5061,
        {"transport": "tls", "lr": None},
        {"Subject": "hi there"},
    )


def test_parse_tel_and_other_uris() -> None:
    assert parse_uri("tel:+81-3-1234-5678;phone-context=+81") == TelUri(
        "+81-3-1234-5678", {"phone-context": "+81"}
    )
    assert parse_uri("urn:service:sos") == AbsoluteUri("urn", "service:sos")


@pytest.mark.parametrize(
    "text",
    ["", "sip:", "sip:a@", "sip:a@h:99999", "sip:a@h:x", "sip:a b@h", "1sip:a@h", "tel:abc?"],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


@pytest.mark.parametrize(
    ("text", "display", "user", "tag"),
    [
        ('"Yamada Taro" <sip:0312345678@h>;tag=1', "Yamada Taro", "0312345678", "1"),
        ('"山田 太郎"<sip:0312345678@h>;tag=2', "山田 太郎", "0312345678", "2"),
        ("Yamada   Taro <sip:0312345678@h> ; tag = 3", "Yamada Taro", "0312345678", "3"),
        ('"a \\"b\\" \\\\ c" <sip:x@h>', 'a "b" \\ c', "x", None),
        ("sip:0312345678@h;tag=4", None, "0312345678", "4"),
        ("<sip:0312345678@h;user=phone>", None, "0312345678", None),
        ('"" <sip:x@h>', None, "x", None),
    ],
)
def test_parse_name_addr(text: str, display: str | None, user: str, tag: str | None) -> None:
    addr = parse_name_addr(text)
    assert addr.display_name == display
    assert isinstance(addr.uri, SipUri)
    assert addr.uri.user == user
    assert addr.tag == tag


def test_bare_addr_spec_params_belong_to_header() -> None:
    addr = parse_name_addr("sip:a@h;transport=udp;tag=9")
    assert isinstance(addr.uri, SipUri)
    assert addr.uri.params == {}
    assert addr.params == {"transport": "udp", "tag": "9"}


@pytest.mark.parametrize(
    "text", ['"unterminated <sip:a@h>', "Name <sip:a@h", "a, b <sip:x@h>", "sip:a@h?x=y", ""]
)
def test_bad_name_addr(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


def test_parse_via_with_lws_and_ipv6() -> None:
    via = parse_via("SIP / 2.0 / udp  192.0.2.1 : 5070 ; branch=z9hG4bK1 ;rport;received=1.2.3.4")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "192.0.2.1", 5070, "z9hG4bK1")
    assert via.params["rport"] is None
    v6 = parse_via("SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bK2")
    assert (v6.host, v6.port) == ("[2001:db8::9]", 5060)


@pytest.mark.parametrize("text", ["SIP/2.0/UDP", "HTTP/1.1/TCP h", "SIP/2.0/UDP h;;", "SIP/2.0 h"])
def test_bad_via(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


# --- building -----------------------------------------------------------------------


def test_build_response_copies_dialog_headers_and_adds_to_tag() -> None:
    req = request(invite("Via: SIP/2.0/UDP proxy.example;branch=z9hG4bKp", length="0"))
    data = build_response(req, 180, to_tag="t1", headers=[("Contact", "<sip:callpop@h>")])
    assert data.startswith(b"SIP/2.0 180 Ringing\r\n")
    assert data.endswith(b"\r\n\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    response = parse_message(data)
    assert isinstance(response, SipResponse)
    assert response.headers.get_all("via") == req.headers.get_all("via")
    assert response.headers.get("from") == req.headers.get("from")
    assert response.call_id == req.call_id
    assert response.cseq == req.cseq
    assert parse_name_addr(response.headers.get("to") or "").tag == "t1"
    assert response.headers.get("contact") == "<sip:callpop@h>"
    assert response.headers.get("content-length") == "0"


def test_build_response_keeps_existing_to_tag() -> None:
    req = request(
        invite(length="0").replace(b"pbx.example.jp>\r\n", b"pbx.example.jp>;tag=old\r\n")
    )
    response = parse_message(build_response(req, 200, to_tag="new"))
    assert parse_name_addr(response.headers.get("to") or "").tag == "old"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (100, "Trying"),
        (180, "Ringing"),
        (200, "OK"),
        (400, "Bad Request"),
        (405, "Method Not Allowed"),
        (480, "Temporarily Unavailable"),
        (481, "Call/Transaction Does Not Exist"),
        (487, "Request Terminated"),
        (501, "Not Implemented"),
        (505, "Version Not Supported"),
        (499, "Request Failure"),
    ],
)
def test_default_reason_phrases(status: int, reason: str) -> None:
    response = parse_message(build_response(request(invite(length="0")), status))
    assert isinstance(response, SipResponse)
    assert (response.status, response.reason) == (status, reason)


def test_build_response_from_partial_request() -> None:
    data = b"\r\n".join(
        line for line in invite(length="0").split(b"\r\n") if not line.startswith(b"From:")
    )
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    partial = caught.value.partial
    assert isinstance(partial, SipRequest)
    out = build_response(partial, 400, "Missing From")
    assert out.startswith(b"SIP/2.0 400 Missing From\r\nVia: SIP/2.0/UDP 192.0.2.1:5060")
    assert b"\r\nFrom:" not in out


def test_build_request_round_trip() -> None:
    branch, tag, call_id = new_branch(), new_tag(), new_call_id("192.0.2.9")
    headers = [
        ("Via", f"SIP/2.0/UDP 192.0.2.9:5060;branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f'"受付" <sip:callpop@192.0.2.9>;tag={tag}'),
        ("To", "<sip:203@pbx.example.jp>"),
        ("Call-ID", call_id),
        ("CSeq", "1 SUBSCRIBE"),
        ("Event", "dialog"),
        ("Content-Length", "999"),  # replaced by the real length
    ]
    data = build_request("SUBSCRIBE", "sip:203@pbx.example.jp", headers, b"hello")
    message = request(data)
    assert message.method == "SUBSCRIBE"
    assert message.uri == "sip:203@pbx.example.jp"
    assert message.body == b"hello"
    assert message.headers.get_all("content-length") == ["5"]
    assert [name for name, _ in message.headers.items()] == [
        "via",
        "max-forwards",
        "from",
        "to",
        "call-id",
        "cseq",
        "event",
        "content-length",
    ]
    assert parse_via(message.headers.get("via") or "").branch == branch
    assert parse_name_addr(message.headers.get("from") or "").display_name == "受付"
    assert message.call_id == call_id


def test_fresh_identifiers_are_unique_and_shaped() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(b.startswith("z9hG4bK") and len(b) > 16 for b in branches)
    assert len({new_tag() for _ in range(100)}) == 100
    assert new_call_id("h.example").endswith("@h.example")


def test_headers_multidict_behaviour() -> None:
    headers = Headers()
    headers.add("Route", "<sip:p1;lr>, <sip:p2;lr>")
    headers.add("route", "<sip:p3;lr>")
    headers.add("X-Custom", "a, b")
    assert headers.get("ROUTE") == "<sip:p1;lr>, <sip:p2;lr>"
    assert headers.get_all("Route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert headers.get_all("x-custom") == ["a, b"]
    assert headers.get("absent") is None
    assert headers.get_all("absent") == []
    headers.remove("route")
    assert list(headers.items()) == [("x-custom", "a, b")]


def test_quoted_header_param_may_hold_semicolons() -> None:
    addr = parse_name_addr('<sip:a@h>;+sip.instance="<urn:uuid:1;x>";expires=3600')
    assert addr.params == {"+sip.instance": "<urn:uuid:1;x>", "expires": "3600"}
    with pytest.raises(SipParseError, match="unterminated quoted string"):
        parse_name_addr('<sip:a@h>;x="open')


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("192.0.2.1", 5060, "192.0.2.1:5060"),
        ("pbx.example.jp", 5070, "pbx.example.jp:5070"),
        # RFC 3261 §25.1: IPv6reference = "[" IPv6address "]"
        ("2001:db8::1", 5060, "[2001:db8::1]:5060"),
        ("[2001:db8::1]", 5062, "[2001:db8::1]:5062"),
        ("::1", 0, "[::1]:0"),
    ],
)
def test_hostport_brackets_ipv6_once(host: str, port: int, expected: str) -> None:
    assert hostport(host, port) == expected
    # What it writes reads back as the same host and port.
    parsed = parse_uri(f"sip:u@{expected}")
    assert isinstance(parsed, SipUri) and parsed.port == port
