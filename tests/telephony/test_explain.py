"""``explain_invite``: the JSON object of ``callpop explain-invite`` for recorded INVITEs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callpop.explain import ExplainError, explain_invite
from lookup.numbers import Numbering

INVITES = Path(__file__).parent.parent / "data" / "invites"
TORTURE = Path(__file__).parent.parent / "data" / "torture"


def explain(name: str) -> dict[str, object]:
    return explain_invite((INVITES / f"{name}.sip").read_bytes())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "sipp_kamailio_pai_tel",
            {
                "number": "+81312345678",
                "national": "03-1234-5678",
                "display_name": "Yamada Taro",
                "withheld": None,
                "source": "p-asserted-identity",
                "dialed": "+815012345678",
            },
        ),
        (
            "ntt_ngn_080_pai_tel",
            {
                "number": "+818012345678",
                "national": "080-1234-5678",
                "display_name": None,
                "withheld": None,
                "source": "p-asserted-identity",
                "dialed": "+81312345678",
            },
        ),
        (
            "utf8_display",
            {
                "number": "+81312345678",
                "national": "03-1234-5678",
                "display_name": "山田 太郎",
                "withheld": None,
                "source": "from",
                "dialed": "+81398765432",
            },
        ),
        (
            "freepbx16_rpid_transfer",
            {
                # an extension: no E.164, read as the bare digits
                "number": None,
                "national": "122",
                "display_name": "Phone22",
                "withheld": None,
                "source": "remote-party-id",
                "dialed": None,
            },
        ),
        (
            "pai_tel_separators",
            {
                "number": "+81312345678",
                "national": "03-1234-5678",
                "display_name": "Kobayashi",
                "withheld": None,
                "source": "p-asserted-identity",
                "dialed": "+81398765432",
            },
        ),
        (
            "asterisk_hyphenated_from",
            {
                "number": "+81355556666",
                "national": "03-5555-6666",
                "display_name": "Kato Shoten",
                "withheld": None,
                "source": "from",
                "dialed": "+81398765432",
            },
        ),
        (
            "ntt_ngn_anonymous_compact",
            {
                "number": None,
                "national": None,
                "display_name": None,
                "withheld": "anonymous",
                "source": "from",
                "dialed": "+81191349809",
            },
        ),
        (
            "ntt_ngn_payphone",
            {
                "number": None,
                "national": None,
                "display_name": None,
                "withheld": "payphone",
                "source": "from",
                "dialed": "+81312345678",
            },
        ),
        (
            "ntt_ngn_unavailable",
            {
                "number": None,
                "national": None,
                "display_name": None,
                "withheld": "unavailable",
                "source": "from",
                "dialed": "+81312345678",
            },
        ),
        (
            "ntt_ngn_interaction",
            {
                "number": None,
                "national": None,
                "display_name": None,
                "withheld": "interaction",
                "source": "from",
                "dialed": "+81312345678",
            },
        ),
        (
            "wazo_privacy_id_pai_tel",
            {
                "number": None,
                "national": None,
                "display_name": None,
                "withheld": "anonymous",
                "source": "p-asserted-identity",
                "dialed": "+81312345678",
            },
        ),
        (
            "twilio_us_from_diversion",
            {
                "number": "+15083084809",
                "national": "+1 508-308-4809",
                "display_name": None,
                "withheld": None,
                "source": "from",
                "dialed": "+15083728299",
            },
        ),
    ],
)
def test_explain_recorded_invite(name: str, expected: dict[str, object]) -> None:
    result = explain(name)
    assert result == expected
    # The CLI prints it as JSON: every value must serialise as is.
    assert json.loads(json.dumps(result, ensure_ascii=False)) == expected


def test_keys_are_exactly_the_contract() -> None:
    assert list(explain("twilio_uk_pai_privacy_none")) == [
        "number",
        "national",
        "display_name",
        "withheld",
        "source",
        "dialed",
    ]


def test_region_changes_national_reading() -> None:
    us = Numbering(region="US")
    result = explain_invite((INVITES / "twilio_us_from_diversion.sip").read_bytes(), numbering=us)
    assert result["number"] == "+15083084809"
    assert result["national"] == "(508) 308-4809"


def test_hand_edited_invite_with_stale_content_length_is_still_explained() -> None:
    data = (INVITES / "utf8_display.sip").read_bytes()
    head, _, _ = data.partition(b"\r\n\r\n")
    result = explain_invite(head + b"\r\n\r\nv=0\r\n")  # SDP cut short
    assert result["number"] == "+81312345678"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ((TORTURE / "stray_200_response.sip").read_bytes(), "a 200 response"),
        (b"", "not a SIP request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a SIP request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not a SIP request"),
        ((TORTURE / "double_space_request_line.sip").read_bytes(), "bad request line"),
    ],
)
def test_not_a_request_raises_explain_error(data: bytes, reason: str) -> None:
    with pytest.raises(ExplainError, match=reason) as caught:
        explain_invite(data)
    assert "\n" not in str(caught.value)
