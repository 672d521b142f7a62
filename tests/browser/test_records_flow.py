"""The records work end to end, as one office's afternoon, in real Chromium.

An admin imports the customer list the way Excel saved it (CP932, Japanese headers, a
landline Excel stripped of its leading 0, a mobile typed in full-width digits, a
preference) through 管理 → 取り込み: checked first, the repaired numbers shown, then
取り込む. The new customer is found in 顧客 by katakana and by half-width kana, opened
with ↓ Enter, and given a transaction typed inline (「58,000」 → ¥58,000). Then
``callpop call`` rings the real service from the number as a person dials it: the board
pops the customer with 様 and the openers the records give (that transaction and the
preference), and the name on the pop opens the customer's page, where the call is on
top of the timeline.

Uses a service of its own on a fresh demo database: the import adds customers the other
browser tests must not find.

With ``CALLPOP_UPDATE_SCREENSHOTS=1`` the pop goes to docs/screenshots/records-flow-pop.png,
else to test-artifacts/; the import preview and the search always go to test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from db.demo import DEMO_ACCOUNTS
from tests.browser.conftest import (
    ARTIFACTS,
    RING_TIMEOUT_MS,
    TOKYO,
    Dialer,
    Service,
    log_in,
    ringing_card,
    run_service,
)
from tests.browser.test_after_the_pop import settle, shots

pytestmark = pytest.mark.browser

ADMIN = next(a for a in DEMO_ACCOUNTS if a.role == "admin")
CODE, NAME, KANA, COMPANY = "R001", "柊 早苗", "ヒイラギ サナエ", "柊設計事務所"
SEARCH_KANA, SEARCH_HALF_WIDTH = "ヒイラギ", "ﾋｲﾗｷﾞ"  # ﾋｲﾗｷﾞ: ｷ and a separate ﾞ
STRIPPED, REPAIRED, DIALLED = "352140088", "03-5214-0088", "0352140088"  # Excel dropped the 0
WIDE, MOBILE = "９０２２２１３３４４", "090-2221-3344"  # full-width digits, and no 0 either
PREFERENCE = "お茶は緑茶"
WORK, AMOUNT_TYPED, AMOUNT_SHOWN = "雨漏り修繕", "58,000", "¥58,000"
RING_SECONDS = 30  # long enough to look at the pop and follow its link while it rings


@pytest.fixture(scope="module")
def own_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with run_service(tmp_path_factory.mktemp("callpop-records-flow")) as svc:
        yield svc


def excel_csv(path: Path) -> Path:
    """The customer list as Excel saves 「CSV (コンマ区切り)」 on a Japanese PC: CP932, CRLF."""
    header = "顧客コード,氏名,フリガナ,会社名,電話番号,携帯,担当,メモ,好み"
    rows = [
        f"{CODE},{NAME},{KANA},{COMPANY},{STRIPPED},{WIDE},佐藤 健,山田様のご紹介,{PREFERENCE}",
        "R002,柊 一郎,ヒイラギ イチロウ,,06-6321-0099,,,,",
    ]
    path.write_bytes("\r\n".join([header, *rows, ""]).encode("cp932"))
    return path


def import_the_file(page: Any, csv_file: Path) -> None:
    """管理 → 取り込み: check the file, look at the preview, then 取り込む."""
    page.get_by_test_id("admin-tab").click()
    page.get_by_test_id("admin-tab-import").click()
    page.get_by_test_id("admin-import").wait_for(state="visible")
    page.get_by_test_id("import-file").set_input_files(str(csv_file))
    # The encoding is left as it comes (自動): the file must be recognised as CP932.
    page.get_by_test_id("import-check").click()

    expect(page.get_by_test_id("import-headline")).to_contain_text("2行を確認しました")
    expect(page.get_by_test_id("import-count-errors")).to_have_text(re.compile(r"エラー\s*0"))
    repaired = page.get_by_test_id("import-repaired")
    expect(repaired).to_contain_text(f"{STRIPPED} → {REPAIRED}")
    expect(repaired).to_contain_text(f"{WIDE} → {MOBILE}")
    first = page.get_by_test_id("import-preview-row").filter(has_text=CODE)
    for text in ("新規", NAME, KANA, COMPANY, REPAIRED, MOBILE):
        expect(first).to_contain_text(text)
    settle(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(
        path=str(ARTIFACTS / "records-flow-import.png"), animations="disabled", full_page=True
    )

    page.get_by_test_id("import-run").click()
    expect(page.get_by_test_id("import-headline")).to_contain_text("2行を取り込みました")
    expect(page.get_by_test_id("import-status")).to_have_text("取り込みました")
    expect(page.get_by_test_id("import-count-created")).to_have_text(re.compile(r"新規\s*2"))


def find_and_open(page: Any) -> int:
    """顧客: katakana and half-width kana find the customer; ↓ Enter opens the page."""
    page.get_by_test_id("customers-tab").click()
    box = page.locator("#customers-q")
    expect(box).to_be_focused()
    hits = page.locator("[data-testid=customer-hit]")
    mine = hits.filter(has_text=NAME)
    # As an IME leaves it (hiragana), in katakana, in half-width kana: the stored
    # katakana reading matches each, and is what the hit marks.
    for typed in ("ひいらぎ", SEARCH_KANA, SEARCH_HALF_WIDTH):
        box.fill(typed)
        expect(hits).to_have_count(2)  # both 柊 of the file, no one else
        expect(mine.locator("mark").first).to_have_text(SEARCH_KANA)
    expect(mine).to_contain_text(REPAIRED)
    expect(mine).to_contain_text("担当: 佐藤 健")
    settle(page)
    page.screenshot(path=str(ARTIFACTS / "records-flow-search.png"), animations="disabled")

    box.fill(KANA)  # the full reading leaves the imported customer alone
    expect(hits).to_have_count(1)
    box.press("ArrowDown")
    expect(mine).to_have_attribute("aria-selected", "true")
    box.press("Enter")
    view = page.locator("#customers-view")
    expect(view.get_by_test_id("customer-name")).to_have_text(f"{NAME} 様")
    expect(view.get_by_test_id("customer-furigana")).to_have_text(KANA)
    phones = view.get_by_test_id("customer-phones")
    expect(phones).to_contain_text(REPAIRED)
    expect(phones).to_contain_text(MOBILE)
    match = re.search(r"#/customers/(\d+)$", page.url)
    assert match, page.url
    return int(match.group(1))


def add_transaction(page: Any) -> None:
    """取引を追加, today's date as the form offers it, the amount as a person types it."""
    page.get_by_test_id("transaction-open").click()
    title = page.locator("#cu-transaction-title")
    expect(title).to_be_focused()
    today = datetime.now(TOKYO).date().isoformat()
    expect(page.locator("#cu-transaction-date")).to_have_value(today)
    title.fill(WORK)
    page.locator("#cu-transaction-amount").fill(AMOUNT_TYPED)
    page.get_by_test_id("transaction-save").click()
    top = page.locator("[data-testid=timeline-item]").first
    expect(top).to_have_attribute("data-kind", "transaction")
    expect(top.get_by_test_id("transaction-amount")).to_have_text(AMOUNT_SHOWN)
    expect(top).to_contain_text(WORK)
    expect(top).to_contain_text(today)


def test_import_search_transaction_and_the_pop_with_its_opener(
    page: Any, own_service: Service, tmp_path: Path
) -> None:
    log_in(page, own_service, ADMIN.login)
    import_the_file(page, excel_csv(tmp_path / "顧客一覧.csv"))
    customer_id = find_and_open(page)
    add_transaction(page)

    view = page.locator("#customers-view")
    dialer = Dialer(own_service)
    try:
        call = dialer.call(DIALLED, ring_seconds=RING_SECONDS)
        page.locator("#tab-board").click()
        card = ringing_card(page, NAME)
        card.wait_for(timeout=RING_TIMEOUT_MS)
        expect(card.get_by_test_id("customer-name")).to_have_text(f"{NAME}様")
        # The openers come from the records just made: the work of today first, then taste.
        month = datetime.now(TOKYO).month
        openers = card.get_by_test_id("opener")
        expect(openers).to_have_text(
            [f"{month}月の{WORK}、その後いかがですか", f"お好み: {PREFERENCE}"]
        )
        settle(page)
        page.screenshot(path=str(shots() / "records-flow-pop.png"), animations="disabled")

        # The name on the pop opens the customer's page, where this call is now on top.
        card.get_by_test_id("open-customer").click()
        expect(page).to_have_url(re.compile(rf"#/customers/{customer_id}$"))
        expect(view.get_by_test_id("customer-name")).to_have_text(f"{NAME} 様")
        items = page.locator("[data-testid=timeline-item]")
        expect(items.first).to_have_attribute("data-kind", "call")
        expect(items.first).to_contain_text("着信中")
        expect(items.nth(1)).to_have_attribute("data-kind", "transaction")
        dialer.finish(call, timeout=RING_SECONDS + 30)
    finally:
        dialer.close()

    # The caller gave up before anyone answered: the page says so once reloaded.
    page.reload()
    expect(view.get_by_test_id("customer-name")).to_have_text(f"{NAME} 様")
    expect(items).to_have_count(2)
    expect(items.first).to_have_attribute("data-kind", "call")
    expect(items.first).to_contain_text("放棄")
    expect(items.nth(1)).to_contain_text(AMOUNT_SHOWN)
    settle(page)
    page.screenshot(
        path=str(ARTIFACTS / "records-flow-timeline.png"), animations="disabled", full_page=True
    )
