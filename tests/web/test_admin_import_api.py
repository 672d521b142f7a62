"""Customers in and out from the admin page: ``/api/admin/import/customers`` and
``/api/admin/export/customers.csv``, over real HTTP on a real callpop (the demo database).

The files are made here the way Excel saves them (CP932, numbers stripped of their
leading 0, full-width digits); what reached the database is read back from the SQLite
file itself, not from the API that wrote it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from db.demo import DEMO_ACCOUNTS
from popup_ui.admin import MAX_IMPORT_BYTES
from tests.web.conftest import Live

pytestmark = pytest.mark.asyncio

TOKYO = ZoneInfo("Asia/Tokyo")
ADMIN = next(a for a in DEMO_ACCOUNTS if a.role == "admin")
STAFF = next(a for a in DEMO_ACCOUNTS if a.role == "staff")
HEADER = "顧客コード,氏名,フリガナ,電話番号,携帯,会社名,メモ"
IMPORT = "/api/admin/import/customers"
EXPORT = "/api/admin/export/customers.csv"


def csv_bytes(*lines: str, encoding: str = "cp932") -> bytes:
    return ("\r\n".join([HEADER, *lines]) + "\r\n").encode(encoding)


# Two new customers: a Tokyo number Excel stripped of its 0, a mobile in full-width digits.
GOOD = csv_bytes(
    "W001,森田 一郎,モリタ イチロウ,312349876,９０８７６５４３２１,森田商店,初めての取り込み",
    "W002,森田 花子,モリタ ハナコ,06-6123-4567,,,",
)


async def _login(live: Live, login: str, password: str) -> httpx.AsyncClient:
    client = live.client()
    response = await client.post("/api/session", json={"login": login, "password": password})
    assert response.status_code == 200, response.text
    return client


async def _import(
    client: httpx.AsyncClient, data: bytes, *, dry_run: bool, encoding: str = "auto"
) -> httpx.Response:
    return await client.post(
        IMPORT,
        params={"dry_run": "true" if dry_run else "false", "encoding": encoding},
        content=data,
        headers={"Content-Type": "text/csv"},
    )


def _customers(live: Live, name_like: str) -> list[tuple[Any, ...]]:
    """(code, name, furigana, company, memo, numbers) of the customers named like this,
    straight from the database file."""
    with live.db() as db:
        rows = db.execute(
            "SELECT id, code, name, furigana, company, memo FROM customers"
            " WHERE name LIKE ? ORDER BY id",
            (name_like,),
        ).fetchall()
        return [
            (
                *row[1:],
                tuple(
                    e164
                    for (e164,) in db.execute(
                        "SELECT e164 FROM customer_phones WHERE customer_id = ? ORDER BY id",
                        (row[0],),
                    )
                ),
            )
            for row in rows
        ]


async def test_a_dry_run_reports_repairs_and_previews_and_writes_nothing(live_web: Live) -> None:
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    response = await _import(admin, GOOD, dry_run=True, encoding="cp932")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["dry_run"], report["written"]) == (True, False)
    counts = (report["rows"], report["created"], report["updated"], report["unchanged"])
    assert counts == (2, 2, 0, 0)
    assert report["errors"] == []
    assert report["repaired"] == [
        {"line": 2, "from": "312349876", "to": "03-1234-9876"},
        {"line": 2, "from": "９０８７６５４３２１", "to": "090-8765-4321"},
    ]
    assert report["preview"] == [
        {
            "line": 2,
            "action": "create",
            "code": "W001",
            "name": "森田 一郎",
            "furigana": "モリタ イチロウ",
            "company": "森田商店",
            "phones": ["03-1234-9876", "090-8765-4321"],
        },
        {
            "line": 3,
            "action": "create",
            "code": "W002",
            "name": "森田 花子",
            "furigana": "モリタ ハナコ",
            "company": None,
            "phones": ["06-6123-4567"],
        },
    ]
    assert _customers(live_web, "森田%") == []
    # auto reads the same file (not UTF-8, so CP932) to the same report.
    auto = await _import(admin, GOOD, dry_run=True)
    assert auto.json() == report


async def test_a_broken_row_is_reported_by_line_and_the_real_run_writes_nothing(
    live_web: Live,
) -> None:
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    broken = csv_bytes(
        "W001,森田 一郎,モリタ イチロウ,03-1234-9876,,,",
        ",,,03-2222-3333,,,",  # line 3: neither name nor company
        "W003,森田 三郎,,12-34,,,",  # line 4: not a number
    )
    dry = (await _import(admin, broken, dry_run=True)).json()
    assert dry["errors"] == [
        {"line": 3, "column": None, "message": "neither a name nor a company"},
        {"line": 4, "column": "電話番号", "message": "'12-34' is not a phone number"},
    ]
    assert [row["line"] for row in dry["preview"]] == [2]
    real = await _import(admin, broken, dry_run=False)
    assert real.status_code == 200, real.text
    assert (real.json()["written"], real.json()["errors"]) == (False, dry["errors"])
    assert _customers(live_web, "森田%") == []


async def test_the_real_run_creates_and_again_updates_without_duplicates(
    live_web: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="popup_ui.admin")
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    first = await _import(admin, GOOD, dry_run=False)
    assert first.status_code == 200, first.text
    assert (first.json()["written"], first.json()["created"]) == (True, 2)
    stored = _customers(live_web, "森田%")
    assert stored == [
        (
            "W001",
            "森田 一郎",
            "モリタ イチロウ",
            "森田商店",
            "初めての取り込み",
            ("+81312349876", "+819087654321"),
        ),
        ("W002", "森田 花子", "モリタ ハナコ", None, None, ("+81661234567",)),
    ]
    # The audit log says who imported them (popup_ui/trash.py's route).
    audit = (await admin.get("/api/admin/audit", params={"limit": 10})).json()["entries"]
    imported = [e for e in audit if e["source"] == "import"]
    assert {(e["action"], e["entity"], e["staff_name"]) for e in imported} == {
        ("create", "customer", ADMIN.name)
    }
    assert sorted(e["after"]["name"] for e in imported) == ["森田 一郎", "森田 花子"]

    changed = csv_bytes(
        "W001,森田 一郎,モリタ イチロウ,03-1234-9876,090-8765-4321,森田商店,二回目",
        "W002,森田 花子,モリタ ハナコ,06-6123-4567,,,",
    )
    again = (await _import(admin, changed, dry_run=False)).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 1, 1)
    assert [(row["line"], row["action"]) for row in again["preview"]] == [
        (2, "update"),
        (3, "unchanged"),
    ]
    after = _customers(live_web, "森田%")
    assert len(after) == 2
    assert after[0][4] == "二回目" and after[0][5] == stored[0][5]
    assert after[1] == stored[1]
    # A dry run of a change leaves the customer as it is (the change was only in memory).
    third = csv_bytes("W001,森田 一郎,モリタ イチロウ,03-1234-9876,,森田商店,三回目")
    dry = (await _import(admin, third, dry_run=True)).json()
    assert (dry["updated"], dry["written"]) == (1, False)
    assert _customers(live_web, "森田%") == after
    logged = [r.getMessage() for r in caplog.records if r.name == "popup_ui.admin"]
    assert (
        f"admin {ADMIN.login} imported customers (written): 2 rows, 2 created, 0 updated,"
        " 0 unchanged, 0 errors, 2 numbers repaired" in logged
    )


async def test_unreadable_empty_and_oversized_files_are_refused(live_web: Live) -> None:
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    empty = await _import(admin, b"", dry_run=True)
    assert empty.status_code == 422 and empty.json()["detail"] == "ファイルが空です"
    no_name = await _import(admin, "番号,電話番号\r\n1,03-1234-5678\r\n".encode(), dry_run=True)
    assert no_name.status_code == 422
    assert no_name.json()["detail"].startswith("ファイルを読めません: no name or company column")
    not_utf8 = await _import(admin, GOOD, dry_run=True, encoding="utf-8")
    assert not_utf8.status_code == 422
    assert not_utf8.json()["detail"] == "ファイルを読めません: not utf-8 text (line 1)"

    over = b"x" * (MAX_IMPORT_BYTES + 1)
    declared = await _import(admin, over, dry_run=True)  # Content-Length says it at once
    assert declared.status_code == 413
    assert declared.json()["detail"] == "ファイルが大きすぎます（上限 20 MB）"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for start in range(0, len(over), 1 << 20):
            yield over[start : start + (1 << 20)]

    streamed = await admin.post(IMPORT, params={"dry_run": "false"}, content=chunks())
    assert streamed.status_code == 413
    assert _customers(live_web, "x%") == []


async def test_staff_may_neither_import_nor_export(live_web: Live) -> None:
    staff = await _login(live_web, STAFF.login, STAFF.password)
    assert (await _import(staff, GOOD, dry_run=False)).status_code == 403
    assert (await staff.get(EXPORT)).status_code == 403
    assert (await live_web.client().get(EXPORT)).status_code == 401
    assert _customers(live_web, "森田%") == []


async def test_export_is_a_dated_download_that_imports_back_unchanged(live_web: Live) -> None:
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    assert (await _import(admin, GOOD, dry_run=False)).json()["written"] is True
    today = datetime.now(TOKYO).date().isoformat()
    for encoding in ("utf-8-sig", "cp932"):
        response = await admin.get(EXPORT, params={"encoding": encoding})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"] == (
            f'attachment; filename="customers-{today}.csv"'
        )
        assert response.headers["cache-control"] == "no-store"
        data = response.content
        assert data.startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
        assert "森田 一郎" in data.decode(encoding)
        back = (await _import(admin, data, dry_run=False)).json()
        assert back["errors"] == [], encoding
        assert (back["created"], back["updated"]) == (0, 0), encoding
        assert back["unchanged"] == back["rows"] > 2
        again = await admin.get(EXPORT, params={"encoding": encoding})
        assert again.content == data, encoding  # nothing changed by the round trip


async def test_exported_cells_that_excel_would_run_are_neutralised(live_web: Live) -> None:
    admin = await _login(live_web, ADMIN.login, ADMIN.password)
    formulas = csv_bytes(
        ',=HYPERLINK("http://x"),,03-1234-9876,,,+cmd',
        ",@A1,,,,会社,-2",
        encoding="utf-8",
    )
    assert (await _import(admin, formulas, dry_run=False)).json()["written"] is True
    data = (await admin.get(EXPORT)).content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(data, newline="")))
    cells = [cell for row in rows[1:] for cell in row if cell]
    assert not [cell for cell in cells if re.match(r"[=+\-@\t\r]", cell)]
    by_name = {row[rows[0].index("氏名")]: row for row in rows[1:]}
    assert by_name['\'=HYPERLINK("http://x")'][rows[0].index("メモ")] == "'+cmd"
    assert by_name["'@A1"][rows[0].index("メモ")] == "'-2"
