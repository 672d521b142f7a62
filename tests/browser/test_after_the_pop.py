"""After the pop, in real Chromium: who answered, the note, missed calls.

Two people (the demo's 佐藤 健 and 鈴木 美咲) are logged in in browser contexts of
their own while ``callpop call`` rings the real service. 応答しました on one browser
shows on the other and refuses the other's claim; the note form opens only for the
person who has the call, keeps its draft through a reload and an unreachable
server, and what it saves shows in the next pop of that number; a call nobody
answered is in 不在着信 until someone marks it called back.

With ``CALLPOP_UPDATE_SCREENSHOTS=1`` the pictures go to docs/screenshots/
(claimed.png, note-form.png, missed-calls.png), else to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import (
    REPO,
    RING_TIMEOUT_MS,
    TOKYO,
    Dialer,
    Service,
    log_in,
)
from tests.browser.test_wire import WS_URL, run_core, wait_until

pytestmark = pytest.mark.browser

ITO = ("048-234-5678", "伊藤 修")  # one customer on the number, 担当 佐藤
YOSHIDA = ("03-3456-7890", "吉田 茂")
LONG_RING = 40  # seconds: the call rings (or stays answered) while the test works


def shots() -> Any:
    update = os.environ.get("CALLPOP_UPDATE_SCREENSHOTS") == "1"
    target = REPO / "docs" / "screenshots" if update else REPO / "test-artifacts"
    target.mkdir(parents=True, exist_ok=True)
    return target


def settle(page: Any) -> None:
    page.evaluate("document.fonts.ready.then(() => true)")
    page.wait_for_function(
        """() => document.getAnimations().every(
            a => a.playState !== "running" || a.effect.getTiming().iterations === Infinity)"""
    )


def unknown_number() -> str:
    """A number no customer has, new for every run (the service's call log grows)."""
    return f"06-7{secrets.randbelow(1000):03d}-{secrets.randbelow(10000):04d}"


def card(page: Any, text: str) -> Any:
    """The card of a call showing ``text``, wherever it is on the board."""
    return page.locator("[data-testid=call-card]", has_text=text)


def note_form(page: Any, text: str) -> Any:
    """The note form under the card of the call showing ``text``."""
    slot = page.locator(".call-slot", has=card(page, text))
    return slot.locator("[data-testid=note-form]")


def drafts(page: Any) -> dict[str, Any]:
    """The note drafts this browser keeps in localStorage, by key."""
    found: dict[str, Any] = page.evaluate(
        """() => Object.fromEntries(Object.keys(localStorage)
            .filter(k => k.startsWith("callpop.note."))
            .map(k => [k, JSON.parse(localStorage.getItem(k))]))"""
    )
    return found


def customer_notes(page: Any, number: str) -> list[dict[str, Any]]:
    """The notes on file for the one customer of ``number``, through the API."""
    found = page.evaluate(
        "n => fetch('/api/lookup?number=' + encodeURIComponent(n)).then(r => r.json())", number
    )
    [customer] = found["customers"]
    detail = page.evaluate(
        "id => fetch('/api/customers/' + id).then(r => r.json())", customer["id"]
    )
    return list(detail["notes"])


class HeldSocket:
    """Passes the board's WebSocket through, holding the server's messages while
    ``holding``: the page goes on showing the board as it was."""

    def __init__(self) -> None:
        self.holding = False
        self.held: list[tuple[Any, str | bytes]] = []

    def route(self, ws: Any) -> None:
        server = ws.connect_to_server()

        def from_server(text: str | bytes) -> None:
            if self.holding:
                self.held.append((ws, text))
            else:
                ws.send(text)

        server.on_message(from_server)

    def release(self) -> None:
        self.holding = False
        for ws, text in self.held:
            ws.send(text)
        self.held.clear()


# --- the protocol core --------------------------------------------------------------------


def test_core_takes_an_answer_for_an_ended_call(page: Any, service: Service) -> None:
    page.goto(service.url)
    result = run_core(
        page,
        """
        const b = new Board();
        b.receive({ type: "board.snapshot", seq: 1, calls: [] });
        feed(b, "call.ringing", 2, call("a"), card("unknown"));
        feed(b, "call.ended", 3, call("a", "ended", { outcome: "answered_elsewhere" }));
        const by = { staff_id: 2, name: "佐藤 健", extension: "203", how: "claimed" };
        const late = feed(b, "call.answered", 4,
          call("a", "ended", { outcome: "answered_elsewhere", answered_by: by }));
        // Ended before this page came: nothing to show, and no reason to resync.
        const gone = feed(b, "call.answered", 5, call("old", "ended", { answered_by: by }));
        return { late, gone, where: b.where("a"), who: b.entry("a").call.answered_by.name,
                 state: b.entry("a").call.state, seq: b.seq };
        """,
    )
    assert result["late"]["changed"] == ["a"] and result["late"]["resync"] is None
    assert result["where"] == "recent" and result["state"] == "ended"
    assert result["who"] == "佐藤 健"
    assert result["gone"] == {"changed": [], "fresh": [], "ended": [], "resync": None}
    assert result["seq"] == 5


# --- 応答しました ---------------------------------------------------------------------------


def test_a_claim_shows_on_the_other_browser_and_refuses_its_claim(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    number, name = "03-1234-5678", "山田 太郎"
    sato = new_page()
    log_in(sato, service, "sato")
    suzuki = new_page()
    socket = HeldSocket()
    suzuki.route_web_socket(WS_URL, socket.route)
    log_in(suzuki, service, "suzuki")

    call = dial.call(number, ring_seconds=LONG_RING)
    for page in (sato, suzuki):
        card(page, name).wait_for(timeout=RING_TIMEOUT_MS)
    # 鈴木's page hears nothing more for a moment: it still offers 応答しました when
    # 佐藤 has already taken the call.
    socket.holding = True
    card(sato, name).get_by_role("button", name="応答しました").click()
    sato_card = card(sato, name)
    sato_card.locator("[data-testid=answered-by]", has_text="佐藤 健が応答中").wait_for()
    assert sato_card.get_attribute("data-state") == "answered"

    suzuki_card = card(suzuki, name)
    suzuki_card.get_by_role("button", name="応答しました").click()
    refusal = suzuki_card.locator("[data-testid=claim-error]")
    refusal.wait_for()
    assert refusal.inner_text() == "佐藤 健が応答済みです"

    socket.release()
    suzuki_card.locator("[data-testid=answered-by]", has_text="佐藤 健が応答中").wait_for()
    assert suzuki_card.get_by_role("button", name="応答しました").count() == 0
    assert suzuki_card.get_attribute("data-state") == "answered"

    # The note form is the claimer's alone, with the cursor in its text box.
    form = note_form(sato, name)
    form.wait_for()
    assert sato.evaluate("document.activeElement.dataset.testid") == "note-body"
    assert form.locator("[data-testid=note-who]").inner_text() == "山田 太郎 様"
    assert suzuki.locator("[data-testid=note-form]").count() == 0
    settle(suzuki)
    suzuki.screenshot(path=str(shots() / "claimed.png"), animations="disabled")

    dial.finish(call, timeout=LONG_RING + 30)
    ended = suzuki.locator("#recent-list [data-testid=call-card][data-state=ended]", has_text=name)
    ended.locator("[data-testid=answered-by]", has_text="応答: 佐藤 健").wait_for(
        timeout=RING_TIMEOUT_MS
    )
    # The claimer's form stays where it was, open, after the call ended.
    card(sato, name).and_(sato.locator("[data-state=ended]")).wait_for(timeout=RING_TIMEOUT_MS)
    assert note_form(sato, name).is_visible()
    assert sato.locator("#active-list [data-testid=note-form]").count() == 1


# --- the note ----------------------------------------------------------------------------------


def test_a_note_draft_survives_a_reload_and_shows_in_the_next_pop(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    number, name = ITO
    body_start = f"屋根の見積もり依頼 {secrets.token_hex(3)}"
    page = new_page()
    log_in(page, service, "sato")
    call = dial.call(number, ring_seconds=LONG_RING)
    card(page, name).get_by_role("button", name="応答しました").click(timeout=RING_TIMEOUT_MS)

    form = note_form(page, name)
    form.wait_for()
    page.keyboard.type(body_start)
    form.get_by_role("button", name="見積依頼").click()
    follow_up = (datetime.now(TOKYO).date() + timedelta(days=7)).isoformat()
    form.locator("[data-testid=note-follow]").fill(follow_up)
    form.locator("[data-testid=note-body]").press("End")
    page.keyboard.type("、来週")
    [stored] = drafts(page).values()
    assert stored["body"] == body_start + "、来週" and stored["tags"] == ["見積依頼"]
    key = stored["key"]

    settle(page)
    page.screenshot(path=str(shots() / "note-form.png"), animations="disabled", full_page=True)

    page.reload()
    page.locator("#conn-status[data-state=open]").wait_for()
    form = note_form(page, name)
    body = form.locator("[data-testid=note-body]")
    body.wait_for()
    assert body.input_value() == body_start + "、来週"
    assert form.get_by_role("button", name="見積依頼").get_attribute("aria-pressed") == "true"
    assert form.get_by_role("button", name="予約").get_attribute("aria-pressed") == "false"
    assert form.locator("[data-testid=note-follow]").input_value() == follow_up
    assert card(page, name).get_attribute("data-state") == "answered"

    body.press("End")
    page.keyboard.type("に伺う")
    page.keyboard.press("Control+Enter")
    status = form.locator("[data-testid=note-status][data-state=saved]")
    status.wait_for()
    assert status.inner_text() == "保存しました"
    text = body_start + "、来週に伺う"
    assert form.locator("[data-testid=saved-note]").inner_text().count(text) == 1
    assert drafts(page) == {}  # confirmed: the draft is gone

    [saved] = [n for n in customer_notes(page, number) if n["body"] == text]
    assert saved["staff_name"] == "佐藤 健"
    dial.finish(call, timeout=LONG_RING + 30)

    # The next call from the number pops with the note.
    again = dial.call(number, ring_seconds=4)
    ringing = page.locator("[data-testid=call-card][data-state=ringing]", has_text=name)
    ringing.wait_for(timeout=RING_TIMEOUT_MS)
    assert text in ringing.locator(".history.notes").inner_text()
    assert key  # the same key was kept through the reload (checked by the server's one row)
    dial.finish(again)


def test_a_note_saved_while_the_server_is_unreachable_is_stored_once(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    number, name = YOSHIDA
    text = f"雨漏りの相談 {secrets.token_hex(3)}"
    page = new_page()
    log_in(page, service, "sato")
    sent: list[dict[str, Any]] = []

    def network(route: Any) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        if len(sent) <= 2:
            route.abort("connectionrefused")  # never reached the server
        elif len(sent) == 3:
            route.fetch()  # stored, but the answer is lost on the way back
            route.fulfill(status=502, body="bad gateway")
        else:
            route.continue_()

    page.route("**/api/notes", network)
    call = dial.call(number, ring_seconds=LONG_RING)
    card(page, name).get_by_role("button", name="応答しました").click(timeout=RING_TIMEOUT_MS)
    form = note_form(page, name)
    form.wait_for()
    page.keyboard.type(text)
    page.keyboard.press("Control+Enter")

    status = form.locator("[data-testid=note-status]")
    form.locator("[data-testid=note-status][data-state=pending]").wait_for()
    assert status.inner_text() == "送信待ち (再試行します)"
    assert form.locator("[data-testid=note-body]").get_attribute("readonly") is not None
    assert list(drafts(page).values())[0]["sending"] is True
    form.locator("[data-testid=note-status][data-state=saved]").wait_for(timeout=60_000)

    assert len(sent) == 4
    assert len({attempt["idempotency_key"] for attempt in sent}) == 1
    assert [n["body"] for n in customer_notes(page, number)].count(text) == 1
    assert drafts(page) == {}
    dial.finish(call, timeout=LONG_RING + 30)


def test_an_unknown_caller_registered_from_the_note_pops_by_name(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    number = unknown_number()
    new_name = f"新規 太郎{secrets.randbelow(1000)}"
    page = new_page()
    log_in(page, service, "sato")
    call = dial.call(number, ring_seconds=LONG_RING)
    card(page, number).get_by_role("button", name="応答しました").click(timeout=RING_TIMEOUT_MS)
    form = note_form(page, number)
    form.wait_for()
    assert form.locator("[data-testid=note-who]").inner_text() == number
    register = form.locator("[data-testid=new-customer]")
    assert register.is_visible() and "新規顧客として登録" in register.inner_text()
    assert number in register.inner_text()
    page.keyboard.type("初めてのお問い合わせ。外壁塗装")
    form.get_by_role("button", name="問い合わせ").click()
    register.get_by_label("お名前").fill(new_name)
    register.get_by_label("ふりがな").fill("しんき たろう")
    form.get_by_role("button", name="保存").click()
    form.locator("[data-testid=note-status][data-state=saved]").wait_for()
    dial.finish(call, timeout=LONG_RING + 30)

    again = dial.call(number, ring_seconds=4)
    ringing = page.locator("[data-testid=call-card][data-state=ringing]", has_text=number)
    ringing.wait_for(timeout=RING_TIMEOUT_MS)
    assert ringing.locator("[data-testid=customer-name]").inner_text().startswith(new_name)
    assert "外壁塗装" in ringing.inner_text()
    dial.finish(again)


def test_a_call_picked_up_elsewhere_is_claimed_after_it_ended(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    number = unknown_number()
    page = new_page()
    log_in(page, service, "sato")
    # A call picked up elsewhere ends at once; the person who picked up says so after.
    dial.finish(dial.call(number, ring_seconds=1, answered_elsewhere=True))
    ended = page.locator("#recent-list [data-testid=call-card][data-state=ended]", has_text=number)
    ended.first.wait_for(timeout=RING_TIMEOUT_MS)
    ended.first.get_by_role("button", name="応答しました").click()
    form = note_form(page, number)
    form.wait_for()
    # The ended call comes to the main column with its form; it is an unknown number.
    assert page.locator("#active-list [data-testid=note-form]").count() == 1
    assert form.locator("[data-testid=new-customer]").is_visible()
    moved = page.locator("#active-list [data-testid=call-card][data-state=ended]", has_text=number)
    moved.locator("[data-testid=answered-by]", has_text="応答: 佐藤 健").wait_for()
    # An empty note is not sent.
    form.get_by_role("button", name="保存").click()
    assert form.locator("[data-testid=note-status]").inner_text() == "内容を入力してください"
    # 破棄 asks first, then forgets the draft.
    form.get_by_role("button", name="破棄").click()
    form.get_by_role("button", name="破棄する").click()
    assert note_form(page, number).count() == 0
    assert drafts(page) == {}


# --- 不在着信 ---------------------------------------------------------------------------------


def test_a_missed_call_is_listed_until_called_back(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    number = unknown_number()
    page = new_page()
    log_in(page, service, "sato")
    for _ in range(2):  # the caller tries twice and gives up each time
        dial.finish(dial.call(number, ring_seconds=1))
    page.locator(
        "#recent-list [data-testid=call-card][data-state=ended]", has_text=number
    ).first.wait_for(timeout=RING_TIMEOUT_MS)

    page.get_by_test_id("missed-tab").click()
    assert page.get_by_test_id("missed-tab").get_attribute("aria-pressed") == "true"
    assert page.locator("#board-view").is_hidden()
    row = page.locator("[data-testid=missed-row]", has_text=number)
    row.wait_for(timeout=RING_TIMEOUT_MS)
    wait_until(
        page,
        lambda: row.locator("[data-testid=missed-attempts]").inner_text() == "2回",
        RING_TIMEOUT_MS,
        "both attempts in the row",
    )
    assert page.locator("#missed-count").inner_text().isdigit()
    settle(page)
    page.screenshot(path=str(shots() / "missed-calls.png"), animations="disabled")

    row.get_by_role("textbox").fill("見積の件で折り返し済み")
    row.get_by_role("button", name="折り返し済み").click()
    row.wait_for(state="detached")

    page.get_by_text("対応済みも表示").click()
    done = page.locator("[data-testid=missed-row][data-status=called_back]", has_text=number)
    done.wait_for()
    assert "折り返し済み: 佐藤 健" in done.locator("[data-testid=missed-resolved]").inner_text()
    assert "見積の件で折り返し済み" in done.inner_text()
    assert done.get_by_role("button").count() == 0


def test_the_missed_list_refreshes_when_a_call_ends_unanswered(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    page = new_page()
    log_in(page, service, "suzuki")
    page.get_by_test_id("missed-tab").click()
    page.locator("#missed-view").wait_for()
    number = unknown_number()
    # A real ring switches the page back to the board; the list is reloaded anyway.
    dial.finish(dial.call(number, ring_seconds=1))
    page.locator(
        "#recent-list [data-testid=call-card][data-state=ended]", has_text=number
    ).first.wait_for(timeout=RING_TIMEOUT_MS)
    assert page.locator("#board-view").is_visible()
    assert page.locator("#missed-view").is_hidden()
    page.locator("#missed-list [data-testid=missed-row]", has_text=number).wait_for(
        state="attached", timeout=RING_TIMEOUT_MS
    )
