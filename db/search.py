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
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, cast

import phonenumbers
from sqlalchemy import Connection, Table, bindparam, event, select, update
from sqlalchemy.orm import Session

from db.models import Customer, CustomerPhone

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


__all__ = [
    "FIELD_SEPARATOR",
    "customer_text",
    "fold",
    "install",
    "phone_digits",
    "query_digits",
    "refresh_search",
]
