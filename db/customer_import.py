"""Customers in and out as CSV, the way Excel saves and opens it.

Import: :func:`read_table` decodes the file (CP932, or UTF-8 with or without BOM),
finds the header row's columns (Japanese or English names, or a mapping file) and
yields one :class:`Row` per record with the file's line number; :func:`import_customers`
turns each into a customer, matching an existing one on the customer code, else on
name + a number, and reports every row error. The caller commits or rolls back: the
whole file goes in, or nothing does.

Export: :func:`export_customers` writes the same columns the import reads, so a file
goes out to Excel and back unchanged; cells that Excel would run as a formula are
neutralised with a leading ``'`` (which the import takes off again).

Numbers are read with the one normaliser (:class:`lookup.numbers.Numbering`). It
already reads a national number that Excel stripped of its trunk 0 ("312345678" is
03-1234-5678), as phonenumbers does, so the repair lives here, not in the normaliser:
the import only notices such a cell, reports it, and refuses it when the stripped and
the as-written readings disagree. The call path keeps its one set of rules.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.audit import record, snapshot
from db.models import Customer, CustomerPhone, Staff
from lookup.numbers import Numbering

Encoding = Literal["auto", "utf-8", "utf-8-sig", "cp932"]
ENCODINGS: tuple[str, ...] = ("auto", "utf-8", "utf-8-sig", "cp932")
EXPORT_ENCODINGS: tuple[str, ...] = ("utf-8-sig", "cp932")

# Plain text fields: the Customer attribute each one fills.
TEXT_FIELDS = (
    "code",
    "name",
    "furigana",
    "honorific",
    "company",
    "department",
    "postal_code",
    "address",
    "email",
    "contact_hours",
    "rank",
    "preferences",
    "memo",
)
# Number columns: the field and the label a new phone from that column gets.
PHONE_FIELDS: Mapping[str, str | None] = {
    "phone": None,
    "mobile": "携帯",
    "work_phone": "会社",
    "fax": "FAX",
}
OTHER_FIELDS = ("tags", "birthday", "staff")
FIELDS = (*TEXT_FIELDS, *PHONE_FIELDS, *OTHER_FIELDS)

# The export's columns, in order: the header each field is written under.
EXPORT_HEADERS: Mapping[str, str] = {
    "code": "顧客コード",
    "name": "氏名",
    "furigana": "フリガナ",
    "honorific": "敬称",
    "company": "会社名",
    "department": "部署",
    "postal_code": "郵便番号",
    "address": "住所",
    "phone": "電話番号",
    "mobile": "携帯",
    "work_phone": "会社電話",
    "fax": "FAX",
    "email": "メール",
    "contact_hours": "連絡可能時間",
    "staff": "担当",
    "rank": "ランク",
    "tags": "タグ",
    "preferences": "好み",
    "birthday": "誕生日",
    "memo": "メモ",
}

# Header names people use, folded by :func:`_fold_header`; a trailing number
# ("電話番号2", "TEL 3") is another column of the same field.
HEADER_ALIASES: Mapping[str, str] = {
    **{_h: "code" for _h in ("顧客コード", "顧客番号", "お客様番号", "コード", "code", "id")},
    **{_h: "name" for _h in ("氏名", "名前", "お名前", "顧客名", "name")},
    **{_h: "furigana" for _h in ("フリガナ", "ふりがな", "カナ", "よみ", "furigana", "kana")},
    **{_h: "honorific" for _h in ("敬称", "honorific")},
    **{_h: "company" for _h in ("会社名", "会社", "法人名", "屋号", "company")},
    **{_h: "department" for _h in ("部署", "部署名", "department")},
    **{_h: "postal_code" for _h in ("郵便番号", "〒", "postalcode", "zip")},
    **{_h: "address" for _h in ("住所", "所在地", "address")},
    **{_h: "phone" for _h in ("電話番号", "電話", "tel", "phone", "自宅", "自宅電話")},
    **{_h: "mobile" for _h in ("携帯", "携帯電話", "携帯番号", "mobile", "cell")},
    **{_h: "work_phone" for _h in ("会社電話", "勤務先電話", "workphone")},
    **{_h: "fax" for _h in ("fax", "ファックス", "ファクス")},
    **{_h: "email" for _h in ("メール", "メールアドレス", "email", "e-mail", "mail")},
    **{_h: "contact_hours" for _h in ("連絡可能時間", "連絡可能な時間帯", "contacthours")},
    **{_h: "staff" for _h in ("担当", "担当者", "staff")},
    **{_h: "rank" for _h in ("ランク", "rank")},
    **{_h: "tags" for _h in ("タグ", "tags")},
    **{_h: "preferences" for _h in ("好み", "preferences")},
    **{_h: "birthday" for _h in ("誕生日", "生年月日", "birthday")},
    **{_h: "memo" for _h in ("メモ", "備考", "memo", "note", "notes")},
}

# Excel runs a cell beginning with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TAG_SPLIT = re.compile(r"[,、，/／・]")
_DIGITS_ONLY = re.compile(r"[1-9]\d*")
_NUMBER_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212\u30fc\uff70().\[\]/]")
_MAX_CELL = 2000  # longer cells are row errors, not silently cut
# The whole file is read into memory (and every row may report): far above any office's
# list (10,000 customers are about 1 MB) and refused above, with one line.
MAX_FILE_BYTES = 64 * 1024 * 1024


class ImportFileError(Exception):
    """The file cannot be read at all (the CLI's exit 2): one line that says why."""


@dataclass(frozen=True, slots=True)
class Column:
    index: int
    header: str
    field: str


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # the file's line the record starts on; the header is line 1
    cells: Mapping[int, str]


@dataclass(slots=True)
class Report:
    """What an import did (or would do): the ``--json`` object."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    repaired: list[dict[str, Any]] = field(default_factory=list)
    # The first rows as they would go in (``import_customers(preview=n)``), for the admin
    # page's 確認; not part of ``as_dict`` (the CLI's --json).
    preview: list[dict[str, Any]] = field(default_factory=list)

    def error(self, line: int, column: str | None, message: str) -> None:
        self.errors.append({"line": line, "column": column, "message": message})

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "errors": self.errors,
            "repaired": self.repaired,
        }


# --- reading the file ------------------------------------------------------------


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes; ``ImportFileError`` above ``limit`` (``OSError`` when unreadable)."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ImportFileError(f"larger than {limit // (1024 * 1024)} MiB")
    return data


def decode(data: bytes, encoding: str = "auto") -> str:
    """The file's text. ``auto``: a UTF-8 BOM, else strict UTF-8, else CP932."""
    if encoding not in ENCODINGS:
        raise ImportFileError(f"unknown encoding {encoding!r}")
    if encoding == "auto":
        if data.startswith(b"\xef\xbb\xbf"):
            encoding = "utf-8-sig"
        else:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                encoding = "cp932"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFileError(f"not {encoding} text (line {line})") from exc


def load_mapping(path: Path) -> dict[str, str]:
    """A mapping file: ``[columns]`` header = field, e.g. ``"TEL1" = "phone"``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImportFileError(f"{path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"{path}: not a TOML file ({exc})") from exc
    columns = data.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise ImportFileError(f"{path}: needs a [columns] table of header = field")
    mapping: dict[str, str] = {}
    for header, target in columns.items():
        if target not in FIELDS:
            raise ImportFileError(
                f"{path}: {header!r} = {target!r}: the field must be one of {', '.join(FIELDS)}"
            )
        mapping[_fold_header(header)] = target
    return mapping


def _fold_header(header: str) -> str:
    return re.sub(r"[\s_]", "", unicodedata.normalize("NFKC", header)).lower()


def find_columns(header: Sequence[str], mapping: Mapping[str, str] | None = None) -> list[Column]:
    """The header's recognised columns; a mapping file's names come before the built-in ones."""
    columns: list[Column] = []
    for index, raw in enumerate(header):
        folded = _fold_header(raw)
        target = (mapping or {}).get(folded) or HEADER_ALIASES.get(folded)
        if target is None:
            base = folded.rstrip("0123456789")
            if base != folded and base:
                target = (mapping or {}).get(base) or HEADER_ALIASES.get(base)
        if target is not None:
            columns.append(Column(index=index, header=raw.strip(), field=target))
    fields = {c.field for c in columns}
    if "name" not in fields and "company" not in fields:
        raise ImportFileError(
            "no name or company column in the header (氏名/名前/name, 会社名/company;"
            " or give --mapping)"
        )
    for single in (*TEXT_FIELDS, *OTHER_FIELDS):
        twice = [c.header for c in columns if c.field == single]
        if len(twice) > 1:
            raise ImportFileError(f"columns {' and '.join(twice)} both hold {single}")
    return columns


def read_table(
    text: str, mapping: Mapping[str, str] | None = None
) -> tuple[list[Column], Iterator[Row]]:
    """The header's columns and the data rows (blank rows skipped)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the file is empty") from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from exc
    columns = find_columns(header, mapping)
    return columns, _rows(reader)


def _rows(reader: Any) -> Iterator[Row]:
    last = reader.line_num
    while True:
        start = last + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFileError(f"line {start}: {exc}") from exc
        last = reader.line_num
        if any(cell.strip() for cell in cells):
            yield Row(line=start, cells=dict(enumerate(cells)))


# --- one row -----------------------------------------------------------------------


@dataclass(slots=True)
class Parsed:
    """A row read into customer values; ``phones`` are (e164, raw, label)."""

    line: int
    values: dict[str, Any] = field(default_factory=dict)
    phones: list[tuple[str, str, str | None]] = field(default_factory=list)


def read_number(numbering: Numbering, raw: str) -> tuple[str | None, str | None, bool]:
    """``(e164, problem, repaired)`` for one number cell.

    A cell of digits alone not beginning with 0 is what Excel leaves of a number
    typed without quoting ("312345678"); it is read both as written and with its
    trunk 0 put back, and accepted only when both readings agree (or only one is a
    number at all).
    """
    number = numbering.normalise(raw)
    digits = _NUMBER_SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    stripped = bool(_DIGITS_ONLY.fullmatch(digits)) and len(digits) >= 9
    if stripped:
        with_zero = numbering.normalise("0" + digits)
        readings = {n.e164 for n in (number, with_zero) if n.kind == "e164"}
        if len(readings) > 1:
            shown = " or ".join(sorted(n.national or "" for n in (number, with_zero)))
            return None, f"{raw!r} has two readings ({shown}); write it with its leading 0", False
        if number.kind != "e164" and with_zero.kind == "e164":
            number = with_zero
    if number.kind != "e164" or number.e164 is None:
        return None, f"{raw!r} is not a phone number", False
    return number.e164, None, stripped


def parse_row(
    row: Row,
    columns: Sequence[Column],
    numbering: Numbering,
    staff: Mapping[str, int],
    report: Report,
) -> Parsed | None:
    """The row's values, or None after adding its errors to ``report``."""
    parsed = Parsed(line=row.line)
    errors = len(report.errors)
    for column in columns:
        cell = _cell(row, column)
        if len(cell) > _MAX_CELL:
            report.error(row.line, column.header, f"longer than {_MAX_CELL} characters")
            continue
        if column.field in PHONE_FIELDS:
            if not cell:
                continue
            e164, problem, repaired = read_number(numbering, cell)
            if problem is not None or e164 is None:
                report.error(row.line, column.header, problem or "not a phone number")
                continue
            if repaired:
                shown = numbering.normalise(e164).national or e164
                report.repaired.append({"line": row.line, "from": cell, "to": shown})
            if all(p[0] != e164 for p in parsed.phones):
                parsed.phones.append((e164, cell, PHONE_FIELDS[column.field]))
        elif column.field == "tags":
            parsed.values["tags"] = [t.strip() for t in _TAG_SPLIT.split(cell) if t.strip()]
        elif column.field == "birthday":
            try:
                parsed.values["birthday"] = _date(cell)
            except ValueError:
                report.error(row.line, column.header, f"{cell!r} is not a date (2026-11-22)")
        elif column.field == "staff":
            staff_id = staff.get(_fold_name(cell)) if cell else None
            if cell and staff_id is None:
                report.error(row.line, column.header, f"no staff member named {cell!r}")
            parsed.values["assigned_staff_id"] = staff_id
        else:
            parsed.values[column.field] = cell or None
    if not parsed.values.get("name") and not parsed.values.get("company"):
        report.error(row.line, None, "neither a name nor a company")
    if "name" in parsed.values:
        parsed.values["name"] = parsed.values["name"] or ""
    return parsed if len(report.errors) == errors else None


def _cell(row: Row, column: Column) -> str:
    value = row.cells.get(column.index, "").strip()
    # An exported cell neutralised against formula injection: take the quote off again.
    if value.startswith("'") and value[1:2] in _FORMULA_START and value[1:2]:
        value = value[1:]
    return value


def _date(cell: str) -> dt.date | None:
    if not cell:
        return None
    text = unicodedata.normalize("NFKC", cell).strip()
    for pattern in ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日"):
        try:
            return dt.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise ValueError(cell)


def _fold_name(name: str) -> str:
    return re.sub(r"\s", "", unicodedata.normalize("NFKC", name))


# --- matching and writing -----------------------------------------------------------------


def staff_by_name(session: Session) -> dict[str, int]:
    """Staff ids by name and by login (spaces ignored): what a 担当 cell may say."""
    names: dict[str, int] = {}
    for staff_id, login, name in session.execute(select(Staff.id, Staff.login, Staff.name)):
        names.setdefault(_fold_name(login), staff_id)
        names[_fold_name(name)] = staff_id
    return names


@dataclass(slots=True)
class Plan:
    """What the file does, before anything is written: new customers, changed ones (in
    the session, not flushed), numbers to add, and the file's customers so far by code,
    by name + number and by name + company (a later row of the same customer finds them)."""

    new: list[Customer] = field(default_factory=list)
    phones: list[tuple[Customer, str, str, str | None]] = field(default_factory=list)
    known: dict[int, set[str]] = field(default_factory=dict)  # id(customer) -> its numbers
    by_key: dict[tuple[str, ...], Customer] = field(default_factory=dict)
    # id(customer) -> (the customer, its audit snapshot before the file): for the audit log.
    before: dict[int, tuple[Customer, dict[str, Any]]] = field(default_factory=dict)

    def remember(self, customer: Customer) -> None:
        if customer.code:
            self.by_key[("code", customer.code)] = customer
        for e164 in self.known.get(id(customer), ()):
            self.by_key[("number", customer.name, e164)] = customer
        self.by_key[("company", customer.name, customer.company or "")] = customer

    def find(self, parsed: Parsed) -> Customer | None:
        code = parsed.values.get("code")
        if code and ("code", code) in self.by_key:
            return self.by_key[("code", code)]
        name = parsed.values.get("name") or ""
        keys = [("number", name, e164) for e164, _, _ in parsed.phones] or [
            ("company", name, parsed.values.get("company") or "")
        ]
        for key in keys:
            found = self.by_key.get(key)
            if found is not None and not (code and found.code):
                return found
        return None


def find_customer(session: Session, parsed: Parsed) -> Customer | None:
    """The live customer in the database this row is: same code; else same name and one
    of its numbers.

    A row with neither a code nor a number matches on name and company. A row whose
    code is new matches only customers without a code (one imported before codes were
    in the file gets it), never one that has another code.
    """
    code = parsed.values.get("code")
    live = [Customer.deleted_at.is_(None)]
    if code:
        found = session.scalars(select(Customer).where(Customer.code == code, *live)).first()
        if found is not None:
            return found
        live.append(Customer.code.is_(None))
    name = parsed.values.get("name") or ""
    if parsed.phones:
        return session.scalars(
            select(Customer)
            .join(CustomerPhone, CustomerPhone.customer_id == Customer.id)
            .where(
                CustomerPhone.e164.in_([p[0] for p in parsed.phones]),
                CustomerPhone.deleted_at.is_(None),
                Customer.name == name,
                *live,
            )
            .order_by(Customer.id)
        ).first()
    return session.scalars(
        select(Customer)
        .where(Customer.name == name, Customer.company == parsed.values.get("company"), *live)
        .order_by(Customer.id)
    ).first()


def plan_row(
    session: Session, plan: Plan, parsed: Parsed
) -> Literal["created", "updated", "unchanged"]:
    """Create or change the customer in memory; only the file's columns change, numbers are
    only added. Reads the database, never writes it (the caller holds autoflush off)."""
    customer = plan.find(parsed) or find_customer(session, parsed)
    outcome: Literal["created", "updated", "unchanged"] = "unchanged"
    if customer is None:
        customer = Customer(**{"name": "", "tags": [], **parsed.values})
        plan.new.append(customer)
        plan.known[id(customer)] = set()
        outcome = "created"
    else:
        if id(customer) not in plan.before and id(customer) not in plan.known:
            plan.before[id(customer)] = (customer, snapshot(customer))
        for key, value in parsed.values.items():
            if getattr(customer, key) != value:
                setattr(customer, key, value)
                outcome = "updated"
    known = plan.known.get(id(customer))
    if known is None:
        known = plan.known[id(customer)] = set(
            session.scalars(
                select(CustomerPhone.e164).where(
                    CustomerPhone.customer_id == customer.id, CustomerPhone.deleted_at.is_(None)
                )
            )
        )
        if id(customer) in plan.before:
            plan.before[id(customer)][1]["phones"] = sorted(known)
    for e164, raw, label in parsed.phones:
        if e164 not in known:
            plan.phones.append((customer, e164, raw, label))
            known.add(e164)
            if outcome == "unchanged":
                outcome = "updated"
    plan.remember(customer)
    return outcome


_ACTIONS = {"created": "create", "updated": "update", "unchanged": "unchanged"}


def preview_row(parsed: Parsed, outcome: str, numbering: Numbering) -> dict[str, Any]:
    """One row of the preview: what the file says and what the import would do with it."""
    values = parsed.values
    return {
        "line": parsed.line,
        "action": _ACTIONS[outcome],
        **{key: values.get(key) for key in ("code", "name", "furigana", "company")},
        "phones": [numbering.normalise(e164).national or e164 for e164, _, _ in parsed.phones],
    }


def write_plan(session: Session, plan: Plan, staff_id: int | None = None) -> None:
    """The new customers and numbers, in two batched flushes (changed customers go too),
    and an audit entry (source ``import``) per customer created or changed: its columns
    and numbers before and after."""
    session.add_all(plan.new)
    session.flush()
    session.add_all(
        CustomerPhone(customer_id=customer.id, e164=e164, raw=raw, label=label)
        for customer, e164, raw, label in plan.phones
    )
    session.flush()
    changed = [(customer, None) for customer in plan.new] + list(plan.before.values())
    for customer, before in changed:
        after = {**snapshot(customer), "phones": sorted(plan.known.get(id(customer), ()))}
        if after != before:
            record(
                session,
                staff_id=staff_id,
                action="create" if before is None else "update",
                entity="customer",
                entity_id=customer.id,
                customer_id=customer.id,
                before=before,
                after=after,
                source="import",
            )
    session.flush()


def import_customers(
    session: Session,
    text: str,
    *,
    numbering: Numbering,
    mapping: Mapping[str, str] | None = None,
    write: bool = True,
    preview: int = 0,
    staff_id: int | None = None,
) -> Report:
    """Read every row; with ``write`` and no row error, write them into ``session``.

    Every row is checked and matched even after an error, so that the report lists
    every error and what the rest would do. Nothing reaches the database until all rows
    are read (SQLite's write lock is held only for the writing itself), and then only
    when ``write`` is set and no row had an error; the caller commits when
    ``report.errors`` is empty and it is not a dry run, and rolls back otherwise (which
    also drops the in-memory changes). The writing adds the audit entries (source
    ``import``; ``staff_id`` is who imported in the browser, None from the CLI).
    """
    columns, rows = read_table(text, mapping)
    report = Report()
    plan = Plan()
    staff = staff_by_name(session) if any(c.field == "staff" for c in columns) else {}
    with session.no_autoflush:
        for row in rows:
            report.rows += 1
            parsed = parse_row(row, columns, numbering, staff, report)
            if parsed is None:
                continue
            outcome = plan_row(session, plan, parsed)
            setattr(report, outcome, getattr(report, outcome) + 1)
            if len(report.preview) < preview:
                report.preview.append(preview_row(parsed, outcome, numbering))
    if write and not report.errors:
        write_plan(session, plan, staff_id)
    return report


# --- export ---------------------------------------------------------------------------------


def neutralise(cell: str) -> str:
    """A cell Excel shows as text, never runs: a leading ``= + - @`` tab or CR gets a ``'``."""
    quoted = cell.startswith("'") and cell[1:2] in _FORMULA_START and bool(cell[1:2])
    return "'" + cell if cell.startswith(_FORMULA_START) or quoted else cell


def export_rows(session: Session, numbering: Numbering) -> list[list[str]]:
    """The header and one row per live customer (by id), numbers in their national form."""
    staff: dict[int, str] = {
        staff_id: name for staff_id, name in session.execute(select(Staff.id, Staff.name))
    }
    phones: dict[int, dict[str, list[str]]] = {}
    for customer_id, e164, label in session.execute(
        select(CustomerPhone.customer_id, CustomerPhone.e164, CustomerPhone.label)
        .join(Customer, Customer.id == CustomerPhone.customer_id)
        .where(CustomerPhone.deleted_at.is_(None), Customer.deleted_at.is_(None))
        .order_by(CustomerPhone.customer_id, CustomerPhone.id)
    ):
        kind = next((f for f, lbl in PHONE_FIELDS.items() if lbl and lbl == label), "phone")
        shown = numbering.normalise(e164).national or e164
        phones.setdefault(customer_id, {}).setdefault(kind, []).append(shown)
    widths = {
        kind: max([1, *(len(p.get(kind, [])) for p in phones.values())]) for kind in PHONE_FIELDS
    }
    header: list[str] = []
    for name, title in EXPORT_HEADERS.items():
        if name in PHONE_FIELDS:
            header += [title if i == 0 else f"{title}{i + 1}" for i in range(widths[name])]
        else:
            header.append(title)
    rows = [header]
    for customer in session.scalars(
        select(Customer).where(Customer.deleted_at.is_(None)).order_by(Customer.id)
    ):
        row: list[str] = []
        for name in EXPORT_HEADERS:
            if name in PHONE_FIELDS:
                numbers = phones.get(customer.id, {}).get(name, [])
                row += [*numbers, *[""] * (widths[name] - len(numbers))]
            elif name == "staff":
                assigned = customer.assigned_staff_id
                row.append(staff.get(assigned, "") if assigned is not None else "")
            elif name == "tags":
                row.append("、".join(customer.tags or []))
            elif name == "birthday":
                row.append(customer.birthday.isoformat() if customer.birthday else "")
            else:
                row.append(getattr(customer, name) or "")
        rows.append([neutralise(cell) for cell in row])
    return rows


def export_customers(session: Session, numbering: Numbering, encoding: str = "utf-8-sig") -> bytes:
    """The CSV file's bytes (CRLF lines, as Excel writes them)."""
    if encoding not in EXPORT_ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}")
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    rows = export_rows(session, numbering)
    writer.writerows(rows)
    try:
        return out.getvalue().encode(encoding)
    except UnicodeEncodeError as exc:
        bad = out.getvalue()[exc.start : exc.end]
        raise ValueError(
            f"{bad!r} cannot be written in {encoding}; export with --encoding utf-8-sig"
        ) from exc
