"""The 顧客 view in real Chromium against the real service (``callpop demo``).

Search as you type finds the demo's 山田 太郎 様 by katakana, by half-width kana and by
part of a number, and ↓ Enter opens the customer's page (#/customers/<id>) with 様 and
the furigana. Customers the tests change are made through the page's own 新規顧客 form,
so the demo's records stay as the other browser tests expect them: a field edited in
place (Enter saves; a failed save keeps what was typed), a transaction typed in
full-width digits shown as ¥58,000 and a visit note, both on top of the timeline, a
name that is markup shown as text, and an admin's 変更履歴. The call log links to the
customer's page; the English strings come from i18n.js.

With ``CALLPOP_UPDATE_SCREENSHOTS=1`` the pictures go to docs/screenshots/
(customer-search.png, customer-page.png), else to test-artifacts/.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ARTIFACTS, Service, log_in
from tests.browser.test_after_the_pop import settle, shots

pytestmark = pytest.mark.browser

YAMADA = "山田 太郎"
YAMADA_KANA = "やまだ たろう"
MARKUP_NAME = "<b>x</b> 試験 花子"


def open_customers(page: Any) -> Any:
    page.get_by_test_id("customers-tab").click()
    box = page.locator("#customers-q")
    expect(box).to_be_focused()
    return box


def hit(page: Any, text: str) -> Any:
    return page.locator("[data-testid=customer-hit]", has_text=text)


def customer_id(page: Any, name: str) -> int:
    """The id of the one live customer called ``name``, through the search API."""
    found = page.evaluate(
        "q => fetch('/api/customers?q=' + encodeURIComponent(q)).then(r => r.json())", name
    )
    ids = [h["id"] for h in found["results"] if h["name"] == name]
    assert len(ids) == 1, found
    return int(ids[0])


def unique_number() -> str:
    return f"06-6{secrets.randbelow(1000):03d}-{secrets.randbelow(10000):04d}"


def create_customer(page: Any, name: str, furigana: str) -> int:
    """A new customer through the 新規顧客 form; its page is open when this returns."""
    open_customers(page)
    page.get_by_test_id("customer-new").click()
    name_box = page.locator("#cu-new-name")
    expect(name_box).to_be_focused()
    name_box.fill(name)
    page.locator("#cu-new-furigana").fill(furigana)
    page.locator("#cu-new-phone").fill(unique_number())
    page.locator("#cu-new-label").select_option("携帯")
    page.get_by_test_id("customer-create-save").click()
    page.locator("#customers-view[data-page=ready]").wait_for()
    expect(page.get_by_test_id("customer-name")).to_have_text(f"{name} 様")
    match = re.search(r"#/customers/(\d+)$", page.url)
    assert match, page.url
    return int(match.group(1))


def field(page: Any, key: str) -> Any:
    return page.locator(f"[data-testid=field-{key}]")


def test_search_by_kana_half_width_kana_and_number_and_open_with_the_keyboard(
    page: Any, service: Service
) -> None:
    log_in(page, service, "sato")
    box = open_customers(page)
    assert page.locator("label[for=customers-q]").inner_text() == "顧客を検索"
    assert box.get_attribute("placeholder") == "名前・ふりがな・会社・電話番号"

    for typed, marked in (("ヤマダ", "やまだ"), ("ﾔﾏﾀﾞ", "やまだ"), ("3-1234-56", "3-1234-56")):
        box.fill(typed)
        found = hit(page, YAMADA)
        expect(found).to_have_count(1)
        # The matched part is marked, as text (furigana for kana, the number for digits).
        expect(found.locator("mark").first).to_have_text(marked)
    found = hit(page, YAMADA)
    assert "03-1234-5678" in found.inner_text()
    assert "担当: 佐藤 健 (内線 203)" in found.inner_text()

    box.fill("存在しない名前ぞぞぞ")
    status = page.get_by_test_id("customer-search-status")
    expect(status).to_have_text("該当するお客様はいません")

    box.fill("たなか")
    expect(hit(page, "田中 和子")).to_have_count(1)
    settle(page)
    page.screenshot(path=str(shots() / "customer-search.png"))

    # Escape empties the box; ↓ Enter opens the highlighted result.
    box.press("Escape")
    expect(box).to_have_value("")
    box.fill("やまだ たろう")
    expect(page.locator("[data-testid=customer-hit]")).to_have_count(1)
    box.press("ArrowDown")
    expect(hit(page, YAMADA)).to_have_attribute("aria-selected", "true")
    box.press("Enter")
    expect(page.get_by_test_id("customer-name")).to_have_text(f"{YAMADA} 様")
    expect(page.get_by_test_id("customer-furigana")).to_have_text(YAMADA_KANA)
    assert page.url.endswith(f"#/customers/{customer_id(page, YAMADA)}")
    header = page.get_by_test_id("customer-header")
    assert "担当: 佐藤 健 (内線 203)" in header.inner_text()
    phones = page.get_by_test_id("customer-phones")
    assert "03-1234-5678" in phones.inner_text() and "自宅" in phones.inner_text()
    expect(page.locator("[data-testid=timeline-item]").first).to_be_visible()
    settle(page)
    page.screenshot(path=str(shots() / "customer-page.png"), full_page=True)

    page.get_by_test_id("customer-back").click()
    expect(box).to_be_focused()


def test_a_field_is_edited_in_place_and_a_failed_save_keeps_the_text(
    page: Any, service: Service
) -> None:
    log_in(page, service, "sato")
    create_customer(page, "編集 次郎", "へんしゅう じろう")
    row = field(page, "contact_hours")
    row.get_by_test_id("field-edit").click()
    editor = row.get_by_test_id("field-input")
    expect(editor).to_be_focused()

    # The server fails once: the editor stays with the text and the reason.
    page.route(
        re.compile(r".*/api/customers/\d+$"),
        lambda route: (
            route.fulfill(status=500, json={"detail": "データベースに接続できません"})
            if route.request.method == "PATCH"
            else route.continue_()
        ),
    )
    editor.fill("平日 10-17時")
    editor.press("Enter")
    expect(row.get_by_test_id("field-error")).to_contain_text("データベースに接続できません")
    expect(editor).to_have_value("平日 10-17時")
    page.unroute(re.compile(r".*/api/customers/\d+$"))

    editor.press("Enter")
    expect(row.get_by_test_id("field-value")).to_have_text("平日 10-17時")
    expect(row.get_by_test_id("field-edit")).to_be_focused()

    # Escape leaves the value as it was.
    row.get_by_test_id("field-edit").click()
    row.get_by_test_id("field-input").fill("書きかけ")
    row.get_by_test_id("field-input").press("Escape")
    expect(row.get_by_test_id("field-value")).to_have_text("平日 10-17時")

    page.reload()
    expect(field(page, "contact_hours").get_by_test_id("field-value")).to_have_text("平日 10-17時")


def test_a_transaction_and_a_visit_note_go_on_top_of_the_timeline(
    page: Any, service: Service
) -> None:
    log_in(page, service, "sato")
    create_customer(page, "取引 三郎", "とりひき さぶろう")
    page.get_by_test_id("transaction-open").click()
    title = page.locator("#cu-transaction-title")
    expect(title).to_be_focused()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", page.locator("#cu-transaction-date").input_value())
    expect(page.locator("#cu-transaction-staff_id")).to_have_value(re.compile(r"\d+"))
    title.fill("外壁塗装")
    page.locator("#cu-transaction-amount").fill("５８，０００")
    page.locator("#cu-transaction-detail").fill("南面のみ")
    page.get_by_test_id("transaction-save").click()
    items = page.locator("[data-testid=timeline-item]")
    top = items.first
    expect(top).to_have_attribute("data-kind", "transaction")
    expect(top.get_by_test_id("transaction-amount")).to_have_text("¥58,000")
    assert "外壁塗装" in top.inner_text() and "佐藤 健" in top.inner_text()

    page.get_by_test_id("note-open").click()
    expect(page.locator("#cu-note-kind")).to_have_value("visit")
    page.locator("#cu-note-body").fill("現地調査に伺った。\n足場の位置を確認")
    page.locator("#cu-note-follow_up_on").fill("2030-01-15")
    page.locator("#cu-note-body").press("Control+Enter")
    expect(items.first).to_have_attribute("data-kind", "note")
    assert "メモ (訪問)" in items.first.inner_text()
    assert "次回フォロー: 2030-01-15" in items.first.inner_text()

    # As the server lists them too.
    page.reload()
    expect(items).to_have_count(2)
    kinds = {items.nth(0).get_attribute("data-kind"), items.nth(1).get_attribute("data-kind")}
    assert kinds == {"note", "transaction"}
    assert "¥58,000" in page.get_by_test_id("customer-timeline").inner_text()


def test_a_name_that_is_markup_shows_as_text(page: Any, service: Service, page_log: Any) -> None:
    log_in(page, service, "sato")
    create_customer(page, MARKUP_NAME, "しけん はなこ")
    view = page.locator("#customers-view")
    assert view.locator("b").count() == 0
    page.get_by_test_id("customer-back").click()
    page.locator("#customers-q").fill("しけん")
    expect(hit(page, MARKUP_NAME)).to_have_count(1)
    assert view.locator("b").count() == 0
    assert not any("pageerror" in line for line in page_log.lines), page_log.lines


def test_the_call_log_links_to_the_customer_page(page: Any, service: Service) -> None:
    log_in(page, service, "sato")
    page.get_by_test_id("calllog-tab").click()
    link = page.locator("[data-testid=calllog-customer]").first
    link.wait_for()
    name = link.inner_text()
    link.click()
    expect(page.locator("#customers-view")).to_be_visible()
    expect(page.get_by_test_id("customer-name")).to_have_text(name)
    assert re.search(r"#/customers/\d+$", page.url)


def test_an_admin_sees_the_change_history(page: Any, service: Service) -> None:
    log_in(page, service, "admin")
    create_customer(page, "履歴 四郎", "りれき しろう")
    audit = page.get_by_test_id("customer-audit")
    expect(audit.locator("[data-testid=audit-entry]").first).to_be_visible()
    row = field(page, "rank")
    row.get_by_test_id("field-edit").click()
    row.get_by_test_id("field-input").fill("A")
    row.get_by_test_id("field-input").press("Enter")
    expect(audit).to_contain_text("ランク: — → A")
    assert "高橋 誠" in audit.inner_text()


def test_staff_do_not_see_the_change_history_and_a_shared_number_names_the_other(
    page: Any, service: Service
) -> None:
    log_in(page, service, "suzuki")
    page.goto(f"{service.url}#/customers/{customer_id(page, '田中 和子')}")
    expect(page.get_by_test_id("customer-name")).to_have_text("田中 和子 様")
    assert page.get_by_test_id("customer-audit").count() == 0
    shared = page.locator("[data-testid=customer-phone]", has_text="045-123-4567")
    expect(shared.get_by_test_id("phone-shared")).to_have_text("共有: 田中 一郎 様")
    shared.get_by_role("link", name="田中 一郎 様").click()
    expect(page.get_by_test_id("customer-name")).to_have_text("田中 一郎 様")


def test_phones_family_staff_and_deleting_the_customer(page: Any, service: Service) -> None:
    log_in(page, service, "sato")
    create_customer(page, "電話 五郎", "でんわ ごろう")

    # A number that is no number: the server's reason, and the typed text kept.
    page.get_by_test_id("phone-add").click()
    number = page.locator("#cu-phone-number")
    expect(number).to_be_focused()
    number.fill("abc")
    page.locator("#cu-phone-label").select_option("会社")
    page.locator("#cu-phone-owner_name").fill("奥様")
    page.get_by_test_id("phone-save").click()
    expect(page.get_by_test_id("phone-error")).to_be_visible()
    expect(number).to_have_value("abc")
    other = unique_number()
    number.fill(other)
    page.get_by_test_id("phone-save").click()
    added = page.locator("[data-testid=customer-phone]", has_text=other)
    expect(added).to_contain_text("会社")
    expect(added).to_contain_text("奥様")
    expect(page.locator("[data-testid=customer-phone]")).to_have_count(2)
    # 削除 asks first; キャンセル keeps it, 削除する removes it.
    added.get_by_test_id("phone-delete").click()
    dialog = page.get_by_test_id("customer-confirm")
    expect(dialog).to_contain_text(other)
    page.get_by_test_id("confirm-no").click()
    expect(page.locator("[data-testid=customer-phone]")).to_have_count(2)
    added.get_by_test_id("phone-delete").click()
    page.get_by_test_id("confirm-yes").click()
    expect(page.locator("[data-testid=customer-phone]", has_text=other)).to_have_count(0)

    page.get_by_test_id("family-add").click()
    page.locator("#cu-family-name").fill("電話 花子")
    page.locator("#cu-family-relation").fill("妻")
    page.locator("#cu-family-birthday").fill("1960-05-01")
    page.get_by_test_id("family-save").click()
    member = page.locator("[data-testid=family-member]", has_text="電話 花子")
    expect(member).to_contain_text("妻 電話 花子")
    expect(member).to_contain_text("1960-05-01")
    member.get_by_test_id("family-delete").click()
    page.get_by_test_id("confirm-yes").click()
    expect(page.locator("[data-testid=family-member]")).to_have_count(0)

    # 担当者 from the staff list.
    row = field(page, "assigned_staff_id")
    row.get_by_test_id("field-edit").click()
    row.get_by_test_id("field-input").select_option(label="鈴木 美咲 (内線 204)")
    row.get_by_test_id("field-save").click()
    expect(row.get_by_test_id("field-value")).to_have_text("鈴木 美咲 (内線 204)")
    expect(page.get_by_test_id("customer-staff")).to_have_text("担当: 鈴木 美咲 (内線 204)")

    # Deleting the customer says an admin can restore it, then it leaves search.
    page.get_by_test_id("customer-delete").click()
    expect(page.get_by_test_id("customer-confirm")).to_contain_text("管理者が元に戻せます")
    page.get_by_test_id("confirm-yes").click()
    expect(page.get_by_test_id("customer-search-status")).to_contain_text(
        "電話 五郎 様を削除しました"
    )
    page.locator("#customers-q").fill("でんわ ごろう")
    expect(page.get_by_test_id("customer-search-status")).to_have_text("該当するお客様はいません")


def test_the_customer_view_in_english(page: Any, service: Service) -> None:
    page.goto(service.url)
    page.evaluate("localStorage.setItem('callpop.lang', 'en')")
    log_in(page, service, "sato")
    box = open_customers(page)
    assert page.locator("label[for=customers-q]").inner_text() == "Search customers"
    assert box.get_attribute("placeholder") == "Name, furigana, company or phone number"
    expect(page.get_by_test_id("customer-new")).to_have_text("New customer")
    box.fill("ヤマダ")
    hit(page, YAMADA).click()
    expect(page.get_by_test_id("customer-name")).to_have_text(YAMADA)
    expect(page.get_by_test_id("customer-back")).to_have_text("← Back to search")
    expect(page.get_by_test_id("transaction-open")).to_have_text("Add a transaction")
    expect(page.get_by_test_id("note-open")).to_have_text("Add a note")
    text = page.locator("#customers-view").inner_text()
    for japanese in ("検索に戻る", "取引を追加", "メモを追加", "編集", "担当:"):
        assert japanese not in text, japanese


def test_an_answer_to_an_earlier_search_never_replaces_a_later_one(
    page: Any, service: Service
) -> None:
    log_in(page, service, "sato")
    box = open_customers(page)
    held: list[Any] = []

    def hold_yamada(route: Any) -> None:
        if "q=%E3%83%A4%E3%83%9E%E3%83%80" in route.request.url:  # ヤマダ
            held.append(route)  # answered only after the later search
        else:
            route.continue_()

    page.route("**/api/customers?*", hold_yamada)
    box.fill("ヤマダ")
    # Poll for the held request (each wait lets Playwright run the route handler).
    deadline = time.monotonic() + 10
    while not held:
        assert time.monotonic() < deadline, "the search for ヤマダ was never sent"
        page.wait_for_timeout(20)
    box.fill("たなか")
    expect(hit(page, "田中 和子")).to_have_count(1)
    held[0].fulfill(
        status=200,
        json={
            "query": "ヤマダ",
            "truncated": False,
            "results": [{"id": 1, "name": YAMADA, "furigana": YAMADA_KANA, "matched": "name"}],
        },
    )
    page.unroute("**/api/customers?*")
    # The page's next round trip: anything the late answer did has happened by then.
    page.evaluate("() => fetch('/api/me').then(r => r.status)")
    expect(hit(page, "田中 和子")).to_have_count(1)
    assert hit(page, YAMADA).count() == 0


def test_a_narrow_window_fits_the_customer_page_without_sideways_scrolling(
    new_page: Any, service: Service
) -> None:
    page = new_page(viewport=(400, 800))
    log_in(page, service, "sato")
    page.goto(f"{service.url}#/customers/{customer_id(page, YAMADA)}")
    expect(page.get_by_test_id("customer-name")).to_have_text(f"{YAMADA} 様")
    settle(page)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "customer-page-narrow.png"), full_page=True)
    assert width <= 400, width


def test_a_failing_search_says_so_and_logging_out_leaves_no_customer_in_the_page(
    page: Any, service: Service
) -> None:
    log_in(page, service, "sato")
    box = open_customers(page)
    page.route(
        "**/api/customers?*",
        lambda route: route.fulfill(status=503, json={"detail": "データベースに接続できません"}),
    )
    box.fill("やまだ")
    status = page.get_by_test_id("customer-search-status")
    expect(status).to_have_text("検索できませんでした: データベースに接続できません")
    expect(status).to_have_class(re.compile(r"\bcu-error\b"))
    page.unroute("**/api/customers?*")
    box.fill("やまだ たろう")
    expect(hit(page, YAMADA)).to_have_count(1)
    box.press("ArrowDown")
    box.press("Enter")
    expect(page.get_by_test_id("customer-name")).to_have_text(f"{YAMADA} 様")

    page.locator("#logout-button").click()
    page.locator("#login-screen").wait_for(state="visible")
    text = page.locator("#customers-view").evaluate("e => e.textContent")
    for fact in (YAMADA, YAMADA_KANA, "03-1234-5678", "やまだ"):
        assert fact not in text, fact
    assert page.locator("#customers-q").input_value() == ""


def test_the_timeline_shows_fifty_and_more_on_request(page: Any, service: Service) -> None:
    log_in(page, service, "sato")
    cid = create_customer(page, "履歴 多子", "りれき たこ")
    page.evaluate(
        """async id => {
            for (let n = 1; n <= 55; n++) {
                const r = await fetch('/api/notes', {method: 'POST',
                    headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify({idempotency_key: `many-${id}-${n}`, customer_id: id,
                                          kind: 'other', body: `メモ ${n} 件目`})});
                if (r.status !== 201) throw new Error(`note ${n}: ${r.status}`);
            }
        }""",
        cid,
    )
    page.reload()
    items = page.locator("[data-testid=timeline-item]")
    expect(items).to_have_count(50)
    expect(items.first).to_contain_text("メモ 55 件目")
    page.get_by_test_id("timeline-more").click()
    expect(items).to_have_count(55)
    expect(items.last).to_contain_text("メモ 1 件目")
    expect(page.get_by_test_id("timeline-more")).to_have_count(0)
