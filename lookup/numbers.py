"""Caller numbers: from whatever a PBX puts in a SIP header to E.164.

This module owns the rules that turn a raw caller number ("03-1234-5678",
"0312345678", "+81312345678", "203", "1860312345678", "0101 212 555 1234") into a
:class:`Number`: its E.164 form (what the database stores and matches on), its
national form (what people read, "03-1234-5678"), or the verdict that it is an
office extension, unreadable, or absent. It knows nothing of SIP, customers or
browsers.

The order of work, each step explained where it happens:

1. clean: Unicode NFKC (full-width digits and ``＋`` from Japanese IMEs and PBX
   web forms), then drop visual separators (spaces, hyphens, dots, brackets);
2. rewrite rules from the config, in order, each tried once as a full match;
3. strip a leading 184/186 (Japan's per-call withhold/present prefixes);
4. short all-digit numbers are office extensions;
5. phonenumbers, default region JP; a number beginning with 00 that does not
   parse as national is tried as an international call via a carrier prefix.

A number phonenumbers does not consider *valid* for its region is "invalid":
storing it as E.164 would create keys no other spelling of the same number
reaches.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import phonenumbers

NumberKind = Literal["e164", "extension", "invalid", "none"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Number:
    """A normalised caller number.

    ``e164`` is set only for kind "e164". ``national`` is what a person here reads:
    the national format for a number of the region ("03-1234-5678"), the
    international format for another country's ("+1 212-555-1234", since its own
    national form would read as a local number), and the bare digits of an
    extension ("203"). ``raw`` is the input as given.
    """

    e164: str | None
    national: str | None
    raw: str | None
    kind: NumberKind


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteRule:
    """One PBX quirk: when ``pattern`` matches the whole cleaned number, substitute.

    Example: a PBX that prefixes the outside-line 0 ("003-…" for a Tokyo caller)
    is fixed by ``pattern=r"0(0\\d{9,10})"``, ``replace=r"\\1"``.
    """

    pattern: re.Pattern[str]
    replace: str


def compile_rules(rules: Iterable[tuple[str, str]]) -> tuple[RewriteRule, ...]:
    """Compile ``(pattern, replace)`` strings from the config; raises ``re.error`` on a bad one."""
    return tuple(RewriteRule(pattern=re.compile(p), replace=r) for p, r in rules)


@dataclass(frozen=True, slots=True, kw_only=True)
class Numbering:
    """The office's numbering plan: the one normaliser every entry point uses.

    Built once from the config (``[numbering]``) and handed to the call path, the
    caller lookup, ``callpop lookup`` and ``callpop explain-invite``, so the same raw
    number gives the same E.164 wherever it enters. ``lines`` names the office's own
    numbers (E.164 -> "代表", "FAX", "採用窓口"), for the dialled line of a call.
    """

    region: str = "JP"
    rules: tuple[RewriteRule, ...] = ()
    extension_max_digits: int = 4
    lines: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_config(
        cls,
        *,
        region: str = "JP",
        rewrite: Iterable[tuple[str, str]] = (),
        extension_max_digits: int = 4,
        lines: Mapping[str, str] | None = None,
    ) -> Numbering:
        """Compile the rules and normalise the line numbers; ``ValueError`` names a bad one."""
        try:
            rules = compile_rules(rewrite)
        except re.error as exc:
            raise ValueError(f"rewrite pattern {exc.pattern!r}: {exc}") from exc
        plan = cls(region=region, rules=rules, extension_max_digits=extension_max_digits)
        named: dict[str, str] = {}
        for raw, name in (lines or {}).items():
            e164 = plan.normalise(raw).e164
            if e164 is None:
                raise ValueError(f"lines: {raw!r} is not a phone number of region {region}")
            named[e164] = name
        return cls(
            region=region,
            rules=rules,
            extension_max_digits=extension_max_digits,
            lines=MappingProxyType(named),
        )

    def normalise(self, raw: str | None) -> Number:
        """``raw`` normalised with this plan; never raises for any string."""
        return normalise(
            raw,
            region=self.region,
            rules=self.rules,
            extension_max_digits=self.extension_max_digits,
        )

    def line_name(self, e164: str | None) -> str | None:
        """The name the office gave its line ``e164`` (代表…), or None."""
        return None if e164 is None else self.lines.get(e164)


# Visual separators people and PBXs put into numbers (after NFKC, so the
# full-width forms are already ASCII). U+30FC (ー, katakana long vowel mark) is
# what IMEs often produce for a hyphen in "０３ー１２３４ー５６７８".
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212\u30fc\uff70().\[\]/]")
_DIGITS = re.compile(r"\+?\d+")

# Japan's per-call caller-ID prefixes (dialled before the number: 184 = withhold,
# 186 = present). Some PBXs pass the dialled string through as the caller ID of an
# internal caller dialling out and back in; followed by a national number (0…) only.
_PRIVACY_PREFIX = re.compile(r"(?:184|186)(0\d{8,})")

# International calls from Japan: 010 is the ITU international prefix (phonenumbers
# handles it itself). Carrier-selected forms precede it or replace it: KDDI 001
# (with or without 010), NTT Communications 0033-010, SoftBank 0041-010, 0061-010.
# Plain 00 is what PBXs configured for ITU-style dialling send. Longest first, so
# that "001010 1 212…" is not read as "001" + "010…"; the first prefix that leaves a
# valid international number wins (so "0033 1 23 45 67 89" still reaches France).
_CARRIER_INTERNATIONAL = ("001010", "0033010", "0041010", "0061010", "001", "00")


def normalise(
    raw: str | None,
    *,
    region: str = "JP",
    rules: Sequence[RewriteRule] = (),
    extension_max_digits: int = 4,
) -> Number:
    """Normalise a caller number; never raises for any string input.

    A number given without ``+`` but starting with the country code ("81312345678")
    is accepted the way phonenumbers accepts it: the leading 81 is taken as the
    country code when the rest is a valid Japanese national number and the whole is
    not one. PBXs that drop the ``+`` from an E.164 caller ID (common on SIP trunks)
    then match the stored number; no valid JP national number starts with 81
    without its trunk 0, so nothing valid is misread.
    """
    if raw is None or not raw.strip():
        return Number(e164=None, national=None, raw=raw, kind="none")
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    for rule in rules:
        # Each rule once, in order, as a full match: a partial match on a number
        # is almost always a misconfiguration that would corrupt other numbers.
        if rule.pattern.fullmatch(text):
            text = rule.pattern.sub(rule.replace, text, count=1)
    if not _DIGITS.fullmatch(text):
        return Number(e164=None, national=None, raw=raw, kind="invalid")
    privacy = _PRIVACY_PREFIX.fullmatch(text)
    if privacy:
        text = privacy.group(1)
    if not text.startswith("+") and len(text) <= extension_max_digits:
        return Number(e164=None, national=text, raw=raw, kind="extension")
    parsed = _parse_valid(text, region)
    if parsed is None and text.startswith("00"):
        for prefix in _CARRIER_INTERNATIONAL:
            if text.startswith(prefix) and len(text) > len(prefix):
                parsed = _parse_valid("+" + text[len(prefix) :], region)
                if parsed is not None:
                    break
    if parsed is None:
        return Number(e164=None, national=None, raw=raw, kind="invalid")
    return Number(
        e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        national=phonenumbers.format_number(parsed, _readable_format(parsed, region)),
        raw=raw,
        kind="e164",
    )


def load_all_metadata() -> int:
    """Load phonenumbers' metadata for every region now; return how many were loaded.

    phonenumbers reads a region's metadata from its package on first use, under a lock
    it does not release when that read fails: one failed read (no file handle left, say)
    and the next number from that region blocks its caller forever, here the event loop.
    Called once at start-up, so that nothing on the call path opens a file. Loading
    every region costs about 0.1 s and a few MB.
    """
    metadata = phonenumbers.PhoneMetadata
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    for region in regions:
        metadata.metadata_for_region(region)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        metadata.metadata_for_nongeo_region(code)
    for region in phonenumbers.SUPPORTED_SHORT_REGIONS:
        metadata.short_metadata_for_region(region)
    return len(regions) + len(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)


def _parse_valid(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_valid_number(parsed) else None


def _readable_format(parsed: phonenumbers.PhoneNumber, region: str) -> int:
    if phonenumbers.region_code_for_number(parsed) == region.upper():
        return phonenumbers.PhoneNumberFormat.NATIONAL
    return phonenumbers.PhoneNumberFormat.INTERNATIONAL
