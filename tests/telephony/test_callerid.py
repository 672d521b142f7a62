"""Caller ID and dialled line from recorded INVITEs (tests/data/invites, see its README)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from telephony.callerid import extract_caller_id, number_from_uri
from telephony.events import CallerId, CallerIdSource, Withheld
from telephony.message import SipRequest, parse_message
from telephony.uri import parse_uri

INVITES = Path(__file__).parent.parent / "data" / "invites"

PAI = CallerIdSource.P_ASSERTED_IDENTITY
RPID = CallerIdSource.REMOTE_PARTY_ID
FROM = CallerIdSource.FROM


@dataclass(frozen=True)
class Want:
    number: str | None
    display_name: str | None
    withheld: Withheld | None
    source: CallerIdSource | None
    dialed: str | None

    def caller_id(self) -> CallerId:
        return CallerId(
            number=self.number,
            display_name=self.display_name,
            withheld=self.withheld,
            source=self.source,
            dialed=self.dialed,
        )


EXPECTED: dict[str, Want] = {
    # Twilio: no PAI, E.164 From; Diversion names the Twilio number that was dialled.
    "twilio_us_from_diversion": Want("+15083084809", None, None, FROM, "+15083728299"),
    # Twilio UK: PAI wins over From; Privacy: none hides nothing.
    "twilio_uk_pai_privacy_none": Want("+447700900123", None, None, PAI, "+442079460000"),
    # FreePBX 16 after a transfer: RPID has the real caller, From the transferor.
    "freepbx16_rpid_transfer": Want("122", "Phone22", None, RPID, "105"),
    "freepbx17_pai": Want("11", "TEST", None, PAI, "10"),
    "threecx_glued_display": Want("7002", "Asik Kafoor", None, FROM, "7001"),
    "unquoted_display_glued": Want("0312345678", "Yamada", None, FROM, "100"),
    "auerswald_no_sdp": Want("21", "Comfortel3500", None, FROM, "33"),
    "telekom_ims_user_phone": Want("+4921181994861", None, None, FROM, "+4970411234567"),
    # The first Diversion is the latest one (RFC 5806 adds on top).
    "au_carrier_diversion_chain": Want("61272091827", None, None, PAI, "0414674199"),
    # P-Preferred-Identity is the UA's wish, not an assertion: ignored.
    "baresip_privacy_id_ppi": Want(None, None, Withheld.ANONYMOUS, FROM, "0312345678"),
    # The number is present in PAI, Privacy: id hides it; the source is kept.
    "wazo_privacy_id_pai_tel": Want(None, None, Withheld.ANONYMOUS, PAI, "0312345678"),
    # NTT NGN: compact f:, P-Called-Party-ID without a URI scheme.
    "ntt_ngn_anonymous_compact": Want(None, None, Withheld.ANONYMOUS, FROM, "0191349809"),
    "ntt_ngn_payphone": Want(None, None, Withheld.PAYPHONE, FROM, "0312345678"),
    "ntt_ngn_unavailable": Want(None, None, Withheld.UNAVAILABLE, FROM, "0312345678"),
    "ntt_ngn_interaction": Want(None, None, Withheld.INTERACTION, FROM, "0312345678"),
    "ntt_ngn_080_pai_tel": Want("08012345678", None, None, PAI, "0312345678"),
    "ntt_hgw_to_extension": Want("0612345678", "0612345678", None, FROM, "0398765432"),
    "ntt_hgw_extension_only": Want("0452223333", None, None, FROM, "3"),
    "sipgate_from": Want("0123456789", "OWN SIPGATENUMBER", None, FROM, "4711"),
    "freeswitch_rpid": Want("1002", "Extension 1002", None, RPID, "1001"),
    # PAI without a display name: From's display is used.
    "cucm_pai_and_rpid": Want("9876", "Kato Hiroshi", None, PAI, "5555"),
    "signalwire_rpid": Want("+17125550259", None, None, RPID, "+17125550100"),
    "sipp_kamailio_pai_tel": Want("+81312345678", "Yamada Taro", None, PAI, "05012345678"),
    "utf8_display": Want("0312345678", "山田 太郎", None, FROM, "0398765432"),
    "escaped_display": Want("0311112222", 'Tanaka "Boss" \\ Ichiro', None, FROM, "0398765432"),
    "folded_from": Want("0422223333", "Suzuki Ichiro", None, FROM, "0398765432"),
    "sips_from": Want("+81522223333", "Ito", None, FROM, "+81398765432"),
    "pai_tel_separators": Want("+81312345678", "Kobayashi", None, PAI, "0398765432"),
    # sip:mori@ first, tel: second in one PAI: the phone number wins, the name is kept.
    "pai_two_values": Want("+81752223333", "Mori Shop", None, PAI, "0398765432"),
    "pai_two_lines": Want("+81922223333", None, None, PAI, "0398765432"),
    "rpid_privacy_full": Want(None, None, Withheld.ANONYMOUS, RPID, "0398765432"),
    "privacy_id_from_number": Want(None, None, Withheld.ANONYMOUS, FROM, "0398765432"),
    # To is an extension; P-Called-Party-ID says which office number was called.
    "p_called_party_id": Want("0312340000", None, None, FROM, "+81398765432"),
    # To has no user part: the Request-URI's user is the dialled line.
    "ruri_dialed": Want("0312340001", None, None, FROM, "0398765432"),
    "pai_unreadable_fallback": Want("0312340002", "Nakamura", None, FROM, "0398765432"),
    "lf_line_endings": Want("0312340003", "Kimura", None, FROM, "0398765432"),
    "sip_user_phone_context": Want("0312340004", None, None, FROM, "0398765432"),
    "anonymous_user_mixed_case": Want(None, None, Withheld.ANONYMOUS, FROM, "0398765432"),
    "payphone_user": Want(None, None, Withheld.PAYPHONE, FROM, "0398765432"),
    # The asserted identity is anonymous even though From shows a number.
    "asterisk_pai_anonymous": Want(None, None, Withheld.ANONYMOUS, PAI, "0398765432"),
    "asterisk_hyphenated_from": Want("0355556666", "Kato Shoten", None, FROM, "0398765432"),
}


def load(name: str) -> SipRequest:
    message = parse_message((INVITES / f"{name}.sip").read_bytes())
    assert isinstance(message, SipRequest)
    assert message.method == "INVITE"
    return message


def test_every_recorded_invite_has_an_expectation() -> None:
    assert {path.stem for path in INVITES.glob("*.sip")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_invite(name: str) -> None:
    assert extract_caller_id(load(name)) == EXPECTED[name].caller_id()


def inline(*headers: str, ruri: str = "sip:200@pbx.example.jp") -> SipRequest:
    lines = [
        f"INVITE {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx",
        "Call-ID: inline@192.0.2.1",
        "CSeq: 1 INVITE",
        *headers,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, SipRequest)
    return message


TO = "To: <sip:0398765432@pbx.example.jp>"


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        # PAI > RPID > From
        (
            (
                'From: "F" <sip:0311111111@h>;tag=1',
                'Remote-Party-ID: "R" <sip:0322222222@h>;party=calling',
                'P-Asserted-Identity: "P" <sip:0333333333@h>',
                TO,
            ),
            Want("0333333333", "P", None, PAI, "0398765432"),
        ),
        (
            (
                'From: "F" <sip:0311111111@h>;tag=1',
                'Remote-Party-ID: "R" <sip:0322222222@h>;party=calling',
                TO,
            ),
            Want("0322222222", "R", None, RPID, "0398765432"),
        ),
        # RPID for the called party is not the caller
        (
            (
                'From: "F" <sip:0311111111@h>;tag=1',
                'Remote-Party-ID: "R" <sip:0322222222@h>;party=called',
                TO,
            ),
            Want("0311111111", "F", None, FROM, "0398765432"),
        ),
        # RPID privacy=name hides the name only
        (
            (
                'From: "F" <sip:0311111111@h>;tag=1',
                'Remote-Party-ID: "R" <sip:0322222222@h>;party=calling;privacy=name',
                TO,
            ),
            Want("0322222222", "F", None, RPID, "0398765432"),
        ),
        # PAI that names no user at all: the next source is tried
        (
            ('From: "F" <sip:0311111111@h>;tag=1', "P-Asserted-Identity: <sip:pbx.example>", TO),
            Want("0311111111", "F", None, FROM, "0398765432"),
        ),
        # Privacy: header (RFC 3323) also hides, whatever case
        (
            ("From: <sip:0311111111@h>;tag=1", "Privacy: Header", TO),
            Want(None, None, Withheld.ANONYMOUS, FROM, "0398765432"),
        ),
        # anonymous display name with a number-looking user
        (
            ('From: "anonymous" <sip:0311111111@h>;tag=1', TO),
            Want(None, None, Withheld.ANONYMOUS, FROM, "0398765432"),
        ),
        # Japanese reason words in the display name
        (
            ('From: "公衆電話" <sip:anonymous@anonymous.invalid>;tag=1', TO),
            Want(None, None, Withheld.PAYPHONE, FROM, "0398765432"),
        ),
        # tel: From with a local number and visual separators
        (
            ("From: <tel:03-1111-2222;phone-context=+81>;tag=1", TO),
            Want("0311112222", None, None, FROM, "0398765432"),
        ),
        # name-only From (no number) still gives the user
        (
            ('From: "Alice" <sip:alice@example.com>;tag=1', TO),
            Want("alice", "Alice", None, FROM, "0398765432"),
        ),
        # unknown scheme in From: nothing usable, no exception
        (
            ("From: <urn:uuid:1234>;tag=1", "To: <urn:x:y>"),
            Want(None, None, None, None, "200"),
        ),
        # Diversion beats P-Called-Party-ID beats To
        (
            (
                "From: <sip:0311111111@h>;tag=1",
                "Diversion: <sip:0355555555@h>;reason=unconditional",
                "P-Called-Party-ID: <sip:0366666666@h>",
                TO,
            ),
            Want("0311111111", None, None, FROM, "0355555555"),
        ),
    ],
)
def test_inline_rules(headers: tuple[str, ...], want: Want) -> None:
    assert extract_caller_id(inline(*headers)) == want.caller_id()


def test_unreadable_from_and_to_never_raise() -> None:
    # A request taken from SipParseError.partial may have broken From/To.
    from telephony.message import Headers

    request = SipRequest(
        "INVITE",
        "nonsense",
        "SIP/2.0",
        Headers([("From", '"unterminated <sip:a@h>'), ("To", "<<<"), ("Diversion", ",,,")]),
        b"",
    )
    assert extract_caller_id(request) == CallerId(
        number=None, display_name=None, withheld=None, source=None, dialed=None
    )


@pytest.mark.parametrize(
    ("uri", "number"),
    [
        ("tel:+81-3-1234-5678", "+81312345678"),
        ("sip:+81(3)1234.5678@h", "+81312345678"),
        ("sip:0312345678;npdi;rn=+81@h;user=phone", "0312345678"),
        ("sips:*86#@h", "*86#"),
        ("sip:j.smith@h", "j.smith"),
        ("sip:h", None),
        ("urn:x:y", None),
    ],
)
def test_number_from_uri(uri: str, number: str | None) -> None:
    assert number_from_uri(parse_uri(uri)) == number
