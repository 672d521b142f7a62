"""Follow-ups and openers in real Chromium against the real service (``callpop demo``).

A call from the demo's 山田 太郎 様 pops with the conversation openers the records
give (his follow-up due today, his wife's birthday this week, the 雨漏り修繕 of a few
months ago), in Japanese and in English, with 連絡可能 and a name that opens his page.
The フォロー tab lists the demo's follow-ups due today (the overdue one marked), 完了
takes one off the list and the badge; the English strings come from i18n.js.

Uses a service of its own on a fresh demo database: ticking follow-ups off changes the
records the other browser tests' cards show.

With ``CALLPOP_UPDATE_SCREENSHOTS=1`` the pictures go to docs/screenshots/
(pop-openers.png, followups.png), else to test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Dialer, Service, log_in, run_service
from tests.browser.test_after_the_pop import settle, shots

pytestmark = pytest.mark.browser

RING_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def own_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with run_service(tmp_path_factory.mktemp("callpop-followups")) as svc:
        yield svc


def english(page: Any, service: Service) -> None:
    page.goto(service.url)
    page.evaluate("localStorage.setItem('callpop.lang', 'en')")
    log_in(page, service)


def test_the_pop_opens_the_conversation(new_page: Any, own_service: Service) -> None:
    ja = new_page()
    log_in(ja, own_service)
    en = new_page()
    english(en, own_service)
    dialer = Dialer(own_service)
    try:
        call = dialer.call("03-1234-5678", ring_seconds=10, name="ヤマダ タロウ")
        cards = {}
        for lang, page in (("ja", ja), ("en", en)):
            card = page.locator("[data-testid=call-card][data-state=ringing]", has_text="山田 太郎")
            card.wait_for(timeout=RING_TIMEOUT_MS)
            cards[lang] = card
        openers = cards["ja"].get_by_test_id("opener")
        expect(openers).to_have_count(3)
        expect(openers.nth(0)).to_have_text(re.compile(r"^本日フォローの予定です: 奥様より電話"))
        expect(openers.nth(1)).to_have_text(
            re.compile(r"^妻 山田 花子様のお誕生日が\d+月\d+日です$")
        )
        expect(openers.nth(2)).to_have_text(re.compile(r"^\d+月の雨漏り修繕、その後いかがですか$"))
        expect(cards["ja"].get_by_test_id("contact-hours")).to_have_text("連絡可能: 平日 13-18時")
        expect(cards["ja"].get_by_test_id("customer-name")).to_have_text("山田 太郎様")
        en_openers = cards["en"].get_by_test_id("opener")
        expect(en_openers).to_have_count(3)
        expect(en_openers.nth(0)).to_have_text(re.compile(r"^Follow-up due today: 奥様より電話"))
        expect(en_openers.nth(2)).to_have_text(
            re.compile(r"^How is everything since the 雨漏り修繕 in \w{3}\?$")
        )
        expect(cards["en"].get_by_test_id("contact-hours")).to_have_text("Reachable: 平日 13-18時")
        settle(ja)
        picture = shots() / "pop-openers.png"
        ja.screenshot(path=str(picture), animations="disabled")
        assert picture.stat().st_size > 10_000
        # The name is a button of its own (not inside the card's heading) to his page.
        name = cards["ja"].get_by_test_id("open-customer")
        expect(name).to_have_attribute("title", "顧客ページ")
        assert name.evaluate("b => b.parentElement.closest('button') === null")
        name.focus()
        ja.keyboard.press("Enter")
        expect(ja).to_have_url(re.compile(r"#/customers/\d+$"))
        dialer.finish(call)
    finally:
        dialer.close()


def test_todays_follow_ups_and_done(new_page: Any, own_service: Service) -> None:
    page = new_page()
    log_in(page, own_service)
    badge = page.locator("#followups-count")
    expect(badge).to_have_text("3")
    page.get_by_test_id("followups-tab").click()
    items = page.get_by_test_id("followup-item")
    expect(items).to_have_count(3)
    overdue = items.nth(0)
    expect(overdue).to_contain_text("田中 和子 様")
    expect(overdue.get_by_test_id("followup-overdue")).to_have_text("期限切れ")
    yamada = page.locator("[data-testid=followup-item]", has_text="山田 太郎 様")
    expect(yamada).to_contain_text("やまだ たろう")
    expect(yamada).to_contain_text("奥様より電話。玄関ドアの建て付けが悪いとのこと。")
    expect(yamada.get_by_test_id("followup-overdue")).to_have_count(0)
    expect(page.get_by_test_id("dormant-item").first).to_be_visible()
    settle(page)
    picture = shots() / "followups.png"
    page.screenshot(path=str(picture), animations="disabled")
    assert picture.stat().st_size > 10_000

    yamada.get_by_test_id("followup-done").click()
    expect(yamada).to_have_count(0)
    expect(items).to_have_count(2)
    expect(badge).to_have_text("2")
    # The focus goes on to the next item's 完了, for the next one to be ticked off.
    expect(items.nth(1).get_by_test_id("followup-done")).to_be_focused()

    # The dormant list keeps one rank when asked.
    rank = page.get_by_test_id("dormant-rank")
    rank.select_option("A")
    dormant = page.get_by_test_id("dormant-item")
    expect(dormant.first).to_contain_text("ランク A")
    for text in dormant.all_inner_texts():
        assert "ランク A" in text

    # A name opens the customer's page.
    items.nth(0).get_by_test_id("followup-customer").click()
    expect(page).to_have_url(re.compile(r"#/customers/\d+$"))

    # English: the same list, in English; what was ticked off stays off.
    en = new_page()
    english(en, own_service)
    en.get_by_test_id("followups-tab").click()
    en_items = en.get_by_test_id("followup-item")
    expect(en_items).to_have_count(2)
    expect(en.locator("#followups-today-title")).to_contain_text("Today's follow-ups")
    expect(en_items.nth(0).get_by_test_id("followup-overdue")).to_have_text("Overdue")
    expect(en_items.nth(0).get_by_test_id("followup-done")).to_have_text("Done")
    expect(en.locator("#followups-dormant-title")).to_have_text("Dormant customers")
