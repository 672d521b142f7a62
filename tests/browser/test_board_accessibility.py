"""The board for keyboard and screen-reader users, in real Chromium with real calls.

A new call must not take away what staff are on: the focused control, the scroll
position, a screen reader's place. So each call's card stays in the page and only
the card of the call that changed is drawn again; a new call is said once through
a live region of its own; no control sits inside another; ended calls open and
close from the keyboard.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import (
    RING_TIMEOUT_MS,
    Dialer,
    Service,
    ended_card,
    log_in,
    ringing_card,
)

pytestmark = pytest.mark.browser

# The page fills its live region a moment after a call arrives (app.js
# ANNOUNCE_DELAY_MS, 100 ms); a second announcement for the same call would come
# as soon. Waiting this long after the last event shows that none came.
ANNOUNCE_SETTLE_MS = 600

# Every text a live region of the page is given (but the connection status, whose
# 接続中 / 再接続中… is meant to be heard), as [region id, text].
RECORD_LIVE_REGIONS = """() => {
  window.__spoken = [];
  const observer = new MutationObserver((records) => {
    const regions = new Set();
    for (const record of records) {
      const node = record.target.nodeType === Node.ELEMENT_NODE
        ? record.target : record.target.parentElement;
      const region = node && node.closest("[aria-live]");
      if (region && region.id !== "conn-status") regions.add(region);
    }
    for (const region of regions) {
      const text = region.textContent.trim();
      if (text) window.__spoken.push([region.id, text]);
    }
  });
  observer.observe(document.body, { subtree: true, childList: true, characterData: true });
}"""

INTERACTIVE = (
    "button, a[href], input, select, textarea, summary, [role=button], [role=link], "
    "[role=tab], [role=checkbox], [role=switch], [tabindex]:not([tabindex='-1'])"
)


def test_focus_and_scroll_position_survive_a_new_call(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    # One column: the ringing list sits above 最近の着信, so a new call grows the page
    # above what staff are looking at.
    page = new_page(viewport=(390, 700))
    log_in(page, service)
    dial.finish(dial.call("03-1234-5678", ring_seconds=1))
    ended = ended_card(page, "山田 太郎")
    ended.wait_for(timeout=RING_TIMEOUT_MS)

    copy = ended.get_by_role("button", name="内線番号をコピー")
    copy.focus()  # scrolls it into view, below the empty ringing list
    before = page.evaluate(
        """() => {
            window.__focused = document.activeElement;
            return { top: window.__focused.getBoundingClientRect().top, y: window.scrollY };
        }"""
    )
    assert before["y"] > 0, "the page should be scrolled for this test to mean something"

    call = dial.call("090-9999-0000", ring_seconds=4)
    new_card = ringing_card(page, "090-9999-0000")
    new_card.wait_for(state="attached", timeout=RING_TIMEOUT_MS)
    after = page.evaluate(
        """() => ({
            same: document.activeElement === window.__focused,
            connected: window.__focused.isConnected,
            top: window.__focused.getBoundingClientRect().top,
        })"""
    )
    assert after["same"] and after["connected"], "the focused button was replaced or lost focus"
    # What staff were looking at did not move (the new card went in above it).
    assert abs(after["top"] - before["top"]) <= 2, (before, after)
    assert new_card.evaluate("e => e.getBoundingClientRect().top") < after["top"]
    dial.finish(call)


def test_the_live_region_says_each_new_call_once(board: Any, dial: Dialer) -> None:
    board.evaluate(RECORD_LIVE_REGIONS)

    call = dial.call("03-1234-5678", ring_seconds=3)
    ringing_card(board, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)
    dial.finish(call)
    ended_card(board, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)

    call = dial.call("090-9999-0000", ring_seconds=2, answered_elsewhere=True)
    ringing_card(board, "090-9999-0000").wait_for(timeout=RING_TIMEOUT_MS)
    dial.finish(call)
    ended_card(board, "090-9999-0000").wait_for(timeout=RING_TIMEOUT_MS)
    board.wait_for_timeout(ANNOUNCE_SETTLE_MS)

    spoken = board.evaluate("window.__spoken")
    assert [text for _region, text in spoken] == ["着信: 山田 太郎 様", "着信: 090-9999-0000"]
    assert len({region for region, _text in spoken}) == 1
    # The cards are not in a live region: their updates are not read out again.
    assert board.locator("[aria-live] [data-testid=call-card]").count() == 0


def test_no_control_sits_inside_another(board: Any, dial: Dialer) -> None:
    # An ended customer call closed to its short form (its copy button is still in
    # the customer data), an ended unknown call opened, and a shared number ringing
    # with its picker: every kind of control the board draws.
    dial.finish(dial.call("03-1234-5678", ring_seconds=1))
    ended_card(board, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)
    dial.finish(dial.call("090-9999-0000", ring_seconds=1, answered_elsewhere=True))
    ended_card(board, "090-9999-0000").wait_for(timeout=RING_TIMEOUT_MS)
    call = dial.call("045-123-4567", ring_seconds=6)
    ringing_card(board, "045-123-4567").locator("[data-testid=picker]").wait_for(
        timeout=RING_TIMEOUT_MS
    )
    assert board.locator("#recent-list [data-testid=call-card]").count() == 2

    assert board.locator("button button, button a, a button").count() == 0
    nested = board.evaluate(
        """selector => [...document.querySelectorAll(selector)]
            .filter(el => el.parentElement && el.parentElement.closest(selector))
            .map(el => el.outerHTML.slice(0, 160))""",
        INTERACTIVE,
    )
    assert nested == []
    # Each ended card still has its own control: a button in its heading.
    toggles = board.locator("#recent-list h3 > button[data-testid=card-toggle]")
    assert toggles.count() == 2
    dial.finish(call)


def test_an_ended_card_opens_and_closes_from_the_keyboard(board: Any, dial: Dialer) -> None:
    dial.finish(dial.call("03-1234-5678", ring_seconds=1))
    card = ended_card(board, "山田 太郎")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    # Its heading's button names the caller and controls the details beside it.
    toggle = card.get_by_role("button", name=re.compile("山田 太郎 様"))
    assert toggle.get_attribute("data-testid") == "card-toggle"
    details = toggle.get_attribute("aria-controls")
    assert details and card.locator(f"[id='{details}']").count() == 1

    def focused_is_toggle() -> bool:
        return bool(
            board.evaluate(
                "document.activeElement && document.activeElement.dataset.testid === 'card-toggle'"
            )
        )

    copy = card.get_by_role("button", name="内線番号をコピー")
    # The call that just ended opens by itself.
    assert toggle.get_attribute("aria-expanded") == "true" and copy.is_visible()

    toggle.focus()
    board.keyboard.press("Enter")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert copy.count() == 0  # the short form has no transfer controls
    assert focused_is_toggle()

    board.keyboard.press("Space")
    assert toggle.get_attribute("aria-expanded") == "true"
    assert copy.is_visible() and focused_is_toggle()

    board.keyboard.press("Escape")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert focused_is_toggle()

    # Escape from a control inside the open card closes it and comes back to its heading.
    board.keyboard.press("Enter")
    assert toggle.get_attribute("aria-expanded") == "true"
    copy.focus()
    board.keyboard.press("Escape")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert focused_is_toggle()
