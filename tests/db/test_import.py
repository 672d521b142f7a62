"""Customers in from CSV files the way Excel saves them, and out again, on real databases.

The files are made here (CP932 with numbers Excel stripped of their leading 0 and
full-width digits, UTF-8 with BOM, broken rows, 10,000 rows); the CLI is run in-process
through ``callpop.cli.main`` on a SQLite file named by ``CALLPOP_DATABASE__URL``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from callpop.cli import main
from db.customer_import import (
    ImportFileError,
    decode,
    export_customers,
    import_customers,
    neutralise,
)
from db.engine import make_engine, make_session_factory, migrate
from db.models import Customer, CustomerPhone
from lookup.numbers import Numbering
from tests.fixtures_db import Database, add_staff

PLAN = Numbering()
HEADER = "顧客コード,氏名,フリガナ,電話番号,携帯,会社名,担当,住所,メモ"


def csv_text(*lines: str, header: str = HEADER) -> str:
    return "\r\n".join([header, *lines]) + "\r\n"


def run_import(db: Database, text: str, **kwargs: Any) -> dict[str, Any]:
    """Import and commit when there is no error (the CLI's rule)."""
    with db.session_factory() as session:
        report = import_customers(session, text, numbering=PLAN, **kwargs)
        if report.errors:
            session.rollback()
        else:
            session.commit()
    return report.as_dict()


def customers(session: Session) -> list[tuple[Any, ...]]:
    """Every customer with its numbers, in a comparable form."""
    rows = []
    for customer in session.scalars(select(Customer).order_by(Customer.id)):
        phones = session.scalars(
            select(CustomerPhone.e164)
            .where(CustomerPhone.customer_id == customer.id)
            .order_by(CustomerPhone.id)
        ).all()
        rows.append(
            (
                customer.code,
                customer.name,
                customer.furigana,
                customer.company,
                customer.address,
                customer.memo,
                customer.assigned_staff_id,
                list(customer.tags or []),
                customer.birthday,
                tuple(phones),
            )
        )
    return rows


def count(db: Database) -> int:
    with db.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(Customer)) or 0)


# --- reading files ---------------------------------------------------------------------


def test_cp932_file_with_stripped_zeros_full_width_digits_and_two_numbers(
    database: Database,
) -> None:
    text = csv_text(
        "C001,山田 太郎,ヤマダ タロウ,312345678,９０１２３４５６７８,山田工務店,,東京都港区,",
        "C002,佐藤 花子,サトウ ハナコ,０３－９８７６－５４３２,,,,,お茶は緑茶",
    )
    data = text.encode("cp932")
    report = run_import(database, decode(data))
    assert report["errors"] == []
    assert (report["rows"], report["created"]) == (2, 2)
    assert report["repaired"] == [
        {"line": 2, "from": "312345678", "to": "03-1234-5678"},
        {"line": 2, "from": "９０１２３４５６７８", "to": "090-1234-5678"},
    ]
    with database.session_factory() as session:
        rows = customers(session)
        labels = session.scalars(select(CustomerPhone.label).order_by(CustomerPhone.id)).all()
    assert rows[0][:4] == ("C001", "山田 太郎", "ヤマダ タロウ", "山田工務店")
    assert rows[0][-1] == ("+81312345678", "+819012345678")
    assert rows[1][-1] == ("+81398765432",)
    assert rows[1][5] == "お茶は緑茶"
    assert labels == [None, "携帯", None]


def test_utf8_with_bom_english_headers_and_numbered_phone_columns(database: Database) -> None:
    text = csv_text(
        "伊藤 一郎,イトウ,03-1111-2222,06-1234-5678,,",
        header="name,furigana,phone,phone 2,company,memo",
    )
    assert decode(("\ufeff" + text).encode("utf-8")) == text
    report = run_import(database, decode(("\ufeff" + text).encode("utf-8")))
    assert (report["created"], report["errors"]) == (1, [])
    with database.session_factory() as session:
        assert customers(session)[0][-1] == ("+81311112222", "+81612345678")


def test_broken_rows_are_each_reported_with_line_and_column_and_nothing_is_written(
    database: Database,
) -> None:
    text = csv_text(
        "C001,山田 太郎,,03-1234-5678,,,,,",
        ",,,03-2222-3333,,,,,",  # line 3: neither name nor company
        'C003,"複数行の\r\nメモ",,,,,,,',  # lines 4-5: fine
        "C004,鈴木,,12-34,,,,,",  # line 6: not a number
        "C005,高橋,,,,,知らない人,,",  # line 7: unknown staff
    )
    with database.session_factory() as session:
        report = import_customers(session, text, numbering=PLAN).as_dict()
        assert report["created"] == 2  # the good rows, counted but not written
        assert session.scalar(select(func.count()).select_from(Customer)) == 0
        session.rollback()
    assert report["errors"] == [
        {"line": 3, "column": None, "message": "neither a name nor a company"},
        {"line": 6, "column": "電話番号", "message": "'12-34' is not a phone number"},
        {"line": 7, "column": "担当", "message": "no staff member named '知らない人'"},
    ]
    assert count(database) == 0


def test_a_dry_run_reports_without_writing_even_uncommitted(database: Database) -> None:
    text = csv_text("C1,山田,,03-1234-5678,,,,,", "C2,佐藤,,,,,,,")
    with database.session_factory() as session:
        report = import_customers(session, text, numbering=PLAN, write=False)
        assert (report.created, report.errors) == (2, [])
        # Nothing was flushed: the transaction holds no write lock while the rows are read.
        assert session.scalar(select(func.count()).select_from(Customer)) == 0
        assert not session.new


def test_staff_are_matched_by_name_or_login(database: Database) -> None:
    with database.session_factory() as session:
        sato = add_staff(session, "佐藤 健", "203", "sato").id
        session.commit()
    report = run_import(database, csv_text("C1,山田,,,,,佐藤健,,", "C2,田中,,,,,sato,,"))
    assert report["errors"] == []
    with database.session_factory() as session:
        assert [row[6] for row in customers(session)] == [sato, sato]


def test_a_number_with_two_readings_is_an_error() -> None:
    # A rewrite rule that reads the bare digits differently from the same digits with
    # their trunk 0 put back: the import cannot know which the office meant.
    plan = Numbering.from_config(rewrite=[("312345678", "0612345678")])
    from db.customer_import import read_number

    e164, problem, _ = read_number(plan, "312345678")
    assert e164 is None and problem is not None and "two readings" in problem
    assert read_number(PLAN, "312345678") == ("+81312345678", None, True)
    assert read_number(PLAN, "03-1234-5678") == ("+81312345678", None, False)


def test_a_mapping_file_reads_other_layouts(database: Database, tmp_path: Path) -> None:
    from db.customer_import import load_mapping

    mapping_file = tmp_path / "map.toml"
    mapping_file.write_text(
        '[columns]\n"お客様" = "name"\n"TEL1" = "phone"\n"連絡先B" = "mobile"\n', encoding="utf-8"
    )
    text = "お客様,TEL1,連絡先B\r\n木村,0312345678,09011112222\r\n"
    report = run_import(database, text, mapping=load_mapping(mapping_file))
    assert (report["created"], report["errors"]) == (1, [])
    with database.session_factory() as session:
        assert customers(session)[0][-1] == ("+81312345678", "+819011112222")
    mapping_file.write_text('[columns]\n"x" = "shoe_size"\n', encoding="utf-8")
    with pytest.raises(ImportFileError, match="shoe_size"):
        load_mapping(mapping_file)


def test_unreadable_files_raise_one_reason(tmp_path: Path) -> None:
    from db.customer_import import read_bounded

    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * 101)
    assert read_bounded(big, limit=101) == b"x" * 101
    with pytest.raises(ImportFileError, match="larger than"):
        read_bounded(big, limit=100)
    with pytest.raises(ImportFileError, match="not utf-8"):
        decode("氏名\r\n山田\r\n".encode("cp932"), "utf-8")
    assert decode("氏名\r\n山田\r\n".encode("cp932")) == "氏名\r\n山田\r\n"
    with pytest.raises(ImportFileError, match="no name or company column"):
        with Session() as session:
            import_customers(session, "foo,bar\r\n1,2\r\n", numbering=PLAN)


# --- re-import, round trip, formulas ---------------------------------------------------


def test_reimport_updates_and_never_duplicates(database: Database) -> None:
    first = csv_text(
        "C001,山田 太郎,,03-1234-5678,,,,,",
        ",佐藤 花子,,03-9876-5432,,,,,",
        ",田中商店,,,,田中商店,,,",
    )
    assert run_import(database, first)["created"] == 3
    again = csv_text(
        "C001,山田 太郎,,03-1234-5678,090-1234-5678,,,,新しいメモ",  # by code: gains a mobile
        ",佐藤 花子,,03-9876-5432,,,,,",  # by name + number: unchanged
        ",田中商店,,,,田中商店,,,",  # no code, no number: by name + company
    )
    report = run_import(database, again)
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 1, 2)
    with database.session_factory() as session:
        rows = customers(session)
    assert len(rows) == 3
    assert rows[0][5] == "新しいメモ"
    assert rows[0][-1] == ("+81312345678", "+819012345678")
    # Codes added to the sheet later: the customer gets its code, no second one appears.
    report = run_import(database, csv_text("C002,佐藤 花子,,03-9876-5432,,,,,"))
    assert (report["created"], report["updated"]) == (0, 1)
    # A new code never takes over a customer that has another one.
    report = run_import(database, csv_text("C009,山田 太郎,,03-1234-5678,,,,,"))
    assert report["created"] == 1
    with database.session_factory() as session:
        assert [row[0] for row in customers(session)] == ["C001", "C002", None, "C009"]


def test_the_same_customer_twice_in_one_file_is_one_customer(database: Database) -> None:
    text = csv_text(
        "C1,山田,,03-1234-5678,,,,,",
        "C1,山田,,,090-1234-5678,,,,メモ",  # by code
        ",佐藤,,03-2222-3333,,,,,",
        ",佐藤,,03-2222-3333,,,,,",  # by name + number
        ",田中,,,,田中商店,,,",
        ",田中,,,,田中商店,,,",  # by name + company
    )
    report = run_import(database, text)
    assert (report["created"], report["updated"], report["unchanged"]) == (3, 1, 2)
    with database.session_factory() as session:
        rows = customers(session)
    assert len(rows) == 3
    assert rows[0][-1] == ("+81312345678", "+819012345678") and rows[0][5] == "メモ"


def test_export_then_import_changes_nothing(database: Database) -> None:
    with database.session_factory() as session:
        add_staff(session, "佐藤 健", "203", "sato")
        session.commit()
    header = HEADER + ",タグ,誕生日,FAX,電話番号2"
    text = csv_text(
        'C001,山田 太郎,ヤマダ,312345678,090-1234-5678,山田工務店,佐藤 健,東京都,"改行\r\nあり",'
        "お得意様、紹介元,1980/4/1,03-1234-0000,06-1111-2222",
        ",=1+1,,+1 212-555-1234,,,,,@SUM(A1),,,,",
        ",'=already quoted,,,,会社,,,-5,,,,",
        header=header,
    )
    assert run_import(database, text)["errors"] == []
    with database.session_factory() as session:
        before = customers(session)
        exported = {enc: export_customers(session, PLAN, enc) for enc in ("utf-8-sig", "cp932")}
    assert before[1][1] == "=1+1" and before[2][1] == "=already quoted"
    for encoding, data in exported.items():
        report = run_import(database, decode(data))
        assert report["errors"] == [], encoding
        assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, 3), encoding
        with database.session_factory() as session:
            assert customers(session) == before, encoding


def test_formula_cells_are_neutralised_in_the_export(database: Database) -> None:
    text = csv_text(
        ',=HYPERLINK("http://x"),,03-1234-5678,,,,,+cmd',
        ",@A1,,,,会社,,,",
        ",-2,,,,会社,,,",
    )
    assert run_import(database, text.replace("\r\n", "\n"))["errors"] == []
    with database.session_factory() as session:
        session.add(Customer(name="タブ", memo="\tTAB", address="\rCR"))
        session.commit()
        data = export_customers(session, PLAN)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    header = rows[0]
    cells = [cell for row in rows[1:] for cell in row if cell]
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    by_name = {row[header.index("氏名")]: row for row in rows[1:]}
    assert set(by_name) == {'\'=HYPERLINK("http://x")', "'@A1", "'-2", "タブ"}
    assert by_name["タブ"][header.index("メモ")] == "'\tTAB"
    assert by_name["タブ"][header.index("住所")] == "'\rCR"
    assert neutralise("'=x") == "''=x" and neutralise("山田") == "山田"


def test_ten_thousand_rows(database: Database) -> None:
    lines = [
        f"K{i:05d},顧客{i},コキャク,03-{1000 + i // 10000:04d}-{i % 10000:04d},,,,,"
        for i in range(10_000)
    ]
    report = run_import(database, csv_text(*lines))
    assert (report["rows"], report["created"], report["errors"]) == (10_000, 10_000, [])
    assert count(database) == 10_000


# --- the command line ---------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'callpop.db'}"
    monkeypatch.setenv("CALLPOP_DATABASE__URL", url)
    return url


def cli_count(url: str) -> int:
    engine = make_engine(url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            return int(session.scalar(select(func.count()).select_from(Customer)) or 0)
    finally:
        engine.dispose()


def test_cli_import_json_exit_codes_and_dry_run(
    cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.csv"
    good.write_bytes(csv_text("C1,山田,,312345678,,,,,", "C2,佐藤,,,,,,,").encode("cp932"))
    assert main(["import", "customers", str(good), "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["rows", "created", "updated", "unchanged", "errors", "repaired"]
    assert (report["rows"], report["created"]) == (2, 2)
    assert report["repaired"] == [{"line": 2, "from": "312345678", "to": "03-1234-5678"}]
    assert cli_count(cli_db) == 0  # the dry run wrote nothing

    broken = tmp_path / "broken.csv"
    broken.write_bytes(csv_text("C1,山田,,312345678,,,,,", "C2,,,,,,,,").encode("utf-8-sig"))
    for extra in (["--dry-run"], []):
        assert main(["import", "customers", str(broken), "--json", *extra]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["errors"] == [
            {"line": 3, "column": None, "message": "neither a name nor a company"}
        ]
        assert cli_count(cli_db) == 0  # all or nothing

    assert main(["import", "customers", str(good)]) == 0
    assert "imported 2 rows: 2 new" in capsys.readouterr().out
    assert cli_count(cli_db) == 2

    # An update of an existing customer is not written when another row is broken.
    changed = tmp_path / "changed.csv"
    changed.write_bytes(csv_text("C1,山田 改,,,,,,,", "C3,,,,,,,,").encode("utf-8"))
    assert main(["import", "customers", str(changed)]) == 1
    assert "line 3: neither a name nor a company" in capsys.readouterr().out
    engine = make_engine(cli_db)
    try:
        with make_session_factory(engine)() as session:
            assert session.scalar(select(Customer.name).where(Customer.code == "C1")) == "山田"
    finally:
        engine.dispose()

    out = tmp_path / "out.csv"
    assert main(["export", "customers", str(out), "--encoding", "cp932"]) == 0
    assert out.read_bytes().decode("cp932").startswith("顧客コード,氏名")
    capsys.readouterr()
    assert main(["import", "customers", str(out), "--encoding", "cp932", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unchanged"] == 2


def test_cli_unreadable_files_exit_2_with_one_line(
    cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "missing.csv": None,
        "cp932.csv": "氏名\r\n山田\r\n".encode("cp932"),
        "noname.csv": b"foo,bar\r\n1,2\r\n",
        "empty.csv": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        extra = ["--encoding", "utf-8"] if name == "cp932.csv" else []
        assert main(["import", "customers", str(path), "--json", *extra]) == 2, name
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.count("\n") == 1 and captured.err.startswith("callpop: "), name
