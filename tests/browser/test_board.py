"""The staff board in real Chromium against the real service and real SIP calls.

Each test drives the page the way staff do (the login form, the board, reload)
while ``callpop call`` rings the service's SIP listener, and asserts what a person
would see. Calls from one test end before the next one starts (the ``dial``
fixture waits for them).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    RING_TIMEOUT_MS,
    XSS_NAME,
    XSS_NUMBER,
    Dialer,
    Service,
    ended_card,
    log_in,
    ringing_card,
)

pytestmark = pytest.mark.browser


# --- login ------------------------------------------------------------------------


def test_wrong_password_shows_the_japanese_error(page: Any, service: Service) -> None:
    page.goto(service.url)
    assert page.evaluate("document.documentElement.lang") == "ja"
    page.locator("#login-id").fill(service.login)
    page.locator("#login-password").fill("not-the-password")
    page.locator("#login-submit").click()

    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert error.inner_text() == "ログインIDまたはパスワードが違います"
    assert page.locator("#board-screen").is_hidden()


def test_a_busy_server_is_not_called_a_wrong_password(page: Any, service: Service) -> None:
    # The server answers 503 when it is already checking as many passwords as it will at
    # once (tests/web/test_auth.py makes it do so); the page must not blame the password.
    page.route(
        "**/api/session",
        lambda route: route.fulfill(
            status=503, headers={"Retry-After": "1"}, json={"detail": "busy"}
        ),
    )
    page.goto(service.url)
    page.locator("#login-id").fill(service.login)
    page.locator("#login-password").fill(service.password)
    page.locator("#login-submit").click()
    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert error.inner_text() == "ただいま混み合っています。少し待ってからもう一度お試しください"


def test_a_session_ended_elsewhere_brings_back_the_login(board: Any) -> None:
    # Logging out in another tab ends the session on the server: the board's WebSocket
    # is closed and the page, asking who it is, lands on the login with nothing shown.
    other = board.context.new_page()
    try:
        other.goto(board.url)
        assert (
            other.evaluate("fetch('/api/session', {method: 'DELETE'}).then(r => r.status)") == 204
        )
    finally:
        other.close()
    board.locator("#login-screen").wait_for(state="visible", timeout=15_000)
    assert board.locator("#board-screen").is_hidden()


def test_login_shows_the_board_with_staff_and_connection(page: Any, service: Service) -> None:
    page.goto(service.url)
    assert page.locator("#login-screen h1").inner_text() == "ログイン"
    log_in(page, service)

    me = page.evaluate("fetch('/api/me').then(r => r.json())")
    assert me["name"] in page.locator("#staff-name").inner_text()
    assert page.locator("#conn-status").inner_text() == "接続中"
    assert page.locator(".board-title").inner_text() == "着信ボード"
    ui = page.evaluate("fetch('/api/ui').then(r => r.json())")
    assert ui["company_name"] and page.locator("#company-name").inner_text() == ui["company_name"]
    assert page.title() == "着信ボード — callpop"


def test_logout_returns_to_login_and_clears_the_board(
    board: Any, service: Service, dial: Dialer
) -> None:
    call = dial.call("03-1234-5678", ring_seconds=8)
    ringing_card(board, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)

    board.get_by_role("button", name="ログアウト").click()
    board.locator("#login-screen").wait_for(state="visible")
    assert "山田" not in board.locator("body").inner_text()
    assert board.locator("[data-testid=call-card]").count() == 0
    # The session cookie is gone: the API refuses this browser now.
    assert board.evaluate("fetch('/api/calls/active').then(r => r.status)") == 401
    dial.finish(call)


def test_logged_out_browser_gets_the_login_and_no_customer_data(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    call = dial.call("03-1234-5678", ring_seconds=8)
    watcher = new_page()
    log_in(watcher, service)
    ringing_card(watcher, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)

    stranger = new_page()
    stranger.goto(service.url)
    stranger.locator("#login-screen").wait_for(state="visible")
    assert stranger.locator("#board-screen").is_hidden()
    assert "山田" not in stranger.content()
    assert stranger.evaluate("fetch('/api/calls/active').then(r => r.status)") == 401
    # Its WebSocket is refused too (no session cookie): it never opens.
    outcome = stranger.evaluate(
        """() => new Promise(resolve => {
            const ws = new WebSocket(`ws://${location.host}/ws`);
            ws.onopen = () => resolve("open");
            ws.onerror = () => resolve("error");
            ws.onclose = () => resolve("close");
        })"""
    )
    assert outcome in ("error", "close")
    dial.finish(call)


# --- the pop --------------------------------------------------------------------------


def test_call_pops_the_customer_card_survives_reload_and_greys_out(
    board: Any, dial: Dialer
) -> None:
    call = dial.call("03-1234-5678", ring_seconds=10)
    card = ringing_card(board, "山田 太郎")
    card.wait_for(timeout=RING_TIMEOUT_MS)

    text = card.inner_text()
    assert "山田 太郎" in text and "様" in text
    assert "やまだ たろう" in text
    assert "佐藤 健" in text
    assert "内線 203" in text
    assert "担当者へ転送 (内線 203)" in text
    assert "03-1234-5678" in text
    assert "¥58,000" in text
    assert "雨漏り修繕" in text
    assert "お茶は緑茶" in text
    assert re.search(r"\d{4}-\d{2}-\d{2}\s+雨漏り修繕", text), text
    assert board.title() == "着信: 山田 太郎 様"

    # A reload while it rings: the new connection's snapshot brings the card back.
    board.reload()
    board.locator("#conn-status[data-state=open]").wait_for()
    card = ringing_card(board, "山田 太郎")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert board.locator("[data-testid=call-card][data-state=ringing]").count() == 1

    # The caller gives up (CANCEL without a Reason): the card greys out as a missed call.
    dial.finish(call)
    ended = ended_card(board, "山田 太郎")
    ended.wait_for(timeout=RING_TIMEOUT_MS)
    assert "不在着信 — 相手が切りました" in ended.inner_text()
    assert ringing_card(board, "山田 太郎").count() == 0
    assert "state-ended" in (ended.get_attribute("class") or "")
    assert board.title() == "着信ボード — callpop"


SPY_NOTIFICATIONS = """
(() => {
  // Headless Chromium has no notification centre to look at and never hides a tab:
  // record what goes through the real Notification API, and let the test say when
  // the tab counts as hidden (window.__hidden), the way a background tab would.
  const Real = window.Notification;
  window.__shown = [];
  window.__hidden = false;
  class Recorded extends Real {
    constructor(title, options) {
      super(title, options);
      window.__shown.push({ title, body: (options && options.body) || "" });
    }
  }
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  Recorded.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Recorded;
  Object.defineProperty(Document.prototype, "hidden", { get: () => window.__hidden });
})();
"""


def test_desktop_notification_only_when_the_tab_is_hidden(
    page: Any, service: Service, dial: Dialer
) -> None:
    page.context.grant_permissions(["notifications"], origin=service.url.rstrip("/"))
    page.add_init_script(SPY_NOTIFICATIONS)
    log_in(page, service)
    assert page.locator("#notify-state").inner_text() == "デスクトップ通知: オン"
    assert page.locator("#notify-button").is_hidden()

    # Visible tab: the card and the title, no notification.
    call = dial.call("090-9999-0000", ring_seconds=2, answered_elsewhere=True)
    ringing_card(page, "090-9999-0000").wait_for(timeout=RING_TIMEOUT_MS)
    assert page.title() == "着信: 090-9999-0000"
    dial.finish(call)
    ended_card(page, "090-9999-0000").wait_for(timeout=RING_TIMEOUT_MS)
    assert page.evaluate("window.__shown") == []

    page.evaluate("window.__hidden = true")
    call = dial.call("03-1234-5678", ring_seconds=4)
    page.wait_for_function("() => window.__shown.length > 0", timeout=RING_TIMEOUT_MS)
    shown = page.evaluate("window.__shown")
    assert shown[0]["title"] == "着信: 山田 太郎 様"
    assert "03-1234-5678" in shown[0]["body"] and "内線 203" in shown[0]["body"]
    assert page.title() == "着信: 山田 太郎 様"
    dial.finish(call)


def test_notification_permission_is_asked_with_a_button(board: Any) -> None:
    # Never asked on load: a fresh browser still has the default, and the button offers it.
    assert board.evaluate("Notification.permission") == "default"
    assert board.locator("#notify-button").inner_text() == "デスクトップ通知を有効にする"


def test_narrow_window_fits_the_card_without_sideways_scrolling(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    narrow = new_page(viewport=(390, 760))
    log_in(narrow, service)
    call = dial.call("03-1234-5678", ring_seconds=4)
    card = ringing_card(narrow, "山田 太郎")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert card.locator("[data-testid=customer-name]").is_visible()
    assert narrow.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    dial.finish(call)


def test_unknown_number_then_answered_elsewhere(board: Any, dial: Dialer) -> None:
    call = dial.call("090-9999-0000", ring_seconds=4, answered_elsewhere=True)
    card = ringing_card(board, "090-9999-0000")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert "未登録の番号" in card.inner_text()

    dial.finish(call)
    ended = ended_card(board, "090-9999-0000")
    ended.wait_for(timeout=RING_TIMEOUT_MS)
    assert "他の人が応答しました" in ended.inner_text()


def test_withheld_caller_shows_hitsuuchi(board: Any, dial: Dialer) -> None:
    call = dial.call("anonymous", ring_seconds=4, withheld="anonymous")
    card = ringing_card(board, "非通知")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert "番号が通知されていません" in card.inner_text()
    assert board.title() == "着信: 非通知"
    dial.finish(call)
    ended_card(board, "非通知").wait_for(timeout=RING_TIMEOUT_MS)


@contextlib.contextmanager
def table_renamed(db_path: Path, table: str) -> Iterator[None]:
    """The service's database loses ``table`` (as a damaged database would), then gets
    it back."""
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        connection.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
        connection.commit()
        try:
            yield
        finally:
            connection.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
            connection.commit()


def test_a_broken_database_still_pops_the_number_with_a_reason_staff_can_read(
    board: Any, dial: Dialer, service: Service
) -> None:
    with table_renamed(service.data_dir / "callpop-demo.db", "customer_phones"):
        call = dial.call("03-1234-5678", ring_seconds=4)
        card = ringing_card(board, "03-1234-5678")
        card.wait_for(timeout=RING_TIMEOUT_MS)
        warning = card.get_by_role("alert")
        assert warning.inner_text() == "データベースに接続できないため、番号だけを表示しています"
        # The technical detail is there for whoever fixes it, as a tooltip only.
        assert "customer_phones" in (warning.get_attribute("title") or "")
        assert "山田" not in card.inner_text()
        dial.finish(call)
    ended_card(board, "03-1234-5678").wait_for(timeout=RING_TIMEOUT_MS)


def test_shared_number_offers_a_pick_list(board: Any, dial: Dialer) -> None:
    call = dial.call("045-123-4567", ring_seconds=6)
    card = ringing_card(board, "045-123-4567")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    picker = card.locator("[data-testid=picker]")
    assert "この番号のお客様: 2名" in picker.inner_text()
    # Toggle buttons in a labelled group, not tabs without tab panels.
    assert picker.locator("[role=tab], [role=tablist]").count() == 0
    assert picker.get_by_role("group", name="この番号のお客様: 2名").count() == 1
    ichiro = picker.get_by_role("button", name=re.compile("田中 一郎"))
    kazuko = picker.get_by_role("button", name=re.compile("田中 和子"))
    assert ichiro.get_attribute("aria-pressed") == "true"
    assert kazuko.get_attribute("aria-pressed") == "false"

    kazuko.click()
    name = card.locator("[data-testid=customer-name] .name-text")
    assert name.inner_text() == "田中 和子"
    assert kazuko.get_attribute("aria-pressed") == "true"
    assert ichiro.get_attribute("aria-pressed") == "false"
    # The card was drawn again, and the keyboard is still on the button just pressed.
    assert "田中 和子" in board.evaluate("document.activeElement.innerText")

    ichiro.focus()
    board.keyboard.press("Space")
    assert name.inner_text() == "田中 一郎"
    assert ichiro.get_attribute("aria-pressed") == "true"
    assert kazuko.get_attribute("aria-pressed") == "false"
    dial.finish(call)


def test_every_card_shows_the_office_line_that_was_called(board: Any, dial: Dialer) -> None:
    # The demo names 03-3555-0100 「代表」 in [numbering.lines].
    call = dial.call("03-1234-5678", ring_seconds=4, line="03-3555-0100")
    card = ringing_card(board, "山田 太郎")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert card.locator("[data-testid=dialed-line]").inner_text() == "着信回線: 代表"

    dial.finish(call)
    ended = ended_card(board, "山田 太郎")
    ended.wait_for(timeout=RING_TIMEOUT_MS)
    assert ended.locator("[data-testid=dialed-line]").inner_text() == "着信回線: 代表"
    # Closed to its short form, it still says which line rang.
    ended.locator("[data-testid=card-toggle]").click()
    assert "compact" in (ended.get_attribute("class") or "")
    assert ended.locator("[data-testid=dialed-line]").inner_text() == "着信回線: 代表"

    board.get_by_role("button", name="English").first.click()
    assert ended.locator("[data-testid=dialed-line]").inner_text() == "Line: 代表"


def test_copy_extension_puts_it_on_the_clipboard(board: Any, dial: Dialer) -> None:
    board.context.grant_permissions(["clipboard-read", "clipboard-write"])
    call = dial.call("03-1234-5678", ring_seconds=6)
    card = ringing_card(board, "山田 太郎")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    card.get_by_role("button", name="内線番号をコピー").click()
    card.get_by_text("内線 203 をコピーしました").wait_for()
    assert board.evaluate("navigator.clipboard.readText()") == "203"
    dial.finish(call)


def test_internal_caller_shows_the_extension(board: Any, dial: Dialer) -> None:
    call = dial.call("204", ring_seconds=4)
    card = ringing_card(board, "内線 204")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert "社内からの着信" in card.inner_text()
    dial.finish(call)


def test_customer_markup_is_shown_as_text(board: Any, dial: Dialer, page_log: Any) -> None:
    call = dial.call(XSS_NUMBER, ring_seconds=5)
    card = ringing_card(board, XSS_NUMBER)
    card.wait_for(timeout=RING_TIMEOUT_MS)

    name = card.locator("[data-testid=customer-name] .name-text")
    assert name.inner_text() == XSS_NAME
    assert "<script>x</script>" in card.inner_text()
    # Nothing the customer record holds became an element or ran.
    assert card.locator("img[src=x], script, b, i").count() == 0
    assert page_log.dialogs == []
    dial.finish(call)
    ended_card(board, XSS_NUMBER).wait_for(timeout=RING_TIMEOUT_MS)
    assert page_log.dialogs == []


# --- the WebSocket's origin check ----------------------------------------------------------


@pytest.fixture
def foreign_origin(tmp_path: Path) -> Any:
    """A second tiny web server on another port: a page of another origin."""
    (tmp_path / "index.html").write_text("<!doctype html><title>elsewhere</title>", "utf-8")
    from tests.processes import free_tcp_port, stop_process

    port = free_tcp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}/", proc
    finally:
        stop_process(proc)


OPEN_WS = """url => new Promise(resolve => {
    const ws = new WebSocket(url);
    ws.onopen = () => { resolve("open"); ws.close(); };
    ws.onerror = () => resolve("error");
    ws.onclose = () => resolve("close");
})"""


def test_websocket_from_another_origin_is_refused(
    new_page: Any, service: Service, foreign_origin: Any
) -> None:
    url, proc = foreign_origin
    page = new_page()
    log_in(page, service)  # the browser holds a valid session cookie for 127.0.0.1
    ws_url = f"ws://127.0.0.1:{service.http_port}/ws"
    assert page.evaluate(OPEN_WS, ws_url) == "open"  # same origin: accepted

    # Cookies are per host, not per port: the foreign page's handshake carries the
    # session too, so only the Origin check stands between it and the pops.
    elsewhere = page.context.new_page()
    deadline_error = None
    for _ in range(100):  # wait for http.server to listen (bounded)
        try:
            elsewhere.goto(url)
            break
        except Exception as exc:  # connection refused while it starts
            deadline_error = exc
            elsewhere.wait_for_timeout(100)
    else:
        pytest.fail(f"the foreign-origin server did not start: {deadline_error}; rc={proc.poll()}")
    assert elsewhere.evaluate("location.origin") != service.url.rstrip("/")
    assert elsewhere.evaluate(OPEN_WS, ws_url) in ("error", "close")


# --- language ------------------------------------------------------------------------------


def test_english_toggle_is_remembered(board: Any, dial: Dialer) -> None:
    board.get_by_role("button", name="English").first.click()
    assert board.evaluate("document.documentElement.lang") == "en"
    assert board.locator("#conn-status").inner_text() == "Connected"
    assert board.get_by_role("button", name="Log out").is_visible()

    call = dial.call("03-1234-5678", ring_seconds=4)
    card = ringing_card(board, "山田 太郎")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert "Transfer to assigned staff (ext. 203)" in card.inner_text()
    assert "Transactions" in card.inner_text()

    board.reload()
    board.locator("#conn-status[data-state=open]").wait_for()
    assert board.locator(".board-title").inner_text() == "Call board"
    dial.finish(call)
    ended = ended_card(board, "山田 太郎")
    ended.wait_for(timeout=RING_TIMEOUT_MS)
    assert "Missed — the caller hung up" in ended.inner_text()
