"""The 49 RFC 4475 torture messages through the parser and the caller-ID rules.

Each file has an explicit expectation below: either what must be read from it
(Call-ID, CSeq, From/To/Via presence) or the rejection it must get. Messages that
are syntactically fine but semantically wrong are parsed here and left to the
core, as noted per row.

The corpus is third-party text and is not kept in this repository: it is read from
``$CALLPOP_RFC4475_DIR``, else from ``../shared/corpora/rfc4475`` beside the checkout.
Where neither exists this module is skipped with one line saying so; the project's own
torture messages (``test_torture.py``) run everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from telephony.callerid import extract_caller_id
from telephony.message import SipParseError, SipRequest, SipResponse, parse_message
from telephony.uri import parse_name_addr, parse_via
from tests.corpora import shared_corpus
from tests.telephony.fuzzing import check_mutations, check_prefixes

CORPUS_VARIABLE = "CALLPOP_RFC4475_DIR"
CORPUS = shared_corpus("rfc4475", CORPUS_VARIABLE, "dir of the 49 .dat files")


@dataclass(frozen=True)
class Parses:
    """The message must parse; ``start`` is the method or the status code."""

    start: str | int
    call_id: str
    cseq: tuple[int, str]
    note: str = ""


@dataclass(frozen=True)
class Rejected:
    """parse_message must raise SipParseError whose text contains ``error``.

    ``partial`` says whether the error carries the message (so the core can answer 400).
    """

    error: str
    partial: bool


# RFC 4475 §3.1.1: valid messages a parser must accept.
VALID: dict[str, Parses] = {
    "wsinv": Parses("INVITE", "wsinv.ndaksdj@192.0.2.1", (9, "INVITE")),
    "intmeth": Parses(
        "!interesting-Method0123456789_*+`.%indeed'~",
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        (139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
    ),
    "esc01": Parses("INVITE", "esc01.239409asdfakjkn23onasd0-3234", (234234, "INVITE")),
    "escnull": Parses(
        "REGISTER", "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd", (14398234, "REGISTER")
    ),
    "esc02": Parses(
        "RE%47IST%45R", "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf", (29344, "RE%47IST%45R")
    ),
    "lwsdisp": Parses("OPTIONS", "lwsdisp.1234abcd@funky.example.com", (60, "OPTIONS")),
    "longreq": Parses(
        "INVITE",
        "longreq.one" + "really" * 20 + "longcallid",
        (3882340, "INVITE"),
    ),
    "dblreq": Parses(
        "REGISTER",
        "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
        (8, "REGISTER"),
        "Content-Length 0 ends it; the trailing INVITE is ignored",
    ),
    "semiuri": Parses("OPTIONS", "semiuri.0ha0isndaksdj", (8, "OPTIONS")),
    "transports": Parses("OPTIONS", "transports.kijh4akdnaqjkwendsasfdj", (60, "OPTIONS")),
    "mpart01": Parses("MESSAGE", "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..", (1, "MESSAGE")),
    "unreason": Parses(200, "unreason.1234ksdfak3j2erwedfsASdf", (35, "INVITE")),
    "noreason": Parses(100, "noreason.asndj203insdf99223ndf", (35, "INVITE")),
}

# RFC 4475 §3.1.2 (invalid), §3.2 and §3.3 (semantically odd), §3.4 (RFC 2543 syntax).
OTHERS: dict[str, Parses | Rejected] = {
    # §3.1.2.1 badinv01: empty Via/Contact parameters ";;,;,,".
    "badinv01": Rejected("empty parameter", partial=True),
    # §3.1.2.2 clerr: Content-Length larger than the message.
    "clerr": Rejected("body shorter than Content-Length", partial=True),
    # §3.1.2.3 ncl: negative Content-Length.
    "ncl": Rejected("bad Content-Length '-999'", partial=True),
    # §3.1.2.4 scalar02: CSeq beyond 2**31 (RFC 3261 §8.1.1.5).
    "scalar02": Rejected("CSeq number out of range", partial=True),
    # §3.1.2.5 scalarlg: response with CSeq beyond 2**31 (a response: the core drops it).
    "scalarlg": Rejected("CSeq number out of range", partial=True),
    # §3.1.2.6 quotbal: unterminated quoted display name in To.
    "quotbal": Rejected("unterminated quoted string", partial=True),
    # §3.1.2.7 ltgtruri: Request-URI in <>.
    "ltgtruri": Rejected("bad Request-URI", partial=True),
    # §3.1.2.8 lwsruri: LWS inside the Request-URI (the request line splits in four).
    "lwsruri": Rejected("bad request line", partial=False),
    # §3.1.2.9 lwsstart: several SP between request-line elements.
    "lwsstart": Rejected("bad request line", partial=False),
    # §3.1.2.10 trws: SP after the SIP version.
    "trws": Rejected("bad request line", partial=False),
    # §3.1.2.11 escruri: headers component in a Request-URI.
    "escruri": Rejected("headers component in Request-URI", partial=True),
    # §3.1.2.12 baddate: non-GMT Date. Date is not ours to judge: accepted, the core
    # ignores Date (RFC 4475 allows accepting it).
    "baddate": Parses("INVITE", "baddate.239423mnsadf3j23lj42--sedfnm234", (1392934, "INVITE")),
    # §3.1.2.13 regbadct: addr-spec with '?' outside <> in Contact.
    "regbadct": Rejected("must be in <>", partial=True),
    # §3.1.2.14 badaspec: spaces inside <> in To.
    "badaspec": Rejected("whitespace in URI", partial=True),
    # §3.1.2.15 baddn: unquoted display name with ',' in From.
    "baddn": Rejected("bad character ',' in display name", partial=True),
    # §3.1.2.16 badvers: SIP/7.0. Parsed with its version; the core answers 505.
    "badvers": Parses("OPTIONS", "badvers.31417@c.example.com", (1, "OPTIONS"), "core: 505"),
    # §3.1.2.17 mismatch01: CSeq method differs from the request method: core answers 400.
    "mismatch01": Parses("OPTIONS", "mismatch01.dj0234sxdfl3", (8, "INVITE"), "core: 400"),
    # §3.1.2.18 mismatch02: unknown method, CSeq INVITE: core answers 400 (or 501).
    "mismatch02": Parses("NEWMETHOD", "mismatch02.dj0234sxdfl3", (8, "INVITE"), "core: 400"),
    # §3.1.2.19 bigcode: status code of ten digits.
    "bigcode": Rejected("bad status code", partial=False),
    # §3.2.1 badbranch: branch is only the magic cookie: transaction matching is the core's.
    "badbranch": Parses("OPTIONS", "badbranch.sadonfo23i420jv0as0derf3j3n", (8, "OPTIONS")),
    # §3.3.1 insuf: no Call-ID, From or To. Rejected here, with the partial message so
    # the core can answer 400 through its Via.
    "insuf": Rejected("missing From header", partial=True),
    # §3.3.2 unkscm: unknown Request-URI scheme: parsed, the core answers 416.
    "unkscm": Parses("OPTIONS", "unkscm.nasdfasser0q239nwsdfasdkl34", (3923423, "OPTIONS")),
    # §3.3.3 novelsc: known but atypical scheme: parsed, the core answers 416.
    "novelsc": Parses("OPTIONS", "novelsc.asdfasser0q239nwsdfasdkl34", (3923423, "OPTIONS")),
    # §3.3.4 unksm2: unknown schemes in To/From/Contact: parsed.
    "unksm2": Parses("REGISTER", "unksm2.daksdj@hyphenated-host.example.com", (234902, "REGISTER")),
    # §3.3.5 bext01: Require/Proxy-Require nobody supports: the core answers 420.
    "bext01": Parses("OPTIONS", "bext01.0ha0isndaksdj", (8, "OPTIONS"), "core: 420"),
    # §3.3.6 invut: unknown Content-Type: the core answers 415.
    "invut": Parses("INVITE", "invut.0ha0isndaksdjadsfij34n23d", (235448, "INVITE")),
    # §3.3.7 regaut01: unknown Authorization scheme: REGISTER is not ours (405 by core).
    "regaut01": Parses("REGISTER", "regaut01.0ha0isndaksdj", (9338, "REGISTER")),
    # §3.3.8 multi01: two To/From/Call-ID/CSeq.
    "multi01": Rejected("more than one", partial=True),
    # §3.3.9 mcl01: two different Content-Length values.
    "mcl01": Rejected("conflicting Content-Length headers", partial=True),
    # §3.3.10 bcast: 200 with a broadcast Via: parsed; the core drops stray responses.
    "bcast": Parses(200, "bcast.0384840201234ksdfak3j2erwedfsASdf", (35, "INVITE")),
    # §3.3.11 zeromf: Max-Forwards 0: the core answers 483 (or OPTIONS 200 for itself).
    "zeromf": Parses("OPTIONS", "zeromf.jfasdlfnm2o2l43r5u0asdfas", (39234321, "OPTIONS")),
    # §3.3.12/13/14 cparam01, cparam02, regescrt: REGISTER shapes, valid syntax.
    "cparam01": Parses("REGISTER", "cparam01.70710@saturn.example.com", (2, "REGISTER")),
    "cparam02": Parses("REGISTER", "cparam02.70710@saturn.example.com", (3, "REGISTER")),
    "regescrt": Parses("REGISTER", "regescrt.k345asrl3fdbv@192.0.2.1", (14398234, "REGISTER")),
    # §3.3.15 sdp01: Accept without SDP: the core answers 415 or not at all (not our offer).
    "sdp01": Parses("INVITE", "sdp01.ndaksdj9342dasdd", (8, "INVITE")),
    # §3.4.1 inv2543: RFC 2543 syntax (no branch, no Max-Forwards): parsed.
    "inv2543": Parses("INVITE", "inv2543.1717@ift.client.example.com", (56, "INVITE")),
}


def test_corpus_is_complete_and_byte_exact() -> None:
    # A directory named by the variable that holds something else fails here, loudly.
    files = sorted(path.stem for path in CORPUS.glob("*.dat"))
    assert len(files) == 49
    assert set(files) == set(VALID) | set(OTHERS)
    source = (CORPUS / "SOURCE.txt").read_text()
    for path in CORPUS.glob("*.dat"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{digest}  {path.name}" in source, path.name


def _parse_ok(name: str, expected: Parses) -> SipRequest | SipResponse:
    message = parse_message((CORPUS / f"{name}.dat").read_bytes())
    if isinstance(expected.start, int):
        assert isinstance(message, SipResponse)
        assert message.status == expected.start
    else:
        assert isinstance(message, SipRequest)
        assert message.method == expected.start
    assert message.call_id == expected.call_id
    assert message.cseq == expected.cseq
    return message


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_messages_parse(name: str) -> None:
    message = _parse_ok(name, VALID[name])
    # From, To and every Via are readable.
    parse_name_addr(message.headers.get("from") or "")
    parse_name_addr(message.headers.get("to") or "")
    vias = message.headers.get_all("via")
    assert vias
    for via in vias:
        parse_via(via)


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_messages_get_their_expected_verdict(name: str) -> None:
    expected = OTHERS[name]
    data = (CORPUS / f"{name}.dat").read_bytes()
    if isinstance(expected, Parses):
        _parse_ok(name, expected)
        return
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert expected.error in str(caught.value)
    assert (caught.value.partial is not None) is expected.partial


@pytest.mark.parametrize("name", sorted(VALID) + sorted(OTHERS))
def test_every_message_and_every_prefix_raises_only_sip_parse_error(name: str) -> None:
    assert check_prefixes((CORPUS / f"{name}.dat").read_bytes()) > 1


@pytest.mark.parametrize("name", sorted(VALID) + sorted(OTHERS))
def test_caller_id_never_raises_on_corpus(name: str) -> None:
    data = (CORPUS / f"{name}.dat").read_bytes()
    try:
        message = parse_message(data)
    except SipParseError as exc:
        message = exc.partial  # type: ignore[assignment]
    if isinstance(message, SipRequest):
        extract_caller_id(message)


def test_wsinv_details() -> None:
    message = parse_message((CORPUS / "wsinv.dat").read_bytes())
    assert isinstance(message, SipRequest)
    sender = parse_name_addr(message.headers.get("from") or "")
    assert sender.display_name == 'J Rosenberg \\"'
    assert sender.tag == "98asjd8"
    assert parse_name_addr(message.headers.get("to") or "").tag == "1918181833n"
    vias = [parse_via(value) for value in message.headers.get_all("via")]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert message.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.headers.get("subject") == ""
    contact = parse_name_addr(message.headers.get_all("m")[0])
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(message.body) == 150


def test_escaped_uris_are_unescaped() -> None:
    message = parse_message((CORPUS / "esc01.dat").read_bytes())
    assert isinstance(message, SipRequest)
    to = parse_name_addr(message.headers.get("to") or "")
    assert getattr(to.uri, "user", None) == "user"
    sender = parse_name_addr(message.headers.get("from") or "")
    assert getattr(sender.uri, "user", None) == "I have spaces"
    contact = parse_name_addr(message.headers.get("contact") or "")
    assert getattr(contact.uri, "params", None) == {"lr": None, "name": "value%41"}
    nul = parse_message((CORPUS / "escnull.dat").read_bytes())
    assert getattr(parse_name_addr(nul.headers.get("to") or "").uri, "user", None) == (
        "null-\x00-null"
    )


def test_escaped_header_name_is_not_contact() -> None:
    message = parse_message((CORPUS / "esc02.dat").read_bytes())
    assert len(message.headers.get_all("contact")) == 2
    assert message.headers.get("c%6fntact") == "<sip:alias2@host2.example.com>"


def test_mpart01_body_stays_binary() -> None:
    message = parse_message((CORPUS / "mpart01.dat").read_bytes())
    assert len(message.body) == int(message.headers.get("content-length") or "0")
    assert b"\x82" in message.body


def test_unreason_keeps_utf8_reason_phrase() -> None:
    message = parse_message((CORPUS / "unreason.dat").read_bytes())
    assert isinstance(message, SipResponse)
    assert message.reason.startswith("= 2**3 * 5**2 но сто девяносто девять")


def test_noreason_has_empty_reason() -> None:
    message = parse_message((CORPUS / "noreason.dat").read_bytes())
    assert isinstance(message, SipResponse)
    assert message.reason == ""


def test_transports_via_list() -> None:
    message = parse_message((CORPUS / "transports.dat").read_bytes())
    transports = [parse_via(v).transport for v in message.headers.get_all("via")]
    assert transports == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_semiuri_user_keeps_its_semicolon() -> None:
    message = parse_message((CORPUS / "semiuri.dat").read_bytes())
    assert isinstance(message, SipRequest)
    from telephony.uri import SipUri, parse_uri

    uri = parse_uri(message.uri)
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u@example.net", "example.com", {})
    assert message.headers.get_all("accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


@pytest.mark.parametrize("name", sorted(VALID) + sorted(OTHERS))
def test_mutated_messages_raise_only_sip_parse_error(name: str) -> None:
    # Deterministic byte mutations (seeded per file): a fuzz smoke test in the core tier.
    assert check_mutations((CORPUS / f"{name}.dat").read_bytes(), seed=name) == 200
