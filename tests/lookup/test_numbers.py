"""normalise(): the spellings of caller numbers that PBXs and people produce."""

from __future__ import annotations

import re

import pytest

from lookup.numbers import Number, compile_rules, normalise

TOKYO = "+81312345678"

CASES = [
    # raw, kind, e164, national
    ("0312345678", "e164", TOKYO, "03-1234-5678"),
    ("03-1234-5678", "e164", TOKYO, "03-1234-5678"),
    ("03 (1234) 5678", "e164", TOKYO, "03-1234-5678"),
    ("03.1234.5678", "e164", TOKYO, "03-1234-5678"),
    ("+81312345678", "e164", TOKYO, "03-1234-5678"),
    ("+81 3-1234-5678", "e164", TOKYO, "03-1234-5678"),
    # An E.164 number whose + a trunk dropped: the leading 81 is the country code.
    ("81312345678", "e164", TOKYO, "03-1234-5678"),
    ("819012345678", "e164", "+819012345678", "090-1234-5678"),
    # Full-width digits and hyphens as typed with a Japanese IME.
    ("０３－１２３４－５６７８", "e164", TOKYO, "03-1234-5678"),
    ("０３ー１２３４ー５６７８", "e164", TOKYO, "03-1234-5678"),
    ("＋８１３１２３４５６７８", "e164", TOKYO, "03-1234-5678"),
    ("09012345678", "e164", "+819012345678", "090-1234-5678"),
    ("080-2345-6789", "e164", "+818023456789", "080-2345-6789"),
    ("070-1234-5678", "e164", "+817012345678", "070-1234-5678"),
    ("050-1234-5678", "e164", "+815012345678", "050-1234-5678"),
    ("0120-123-456", "e164", "+81120123456", "0120-123-456"),
    ("0120123456", "e164", "+81120123456", "0120-123-456"),
    ("045-123-4567", "e164", "+81451234567", "045-123-4567"),
    ("0467-12-3456", "e164", "+81467123456", "0467-12-3456"),
    ("06-6123-4567", "e164", "+81661234567", "06-6123-4567"),
    # 184 / 186: Japan's per-call withhold / present prefixes.
    ("1840312345678", "e164", TOKYO, "03-1234-5678"),
    ("186-03-1234-5678", "e164", TOKYO, "03-1234-5678"),
    ("18609012345678", "e164", "+819012345678", "090-1234-5678"),
    # International calls dialled from Japan: 010, KDDI 001, NTT Com 0033-010, plain 00.
    ("010-1-212-555-1234", "e164", "+12125551234", "+1 212-555-1234"),
    ("00181312345678", "e164", TOKYO, "03-1234-5678"),
    ("001010 1 212 555 1234", "e164", "+12125551234", "+1 212-555-1234"),
    ("0033010 44 20 7946 0958", "e164", "+442079460958", "+44 20 7946 0958"),
    ("0081312345678", "e164", TOKYO, "03-1234-5678"),
    ("0033 1 23 45 67 89", "e164", "+33123456789", "+33 1 23 45 67 89"),
    ("+1 212 555 1234", "e164", "+12125551234", "+1 212-555-1234"),
    # Extensions (at most 4 digits by default).
    ("203", "extension", None, "203"),
    ("1001", "extension", None, "1001"),
    ("0", "extension", None, "0"),
    # Not a number anyone can call back.
    ("12345", "invalid", None, None),
    ("1234567", "invalid", None, None),
    ("99999999999", "invalid", None, None),
    ("0312", "extension", None, "0312"),
    ("03123", "invalid", None, None),
    ("abc", "invalid", None, None),
    ("anonymous", "invalid", None, None),
    ("03-1234-5678x", "invalid", None, None),
    ("+", "invalid", None, None),
    ("++81312345678", "invalid", None, None),
    ("0312345678901234567890", "invalid", None, None),
    # Nothing at all.
    (None, "none", None, None),
    ("", "none", None, None),
    ("   ", "none", None, None),
]


@pytest.mark.parametrize(("raw", "kind", "e164", "national"), CASES)
def test_normalise(raw: str | None, kind: str, e164: str | None, national: str | None) -> None:
    assert normalise(raw) == Number(e164=e164, national=national, raw=raw, kind=kind)  # type: ignore[arg-type]


def test_extension_max_digits_is_configurable() -> None:
    assert normalise("12345", extension_max_digits=5).kind == "extension"
    assert normalise("203", extension_max_digits=2).kind == "invalid"
    # A number with a + is never an extension.
    assert normalise("+1234", extension_max_digits=6).kind == "invalid"


def test_region_decides_national_numbers() -> None:
    us = normalise("(212) 555-1234", region="US")
    assert (us.kind, us.e164, us.national) == ("e164", "+12125551234", "(212) 555-1234")
    # A Japanese number seen from the US is shown in international form.
    assert normalise("+81312345678", region="US").national == "+81 3-1234-5678"


RULES = [
    # A PBX that puts its outside-line 0 before the caller's number.
    (r"0(0\d{9,10})", r"\1"),
    # A PBX that sends Tokyo callers without their area code.
    (r"([2-9]\d{7})", r"03\1"),
]


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("00312345678", TOKYO),
        ("009012345678", "+819012345678"),
        ("0-03-1234-5678", TOKYO),  # rules see the number with separators removed
        ("31234567", "+81331234567"),
        ("0312345678", TOKYO),  # no rule matches the whole number: unchanged
    ],
)
def test_rewrite_rules(raw: str, e164: str) -> None:
    assert normalise(raw, rules=compile_rules(RULES)).e164 == e164


def test_rules_apply_in_order_each_once() -> None:
    rules = compile_rules([(r"9(\d+)", r"\1"), (r"9(\d+)", r"\1"), (r"(\d{8})", r"03\1")])
    # The first two strip one 9 each; the third then adds the area code, once.
    assert normalise("9912345678", rules=rules).e164 == TOKYO


def test_rules_need_a_full_match() -> None:
    rules = compile_rules([(r"0(0\d{9,10})", r"\1")])
    # "00" inside a longer number must not be touched.
    assert normalise("0081312345678", rules=rules).e164 == TOKYO


def test_rules_run_before_the_extension_check() -> None:
    rules = compile_rules([(r"8(\d{3})", r"0312345\1")])
    assert normalise("8678", rules=rules).e164 == TOKYO


def test_compile_rules_rejects_a_bad_pattern() -> None:
    with pytest.raises(re.error):
        compile_rules([("(", "")])


@pytest.mark.parametrize(
    "raw", ["\x00", "０" * 500, "+" + "9" * 300, "☎ 03-1234-5678", "\u200b0312345678", "1" * 10_000]
)
def test_never_raises(raw: str) -> None:
    assert normalise(raw).kind in ("e164", "extension", "invalid", "none")
