"""The 管理 view in real Chromium: importing a customer file, staff accounts, passwords.

A service of this module's own (``callpop demo`` on a fresh database): the tests add a
staff account and change passwords, which the other browser tests must not see. The
import file is written here the way Excel saves it (CP932, a number stripped of its
leading 0, full-width digits) and chosen in the page's file input, as a person would.

With ``CALLPOP_UPDATE_SCREENSHOTS=1`` the pictures go to docs/screenshots/
(admin-import.png, admin-staff.png), else to test-artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from db.demo import DEMO_ACCOUNTS
from tests.browser.conftest import TOKYO, Service, log_in, run_service
from tests.browser.test_after_the_pop import settle, shots

pytestmark = pytest.mark.browser

ADMIN = next(a for a in DEMO_ACCOUNTS if a.role == "admin")
STAFF = next(a for a in DEMO_ACCOUNTS if a.role == "staff")
NAME, KANA = "榊原 進", "サカキバラ ススム"
STRIPPED, REPAIRED = "312340077", "03-1234-0077"  # Excel dropped the 0
WIDE, MOBILE = "９０１１１１２２２２", "090-1111-2222"  # full-width, and no 0 either


@pytest.fixture(scope="module")
def admin_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with run_service(tmp_path_factory.mktemp("callpop-admin")) as svc:
        yield svc


def open_admin(page: Any, service: Service, section: str) -> None:
    log_in(page, service, ADMIN.login)
    page.get_by_test_id("admin-tab").click()
    page.get_by_test_id(f"admin-tab-{section}").click()
    page.get_by_test_id(f"admin-{section}").wait_for(state="visible")


def customers_found(page: Any, service: Service, query: str) -> list[str]:
    """Names GET /api/customers?q= finds, as the logged-in browser asks."""
    response = page.request.get(f"{service.url}api/customers?q={quote(query)}")
    assert response.status == 200, response.text()
    return [hit["name"] for hit in response.json()["results"]]


def test_an_admin_imports_a_cp932_file_checked_first(
    page: Any, admin_service: Service, tmp_path: Path
) -> None:
    csv_file = tmp_path / "顧客一覧.csv"
    csv_file.write_bytes(
        "顧客コード,氏名,フリガナ,電話番号,携帯,会社名\r\n"
        f"B001,{NAME},{KANA},{STRIPPED},{WIDE},榊原製作所\r\n"
        "B002,榊原 和子,サカキバラ カズコ,06-6321-0088,,\r\n".encode("cp932")
    )
    open_admin(page, admin_service, "import")
    run = page.get_by_test_id("import-run")
    assert run.is_disabled()  # nothing checked yet
    page.get_by_test_id("import-file").set_input_files(str(csv_file))
    page.get_by_test_id("import-encoding").select_option("cp932")
    page.get_by_test_id("import-check").click()

    headline = page.get_by_test_id("import-headline")
    headline.wait_for()
    assert "2行を確認しました" in headline.inner_text()
    assert page.get_by_test_id("import-count-created").inner_text().split() == ["新規", "2"]
    assert page.get_by_test_id("import-count-errors").inner_text().split() == ["エラー", "0"]
    repaired = page.get_by_test_id("import-repaired").inner_text()
    assert f"{STRIPPED} → {REPAIRED}" in repaired
    assert f"{WIDE} → {MOBILE}" in repaired
    rows = page.get_by_test_id("import-preview-row")
    assert rows.count() == 2
    first = rows.nth(0).inner_text()
    for text in ("新規", "B001", NAME, KANA, "榊原製作所", REPAIRED, MOBILE):
        assert text in first
    assert customers_found(page, admin_service, "サカキバラ") == []  # a dry run writes nothing
    assert run.is_enabled()
    settle(page)
    page.screenshot(path=str(shots() / "admin-import.png"), animations="disabled", full_page=True)

    run.click()
    page.get_by_test_id("import-headline").filter(has_text="2行を取り込みました").wait_for()
    assert page.get_by_test_id("import-status").inner_text() == "取り込みました"
    assert page.get_by_test_id("import-count-created").inner_text().split() == ["新規", "2"]
    assert run.is_disabled()  # once is enough: a second run needs a new check
    assert sorted(customers_found(page, admin_service, "サカキバラ")) == sorted([NAME, "榊原 和子"])

    # The same file again: nothing new, nothing changed.
    page.get_by_test_id("import-check").click()
    page.get_by_test_id("import-headline").filter(has_text="確認しました").wait_for()
    assert page.get_by_test_id("import-count-unchanged").inner_text().split() == ["変更なし", "2"]
    assert page.get_by_test_id("import-count-created").inner_text().split() == ["新規", "0"]


def test_a_broken_file_lists_its_errors_and_cannot_be_imported(
    page: Any, admin_service: Service, tmp_path: Path
) -> None:
    csv_file = tmp_path / "broken.csv"
    csv_file.write_bytes(
        "氏名,電話番号\r\n桐生 誠,03-1234-5555\r\n,03-2222-3333\r\n桐生 恵,12-34\r\n".encode(
            "cp932"
        )
    )
    open_admin(page, admin_service, "import")
    page.get_by_test_id("import-file").set_input_files(str(csv_file))
    page.get_by_test_id("import-check").click()
    page.get_by_test_id("import-headline").filter(has_text="エラーが2件").wait_for()
    errors = page.get_by_test_id("import-errors").locator("li").all_inner_texts()
    assert [" ".join(e.split()) for e in errors] == [
        "3行目 氏名も会社名もありません",
        "4行目・電話番号 「12-34」は電話番号として読めません",
    ]
    assert page.get_by_test_id("import-run").is_disabled()
    assert customers_found(page, admin_service, "桐生") == []


def test_staff_do_not_see_the_admin_tab_and_get_403(page: Any, admin_service: Service) -> None:
    log_in(page, admin_service, STAFF.login)
    assert page.get_by_test_id("admin-tab").is_hidden()
    api = admin_service.url + "api/admin"
    assert page.request.get(f"{api}/staff").status == 403
    assert page.request.post(f"{api}/import/customers", data=b"x").status == 403
    # The address of the view does not open it either.
    page.goto(f"{admin_service.url}#/admin")
    page.locator("#board-screen").wait_for(state="visible")
    assert page.get_by_test_id("admin-view").is_hidden()


def test_an_admin_adds_an_account_that_logs_in_and_changes_its_password(
    new_page: Any, admin_service: Service
) -> None:
    admin = new_page()
    open_admin(admin, admin_service, "staff")
    admin.get_by_test_id("staff-row").first.wait_for()
    admin.get_by_test_id("staff-add-login").fill("kiryu")
    admin.get_by_test_id("staff-add-name").fill("桐生 一馬")
    admin.get_by_test_id("staff-add-furigana").fill("きりゅう かずま")
    admin.get_by_test_id("staff-add-extension").fill("209")
    admin.get_by_test_id("staff-add-password").fill("short")
    admin.get_by_test_id("staff-add-submit").click()
    assert "8文字以上" in admin.get_by_test_id("staff-add-error").inner_text()
    admin.get_by_test_id("staff-add-password").fill("kiryu-first-209")
    admin.get_by_test_id("staff-add-submit").click()
    row = admin.locator("[data-testid=staff-row][data-login=kiryu]")
    row.wait_for()
    assert "桐生 一馬" in row.inner_text() and "209" in row.inner_text()
    assert "桐生 一馬 (kiryu) を追加しました" in admin.get_by_test_id("staff-status").inner_text()

    # The only admin cannot step down: the page says why, the row stays as it was.
    mine = admin.locator(f"[data-testid=staff-row][data-login={ADMIN.login}]")
    mine.get_by_test_id("staff-edit").click()
    mine.get_by_test_id("staff-edit-role").select_option("staff")
    mine.get_by_test_id("staff-edit-save").click()
    refused = admin.get_by_test_id("staff-row-error")
    refused.wait_for()
    assert "最後の管理者です" in refused.inner_text()
    admin.keyboard.press("Escape")
    refused.wait_for(state="detached")
    assert "管理者" in mine.inner_text()
    # Edit in place: Enter saves.
    row.get_by_test_id("staff-edit").click()
    extension = row.get_by_test_id("staff-edit-extension")
    extension.fill("210")
    extension.press("Enter")
    admin.get_by_test_id("staff-status").filter(has_text="桐生 一馬 を保存しました").wait_for()
    assert "210" in row.inner_text()
    settle(admin)
    admin.screenshot(path=str(shots() / "admin-staff.png"), animations="disabled", full_page=True)

    kiryu = new_page()
    kiryu.goto(admin_service.url)
    kiryu.locator("#login-id").fill("kiryu")
    kiryu.locator("#login-password").fill("kiryu-first-209")
    kiryu.locator("#login-submit").click()
    kiryu.locator("#board-screen").wait_for(state="visible")
    assert kiryu.get_by_test_id("admin-tab").is_hidden()
    kiryu.get_by_test_id("password-button").click()
    dialog = kiryu.get_by_test_id("password-dialog")
    dialog.wait_for()
    assert kiryu.evaluate("document.activeElement.id") == "pw-current"
    kiryu.locator("#pw-current").fill("not-my-password")
    kiryu.locator("#pw-new").fill("kiryu-second-209")
    kiryu.locator("#pw-again").fill("kiryu-second-209")
    kiryu.get_by_test_id("password-dialog-ok").click()
    error = kiryu.get_by_test_id("password-dialog-error")
    error.filter(has_text="現在のパスワードが違います").wait_for()
    kiryu.locator("#pw-current").fill("kiryu-first-209")
    kiryu.locator("#pw-again").fill("kiryu-typo-209")
    kiryu.get_by_test_id("password-dialog-ok").click()
    error.filter(has_text="一致しません").wait_for()
    kiryu.locator("#pw-again").fill("kiryu-second-209")
    kiryu.locator("#pw-again").press("Enter")
    kiryu.get_by_test_id("password-dialog-done").filter(has_text="変更しました").wait_for()
    kiryu.keyboard.press("Escape")
    dialog.wait_for(state="hidden")

    # Logged out and in again: the new password works, the old one does not.
    kiryu.locator("#logout-button").click()
    kiryu.locator("#login-screen").wait_for(state="visible")
    old = {"login": "kiryu", "password": "kiryu-first-209"}
    assert kiryu.request.post(f"{admin_service.url}api/session", data=old).status == 401
    kiryu.locator("#login-id").fill("kiryu")
    kiryu.locator("#login-password").fill("kiryu-second-209")
    kiryu.locator("#login-submit").click()
    kiryu.locator("#board-screen").wait_for(state="visible")


def test_deleted_records_are_restored_or_purged_and_the_audit_shows_each_change(
    page: Any, admin_service: Service
) -> None:
    open_admin(page, admin_service, "staff")
    api = admin_service.url + "api"
    made = []
    for name in ("久我 一", "久我 二"):
        created = page.request.post(f"{api}/customers", data={"name": name})
        assert created.status == 201, created.text()
        made.append(created.json()["id"])
    renamed = page.request.patch(f"{api}/customers/{made[0]}", data={"name": "久我 一郎"})
    assert renamed.status == 200, renamed.text()
    for customer_id in made:
        assert page.request.delete(f"{api}/customers/{customer_id}").status == 204

    page.get_by_test_id("admin-tab-deleted").click()
    rows = page.get_by_test_id("deleted-row")
    restore_row = page.locator(f"[data-testid=deleted-row][data-id='{made[0]}']")
    purge_row = page.locator(f"[data-testid=deleted-row][data-id='{made[1]}']")
    restore_row.wait_for()
    assert "久我 一郎" in restore_row.inner_text() and "高橋 誠" in restore_row.inner_text()
    restore_row.get_by_test_id("deleted-restore").click()
    restore_row.wait_for(state="detached")
    assert "復元しました" in page.get_by_test_id("deleted-status").inner_text()
    assert "久我 一郎" in customers_found(page, admin_service, "久我")

    purge_row.get_by_test_id("deleted-purge").click()
    dialog = page.get_by_test_id("purge-dialog")
    dialog.wait_for()
    assert page.get_by_test_id("purge-id").inner_text() == str(made[1])
    ok = page.get_by_test_id("purge-dialog-ok")
    typed = page.get_by_test_id("purge-confirm")
    assert page.evaluate("document.activeElement.dataset.testid") == "purge-confirm"
    assert ok.is_disabled()
    typed.fill(str(made[1] + 1))
    assert ok.is_disabled()  # another id is not a confirmation
    typed.fill(str(made[1]))
    typed.press("Enter")
    dialog.wait_for(state="hidden")
    purge_row.wait_for(state="detached")
    assert "完全に削除しました" in page.get_by_test_id("deleted-status").inner_text()
    assert rows.filter(has_text="久我").count() == 0
    gone = page.request.get(f"{api}/customers/{made[1]}")
    assert gone.status == 404

    page.get_by_test_id("admin-tab-audit").click()
    entries = page.get_by_test_id("audit-entry")
    entries.first.wait_for()
    texts = [" ".join(text.split()) for text in entries.all_inner_texts()]
    mine = [text for text in texts if f"#{made[0]}" in text]
    assert [text.split(" 高橋 誠 ")[1].split(" ")[0] for text in mine][:4] == [
        "復元",
        "削除",
        "変更",
        "作成",
    ]
    assert "氏名: 久我 一 → 久我 一郎" in mine[2]
    assert any(f"#{made[1]}" in text and "完全に削除" in text for text in texts)

    # Another language: the words change, the entries stay.
    page.locator("#board-screen .lang[data-lang=en]").click()
    assert page.get_by_test_id("admin-tab-audit").inner_text() == "Audit log"
    english = [" ".join(text.split()) for text in entries.all_inner_texts()]
    assert [text for text in english if f"#{made[0]}" in text][0].count("Restored") == 1


def test_the_export_buttons_download_dated_files(page: Any, admin_service: Service) -> None:
    open_admin(page, admin_service, "export")
    today = datetime.now(TOKYO).date().isoformat()
    for encoding, bom in (("utf-8-sig", True), ("cp932", False)):
        with page.expect_download() as info:
            page.get_by_test_id(f"export-{encoding}").click()
        download = info.value
        assert download.suggested_filename == f"customers-{today}.csv"
        data = Path(download.path()).read_bytes()
        assert data.startswith(b"\xef\xbb\xbf") == bom
        assert "顧客コード,氏名,フリガナ" in data.decode(encoding)
        status = page.get_by_test_id("export-status")
        status.filter(has_text=f"customers-{today}.csv を保存しました").wait_for()
