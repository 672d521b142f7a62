"""What search-as-you-type matches: each customer's folded text and phone digits.

A person types 「やまだ」, 「ﾔﾏﾀﾞ」 or 「ヤマダ」 and means the same customer; types
「1234-5678」, 「0312345678」 or 「+81 3 1234」 and means the same number. So the
customer row carries two derived columns, written here and nowhere else:

- ``search_text``: name, furigana, company, department, code and email, each
  :func:`fold`-ed (NFKC, which makes half-width kana full-width and full-width digits
  ASCII; katakana to hiragana; lower case; no spaces), joined by ``\\x1f`` so that no
  match spans two fields;
- ``search_digits``: for each live phone its national digits (``0312345678``) and its
  E.164 digits (``81312345678``), each between spaces.

A query is folded the same way (:func:`fold`, :func:`query_digits`) and matched as a
substring. The columns are kept current on every ORM flush that touches a customer or
one of its phones (:func:`install`); bulk writers that bypass the ORM (the benchmark's
seeder, the migration that added the columns) call :func:`refresh_search`.

:func:`search_customers` is the search itself (docs/architecture.md, "Search"): every
word of the query must match (AND); a word is found inside ``search_text`` (a scan of
the customers, ``LIKE`` with the word's own ``% _ \\`` escaped), a number typed from
its start (``+`` or the trunk ``0``) as the start of a phone's E.164 number (through
the lookup's index on the phones once it is long enough to be selective), any other
number inside ``search_digits``. It knows nothing of HTTP.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import phonenumbers
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
    case,
    event,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from db.models import Customer, CustomerPhone, Staff
from lookup.numbers import Numbering

FIELD_SEPARATOR = "\x1f"
_SPACES = re.compile(r"\s+")
# Katakana ァ (U+30A1) .. ヶ (U+30F6) sit 0x60 above their hiragana.
_KATAKANA_TO_HIRAGANA = {code: code - 0x60 for code in range(0x30A1, 0x30F7)}
_NOT_DIGIT = re.compile(r"[^0-9]")
_BATCH = 1000


def fold(text: str | None) -> str:
    """Text as search compares it: NFKC, katakana as hiragana, lower case, no spaces."""
    if not text:
        return ""
    folded = unicodedata.normalize("NFKC", text).translate(_KATAKANA_TO_HIRAGANA).lower()
    return _SPACES.sub("", folded)


def query_digits(text: str) -> str | None:
    """The digits a typed number means, as :func:`phone_digits` stores them, or None when
    the text is no number. 「+81 3 1234」 → ``8131234`` (matches the E.164 digits),
    「03-1234」 → ``031234``."""
    cleaned = unicodedata.normalize("NFKC", text).strip()
    if not re.fullmatch(r"\+?[0-9()\-‐−ー\s.]+", cleaned):
        return None
    digits = _NOT_DIGIT.sub("", cleaned)
    return digits or None


def phone_digits(e164: str) -> str:
    """The digits one number is found by: national and E.164, e.g. ``0312345678 81312345678``."""
    digits = _NOT_DIGIT.sub("", e164)
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return digits
    national = _NOT_DIGIT.sub(
        "", phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    )
    return f"{national} {digits}" if national and national != digits else digits


def customer_text(fields: Iterable[str | None]) -> str:
    return FIELD_SEPARATOR.join(fold(value) for value in fields if value)


def _text_of(row: Any) -> str:
    return customer_text((row.name, row.furigana, row.company, row.department, row.code, row.email))


def refresh_search(connection: Connection, customer_ids: Sequence[int] | None = None) -> int:
    """Recompute both columns for these customers (None: every customer whose
    ``search_text`` is NULL). Returns how many rows were written."""
    customers = cast(Table, Customer.__table__)
    phones = cast(Table, CustomerPhone.__table__)
    written = 0
    pending = list(dict.fromkeys(customer_ids)) if customer_ids is not None else None
    while True:
        if pending is None:
            ids = list(
                connection.scalars(
                    select(customers.c.id)
                    .where(customers.c.search_text.is_(None))
                    .order_by(customers.c.id)
                    .limit(_BATCH)
                )
            )
        else:
            ids, pending = pending[:_BATCH], pending[_BATCH:]
        if not ids:
            return written
        rows = connection.execute(
            select(
                customers.c.id,
                customers.c.name,
                customers.c.furigana,
                customers.c.company,
                customers.c.department,
                customers.c.code,
                customers.c.email,
            ).where(customers.c.id.in_(ids))
        ).all()
        numbers: dict[int, list[str]] = {}
        for customer_id, e164 in connection.execute(
            select(phones.c.customer_id, phones.c.e164)
            .where(phones.c.customer_id.in_(ids), phones.c.deleted_at.is_(None))
            .order_by(phones.c.id)
        ):
            numbers.setdefault(customer_id, []).append(phone_digits(e164))
        values = [
            {
                "b_id": row.id,
                "b_text": _text_of(row),
                "b_digits": (" " + " ".join(numbers[row.id]) + " ") if row.id in numbers else "",
            }
            for row in rows
        ]
        if values:
            connection.execute(
                update(customers)
                .where(customers.c.id == bindparam("b_id"))
                .values(
                    search_text=bindparam("b_text"),
                    search_digits=bindparam("b_digits"),
                    # Derived columns: keeping them current is no edit of the customer.
                    updated_at=customers.c.updated_at,
                ),
                values,
            )
        written += len(values)
        if pending is not None and not pending:
            return written


_TOUCHED = "callpop_search_touched"


def _after_flush(session: Session, _context: object) -> None:
    touched: set[int] = session.info.setdefault(_TOUCHED, set())
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Customer) and obj.id is not None:
            touched.add(obj.id)
        elif isinstance(obj, CustomerPhone) and obj.customer_id is not None:
            touched.add(obj.customer_id)


def _after_flush_postexec(session: Session, _context: object) -> None:
    touched: set[int] | None = session.info.pop(_TOUCHED, None)
    if touched:
        refresh_search(session.connection(), sorted(touched))


_installed = False


def install() -> None:
    """Keep the search columns current on every ORM flush (idempotent; ``db`` calls it on
    import, so every session of the process does it)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "after_flush_postexec", _after_flush_postexec)
    _installed = True


# --- searching ---------------------------------------------------------------------------

LIMIT_MAX = 100
# A number shorter than this matches too many phones to mean anything; it still matches
# the text (a code, a department number).
MIN_NUMBER_DIGITS = 2
# The start of a number is looked up in the phones' index from this many E.164 digits
# (+81 90 123…, +81 3 1234…): shorter starts hold so many numbers (+81 90: every
# mobile) that joining each one's customer costs more than scanning the customers
# (measured at 100,000 customers: 「03」 by the index 0.75 s, by the scan 0.05 s).
INDEXED_PREFIX_DIGITS = 7
MatchedField = Literal["name", "furigana", "company", "code", "email", "phone"]
_LIKE_ESCAPE = "\\"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class SearchToken:
    """One word of a query: its folded text, and its digits when it is a number.

    ``e164_prefix``: the number was typed from its start, with ``+`` or the trunk ``0``
    (「+81 3 1234」, 「090-1234」, 「0312345678」), so it is the start of an E.164 number
    (``+8131234``, ``+81901234``): from :data:`INDEXED_PREFIX_DIGITS` digits on, found
    through the phones' index whatever the number of customers. A number typed without
    either (「1234-5678」) may sit anywhere in a number: found by a scan of
    ``search_digits``.
    """

    text: str
    digits: str | None = None
    e164_prefix: str | None = None
    typed: str = ""  # NFKC, as typed: a code that is all digits is compared with this


def parse_query(query: str, *, region: str = "JP") -> list[SearchToken]:
    """The tokens every hit must match (AND). A query that is all number (「+81 3 1234」,
    「090 1234」) is one number token, its spaces and hyphens typed for reading only.
    ``region``: the numbering plan a number with a trunk prefix belongs to."""
    # Control characters (a NUL, which PostgreSQL refuses in any string) separate words.
    cleaned = _CONTROL.sub(" ", unicodedata.normalize("NFKC", query)).strip()
    if not cleaned:
        return []
    whole = query_digits(cleaned)
    parts = [cleaned] if whole is not None else cleaned.split()
    tokens: dict[SearchToken, None] = {}
    for part in parts:
        text = fold(part)
        if not text:
            continue
        digits = query_digits(part)
        if digits is not None and len(digits) >= MIN_NUMBER_DIGITS:
            prefix = _e164_prefix(part, digits, region)
            tokens[SearchToken(text, digits, prefix, part)] = None
        else:
            tokens[SearchToken(text)] = None
    return list(tokens)


def _e164_prefix(typed: str, digits: str, region: str) -> str | None:
    """The start of the E.164 number a number typed from its start is, or None."""
    country = phonenumbers.country_code_for_region(region)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    trunk = (metadata.national_prefix if metadata else None) or ""
    if typed.lstrip().startswith("+"):
        # 「+81 (0)3 …」: the trunk 0 some write after the country code is no digit of it.
        code = str(country)
        if trunk and country and digits.startswith(code + trunk):
            digits = code + digits[len(code) + len(trunk) :]
        return "+" + digits
    if trunk and country and digits.startswith(trunk) and not digits.startswith(trunk * 2):
        # 00… is an international call prefix, not a national number: left to the scan.
        return f"+{country}{digits[len(trunk) :]}"
    return None


def _after_prefix(prefix: str) -> str | None:
    """The smallest digit string of the same length after every string starting with
    ``prefix`` (``+81909`` → ``+81910``), or None when there is none (all nines). Digits
    only, so that the range means the same in every collation (punctuation such as ``:``
    sorts elsewhere outside the C locale)."""
    head = prefix.rstrip("9")
    if not head or not head[-1].isdigit():
        return None
    return head[:-1] + str(int(head[-1]) + 1)


def _like_escaped(text: str) -> str:
    """``text`` for a LIKE pattern, its own ``% _ \\`` meaning themselves."""
    return (
        text.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )


def _like(column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    return column.like(pattern, escape=_LIKE_ESCAPE)


def _token_matches(customers: Table, token: SearchToken) -> ColumnElement[bool]:
    prefix = token.e164_prefix
    if prefix is not None and len(prefix) - 1 >= INDEXED_PREFIX_DIGITS:
        # Live phones whose number starts so: a range of ix_customer_phones_e164_live
        # (the LIKE only re-checks it), or a code typed exactly (ix_customers_code).
        phones = cast(Table, CustomerPhone.__table__)
        in_range = [phones.c.e164 >= prefix, phones.c.e164.like(prefix + "%")]
        upper = _after_prefix(prefix)
        if upper is not None:
            in_range.append(phones.c.e164 < upper)
        owners = select(phones.c.customer_id).where(phones.c.deleted_at.is_(None), *in_range)
        coded = select(customers.c.id).where(customers.c.code == token.typed)
        # One IN over a UNION, not "IN (…) OR code = …": PostgreSQL turns the OR into a
        # filter on a scan of every customer; the UNION it joins by primary key.
        return customers.c.id.in_(union_all(owners, coded))
    if prefix is not None:
        # Too short a start for the index to pay: the same match by a scan.
        return or_(
            customers.c.search_digits.like(f"% {prefix[1:]}%"), customers.c.code == token.typed
        )
    text = _like(customers.c.search_text, f"%{_like_escaped(token.text)}%")
    if token.digits is None:
        return text
    # search_digits is " 0312345678 81312345678 "; digits need no escaping.
    return or_(text, customers.c.search_digits.like(f"%{token.digits}%"))


def _phone_start(token: SearchToken) -> str | None:
    """What ``search_digits`` holds where a phone number starts as ``token`` says."""
    if token.e164_prefix is not None:
        return " " + token.e164_prefix[1:]
    return None if token.digits is None else " " + token.digits


def _rank(customers: Table, tokens: Sequence[SearchToken]) -> ColumnElement[int]:
    """0: the code exactly; 1: the name starts with the first word; 2: another field
    (furigana, company…) or a phone number starts with it; 3: found inside."""
    first = tokens[0]
    start = _like_escaped(first.text)
    # The name is the first field of search_text (it is never empty); every other field
    # follows a separator.
    field_start = _like(customers.c.search_text, f"%{FIELD_SEPARATOR}{start}%")
    phone_start = _phone_start(first)
    if phone_start is not None:
        field_start = or_(field_start, customers.c.search_digits.like(f"%{phone_start}%"))
    whens: list[tuple[ColumnElement[bool], int]] = []
    if len(tokens) == 1:
        whens.append((func.lower(customers.c.code) == first.text, 0))
    whens += [(_like(customers.c.search_text, f"{start}%"), 1), (field_start, 2)]
    return case(*whens, else_=literal(3))


def _matched(row: Any, tokens: Sequence[SearchToken]) -> MatchedField | None:
    """Which field the query was found in, the most telling first."""
    if not tokens:
        return None
    if len(tokens) == 1 and row.code and fold(row.code) == tokens[0].text:
        return "code"
    digits = row.search_digits or ""
    if any(token.e164_prefix and f" {token.e164_prefix[1:]}" in digits for token in tokens):
        return "phone"
    fields: tuple[tuple[MatchedField, str], ...] = (
        ("name", fold(row.name)),
        ("furigana", fold(row.furigana)),
        ("company", fold(row.company) + FIELD_SEPARATOR + fold(row.department)),
        ("code", fold(row.code)),
        ("email", fold(row.email)),
    )
    for field, value in fields:
        if any(token.text in value for token in tokens):
            return field
    if any(token.digits and token.digits in digits for token in tokens):
        return "phone"
    return "name"  # found by a word spanning fields the UI does not name (unreachable)


def _national(numbering: Numbering, e164: str) -> str:
    found = numbering.normalise(e164)
    return found.national if found.kind == "e164" and found.national else e164


def search_customers(
    session: Session,
    query: str,
    *,
    limit: int,
    numbering: Numbering | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Live customers matching every word of ``query``, best first, at most ``limit``;
    and whether there were more. An empty query lists the most recently updated.

    Each hit is a plain dict in the shape of the search API's ``Hit`` (phones with their
    national form in ``numbering``'s region, the assigned staff member, and ``matched``:
    the field the query was found in, None for an empty query). Three statements
    whatever the page size: the customers with their staff, and their phones.
    """
    if not 1 <= limit <= LIMIT_MAX:
        raise ValueError(f"limit must be 1..{LIMIT_MAX}, not {limit}")
    customers = cast(Table, Customer.__table__)
    staff = cast(Table, Staff.__table__)
    numbering = numbering or Numbering()
    tokens = parse_query(query, region=numbering.region)
    statement = (
        select(
            customers.c.id,
            customers.c.code,
            customers.c.name,
            customers.c.furigana,
            customers.c.honorific,
            customers.c.company,
            customers.c.department,
            customers.c.email,
            customers.c.rank,
            customers.c.tags,
            customers.c.search_digits,
            staff.c.id.label("staff_id"),
            staff.c.name.label("staff_name"),
            staff.c.furigana.label("staff_furigana"),
            staff.c.extension.label("staff_extension"),
        )
        .select_from(customers)
        .outerjoin(staff, staff.c.id == customers.c.assigned_staff_id)
        .where(customers.c.deleted_at.is_(None))
        .limit(limit + 1)
    )
    if tokens:
        statement = statement.where(and_(*(_token_matches(customers, t) for t in tokens)))
        statement = statement.order_by(
            _rank(customers, tokens),
            func.coalesce(customers.c.furigana, customers.c.name),
            customers.c.name,
            customers.c.id,
        )
    else:
        statement = statement.order_by(customers.c.updated_at.desc(), customers.c.id.desc())
    rows = session.execute(statement).all()
    truncated = len(rows) > limit
    rows = rows[:limit]
    phones = _phones(session, [row.id for row in rows], numbering)
    return [
        {
            "id": row.id,
            "code": row.code,
            "name": row.name,
            "furigana": row.furigana,
            "honorific": row.honorific,
            "company": row.company,
            "department": row.department,
            "rank": row.rank,
            "tags": list(row.tags or []),
            "assigned_staff": (
                None
                if row.staff_id is None
                else {
                    "id": row.staff_id,
                    "name": row.staff_name,
                    "furigana": row.staff_furigana,
                    "extension": row.staff_extension,
                }
            ),
            "phones": phones.get(row.id, []),
            "matched": _matched(row, tokens),
        }
        for row in rows
    ], truncated


def _phones(
    session: Session, customer_ids: Sequence[int], numbering: Numbering
) -> dict[int, list[dict[str, Any]]]:
    if not customer_ids:
        return {}
    phones = cast(Table, CustomerPhone.__table__)
    found: dict[int, list[dict[str, Any]]] = {}
    for customer_id, e164, label in session.execute(
        select(phones.c.customer_id, phones.c.e164, phones.c.label)
        .where(phones.c.customer_id.in_(customer_ids), phones.c.deleted_at.is_(None))
        .order_by(phones.c.customer_id, phones.c.id)
    ):
        found.setdefault(customer_id, []).append(
            {"number": e164, "national": _national(numbering, e164), "label": label}
        )
    return found


__all__ = [
    "FIELD_SEPARATOR",
    "LIMIT_MAX",
    "MatchedField",
    "SearchToken",
    "customer_text",
    "fold",
    "install",
    "parse_query",
    "phone_digits",
    "query_digits",
    "refresh_search",
    "search_customers",
]
