"""Presence and 転送メモ (hand-over note), in real Chromium.

Presence comes from the PBX's dialog events, which the browser tier cannot drive (the
demo runs in trunk mode and watches no extension, so its snapshot lists no staff). The
presence map (``popup_ui/static/board.js``) and the strip (``presence.js``) are
therefore imported into a page of the real service and fed messages; on the real page
the server's WebSocket is passed through with the ``staff`` a register-mode server
would send put into its snapshot, and ``staff.presence`` messages slipped in (every
later message's seq moved on by one, so the page sees an unbroken sequence).

The hand-over itself is real: ``callpop call`` rings the service, 佐藤 takes the call
with 応答しました, writes the 転送メモ for 鈴木 in the page, and the server's
``call.updated`` reaches both browsers. Without dialog events a hand-over never gets past
``requested``, so the target's page shows the note box from ``requested`` on.

With ``CALLPOP_UPDATE_SCREENSHOTS=1`` the picture goes to docs/screenshots/handover.png,
else to test-artifacts/.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from tests.browser.conftest import RING_TIMEOUT_MS, Dialer, Service, log_in
from tests.browser.test_after_the_pop import LONG_RING, settle, shots
from tests.browser.test_wire import WS_URL, run_core

pytestmark = pytest.mark.browser

ITO = ("048-234-5678", "伊藤 修")  # one customer on the number, 担当 佐藤 健 (内線 203)
NOTE = "雨漏り再発の件、2階北側"


def demo_staff(service: Service) -> dict[str, dict[str, Any]]:
    """The demo's staff by login, as the snapshot lists them (presence unknown)."""
    with sqlite3.connect(service.data_dir / "callpop-demo.db") as db:
        rows = db.execute("SELECT login, id, name, extension FROM staff").fetchall()
    return {
        login: {"staff_id": id_, "name": name, "extension": ext, "presence": "unknown"}
        for login, id_, name, ext in rows
        if ext
    }


class PresenceFeed:
    """Passes the board's WebSocket through with ``staff`` in every snapshot, and slips
    ``staff.presence`` messages in as a register-mode server would send them."""

    def __init__(self, staff: list[dict[str, Any]]) -> None:
        self.staff = staff
        self.open: list[tuple[Any, dict[str, int]]] = []

    def route(self, ws: Any) -> None:
        server = ws.connect_to_server()
        seq = {"offset": 0, "last": 0}
        self.open.append((ws, seq))

        def from_server(text: str | bytes) -> None:
            message = json.loads(text)
            if message.get("type") == "board.snapshot":
                message["staff"] = self.staff
                seq["offset"] = 0
            else:
                message["seq"] += seq["offset"]
            seq["last"] = message["seq"]
            ws.send(json.dumps(message, ensure_ascii=False))

        server.on_message(from_server)

    def presence(self, changed: list[dict[str, Any]]) -> None:
        for ws, seq in self.open:
            seq["offset"] += 1
            seq["last"] += 1
            message = {"type": "staff.presence", "seq": seq["last"], "staff": changed}
            ws.send(json.dumps(message, ensure_ascii=False))


def active_card(page: Any, text: str) -> Any:
    return page.locator("#active-list [data-testid=call-card]", has_text=text)


# --- the presence map and the strip, without a socket ----------------------------------


def test_core_keeps_the_presence_map(page: Any, service: Service) -> None:
    page.goto(service.url)
    result = run_core(
        page,
        """
        const b = new Board();
        const staff = (id, name, ext, presence) =>
          ({ staff_id: id, name, extension: ext, presence });
        const snap = b.receive({ type: "board.snapshot", seq: 1, calls: [],
          staff: [staff(3, "鈴木 美咲", "204", "idle"), staff(2, "佐藤 健", "203", "unknown"),
                  { name: "no extension" }] });
        const moved = b.receive({ type: "staff.presence", seq: 2,
          staff: [staff(2, "佐藤 健", "203", "busy"), staff(null, null, "299", "sleeping")] });
        const list = b.staffList().map((s) => [s.extension, s.presence]);
        const sato = b.presenceOf(2), nobody = b.presenceOf(99);
        const broken = b.receive({ type: "staff.presence", seq: 3 });
        const gap = b.receive({ type: "staff.presence", seq: 9, staff: [] });
        const again = b.receive({ type: "board.snapshot", seq: 20, calls: [] });
        return { snap: snap.staffChanged, moved: moved.staffChanged, list, sato, nobody,
                 broken: broken.resync, gap: gap.resync, after: b.staffList().length,
                 again: again.staffChanged, seq: b.seq };
        """,
    )
    assert result["snap"] and result["moved"]
    # By extension, in extension order; a presence the page does not know is unknown.
    assert result["list"] == [["203", "busy"], ["204", "idle"], ["299", "unknown"]]
    assert result["sato"] == "busy" and result["nobody"] is None
    assert result["broken"] == "a staff.presence without staff"
    assert result["gap"] == "seq 9 after 2"
    # A snapshot without staff (trunk mode, an older server): nobody is listed.
    assert result["again"] and result["after"] == 0 and result["seq"] == 20


STRIP = """async () => {
  const { Board } = await import("/static/board.js");
  const { renderStaffStrip } = await import("/static/presence.js");
  const { setLanguage } = await import("/static/i18n.js");
  const box = document.createElement("section");
  box.append(document.createElement("ul"));
  document.body.append(box);
  const chips = () => [...box.querySelectorAll("[data-testid=staff-chip]")].map((li) => ({
    text: li.innerText.replace(/\\s+/g, " ").trim(), presence: li.dataset.presence,
    dot: Boolean(li.querySelector(".presence-dot")) }));
  const b = new Board();
  b.receive({ type: "board.snapshot", seq: 1, calls: [], staff: [] });
  renderStaffStrip(box, b.staffList(), { meId: 2 });
  const empty = { hidden: box.hidden, chips: chips() };
  b.receive({ type: "board.snapshot", seq: 5, calls: [], staff: [
    { staff_id: 2, name: "佐藤 健", extension: "203", presence: "idle" },
    { staff_id: 3, name: "鈴木 美咲", extension: "204", presence: "unknown" },
    { staff_id: 4, name: "高橋 誠", extension: "205", presence: "idle" }] });
  b.receive({ type: "staff.presence", seq: 6, staff: [
    { staff_id: 4, name: "高橋 誠", extension: "205", presence: "busy" }] });
  b.receive({ type: "staff.presence", seq: 7, staff: [
    { staff_id: 3, name: "鈴木 美咲", extension: "204", presence: "ringing" }] });
  renderStaffStrip(box, b.staffList(), { meId: 2 });
  const ja = { hidden: box.hidden, chips: chips() };
  setLanguage("en");
  renderStaffStrip(box, b.staffList(), { meId: 2 });
  const en = chips().map((c) => c.text);
  setLanguage("ja");
  box.remove();
  return { empty, ja, en };
}"""


def test_the_strip_draws_the_presence_map(page: Any, service: Service) -> None:
    page.goto(service.url)
    result = page.evaluate(STRIP)
    assert result["empty"] == {"hidden": True, "chips": []}
    assert result["ja"]["hidden"] is False
    assert result["ja"]["chips"] == [
        {"text": "佐藤 健 内線 203 待機中 (自分)", "presence": "idle", "dot": True},
        {"text": "鈴木 美咲 内線 204 呼出中", "presence": "ringing", "dot": True},
        {"text": "高橋 誠 内線 205 通話中", "presence": "busy", "dot": True},
    ]
    assert result["en"] == [
        "佐藤 健 ext. 203 Idle (you)",
        "鈴木 美咲 ext. 204 Ringing",
        "高橋 誠 ext. 205 On a call",
    ]


# --- the real page ------------------------------------------------------------------------


def test_the_demo_shows_no_strip_and_no_presence(page: Any, service: Service, dial: Dialer) -> None:
    """Trunk mode watches no extension: no strip, and 担当 without a presence."""
    log_in(page, service, "sato")
    number, name = ITO
    call = dial.call(number, ring_seconds=4)
    card = active_card(page, name)
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assigned = card.locator("[data-testid=assigned]").inner_text()
    assert assigned.startswith("担当: 佐藤 健 (内線 203)")
    assert page.locator("#staff-strip").is_hidden()
    assert page.locator("[data-testid=staff-chip]").count() == 0
    presence = card.locator("[data-testid=assigned-presence], [data-testid=assigned-warning]")
    assert presence.count() == 0
    dial.finish(call)


def test_the_page_shows_presence_on_the_strip_and_beside_the_assigned_staff(
    page: Any, service: Service, dial: Dialer
) -> None:
    staff = demo_staff(service)
    feed = PresenceFeed([staff["sato"], {**staff["suzuki"], "presence": "idle"}])
    page.route_web_socket(WS_URL, feed.route)
    log_in(page, service, "suzuki")
    strip = page.locator("#staff-strip")
    strip.wait_for()
    chips = page.locator("[data-testid=staff-chip]")
    assert [" ".join(t.split()) for t in chips.all_inner_texts()] == [
        "佐藤 健 内線 203 不明",
        "鈴木 美咲 内線 204 待機中 (自分)",
    ]

    number, name = ITO
    call = dial.call(number, ring_seconds=LONG_RING)
    card = active_card(page, name)
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assigned = card.locator("[data-testid=assigned]")
    assert assigned.locator("[data-testid=assigned-presence]").inner_text() == "不明"
    assert assigned.locator("[data-testid=assigned-warning]").inner_text() == "佐藤の状態は不明です"

    # 佐藤 picks up another line: the card and the strip say so, without a redraw by hand.
    feed.presence([{**staff["sato"], "presence": "busy"}])
    assigned.locator("[data-testid=assigned-warning]", has_text="佐藤は通話中です").wait_for()
    assert assigned.locator("[data-testid=assigned-presence]").inner_text() == "通話中"
    page.locator("[data-testid=staff-chip][data-extension='203'][data-presence=busy]").wait_for()
    feed.presence([{**staff["sato"], "presence": "idle"}])
    page.locator("[data-testid=staff-chip][data-extension='203'][data-presence=idle]").wait_for()
    assert assigned.locator("[data-testid=assigned-presence]").inner_text() == "待機中"
    assert assigned.locator("[data-testid=assigned-warning]").count() == 0

    page.locator(".topbar .lang[data-lang=en]").click()
    assert assigned.locator("[data-testid=assigned-presence]").inner_text() == "Idle"
    feed.presence([{**staff["sato"], "presence": "busy"}])
    assigned.locator("[data-testid=assigned-warning]", has_text="佐藤 is on a call").wait_for()
    page.locator(".topbar .lang[data-lang=ja]").click()
    # The slipped-in messages kept the sequence: the page never had to resync.
    assert page.locator("#conn-status").get_attribute("data-state") == "open"
    dial.finish(call, timeout=LONG_RING + 30)


def test_a_handover_note_reaches_the_colleague(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    staff = demo_staff(service)
    ghost = {"staff_id": 999_999, "name": "退職 済", "extension": "299", "presence": "idle"}
    listed = [staff["sato"], {**staff["suzuki"], "presence": "idle"}]
    sato, suzuki = new_page(), new_page()
    # 佐藤's strip also lists someone the server does not know (left the company since).
    for page, login, extra in ((sato, "sato", [ghost]), (suzuki, "suzuki", [])):
        page.route_web_socket(WS_URL, PresenceFeed(listed + extra).route)
        log_in(page, service, login)

    number, name = ITO
    call = dial.call(number, ring_seconds=LONG_RING)
    for page in (sato, suzuki):
        active_card(page, name).wait_for(timeout=RING_TIMEOUT_MS)
    # Only the person who has the call can leave a 転送メモ.
    assert sato.locator("[data-testid=handover-form]").count() == 0
    active_card(sato, name).get_by_role("button", name="応答しました").click()
    slot = sato.locator(
        "#active-list .call-slot", has=sato.locator("[data-testid=call-card]", has_text=name)
    )
    form = slot.locator("[data-testid=handover-form]")
    form.wait_for()
    assert suzuki.locator("[data-testid=handover-form]").count() == 0
    # The picker: the colleagues of the strip with their presence, never me.
    picker = form.locator("[data-testid=handover-to]")
    assert picker.locator("option").all_inner_texts() == [
        "鈴木 美咲 (内線 204) 待機中",
        "退職 済 (内線 299) 待機中",
    ]

    # Someone the server does not know: its words (404) show in the form.
    picker.select_option(str(ghost["staff_id"]))
    form.locator("[data-testid=handover-input]").fill(NOTE)
    form.get_by_role("button", name="転送メモ").click()
    failed = "転送メモを送れませんでした: 転送先が見つかりません"
    form.locator("[data-testid=handover-status]", has_text=failed).wait_for()
    # A 転送メモ by someone who does not have the call: the server refuses it (409).
    call_id = active_card(suzuki, name).get_attribute("data-call-id")
    refused = suzuki.evaluate(
        """([id, to]) => fetch(`/api/calls/${id}/handover`, {method: "POST",
             headers: {"Content-Type": "application/json"},
             body: JSON.stringify({to_staff_id: to, note: "x"})})
           .then(async (r) => [r.status, (await r.json()).detail])""",
        [call_id, staff["sato"]["staff_id"]],
    )
    assert refused == [409, "この通話を受けた人だけが転送メモを残せます"]

    picker.select_option(str(staff["suzuki"]["staff_id"]))
    assert form.locator("[data-testid=handover-input]").input_value() == NOTE
    form.get_by_role("button", name="転送メモ").click()
    form.locator("[data-testid=handover-status]", has_text="鈴木へ転送メモを送りました").wait_for()

    for page in (sato, suzuki):
        line = active_card(page, name).locator("[data-testid=handover-line]")
        line.wait_for()
        assert line.inner_text() == "佐藤 → 鈴木へ転送"
        assert line.get_attribute("data-handover-state") == "requested"
    # The colleague's card: the note on top, in its box; the sender's has no box.
    note = active_card(suzuki, name).locator("[data-testid=handover-note]")
    assert " ".join(note.inner_text().split()) == f"転送メモ: {NOTE} (佐藤 健より)"
    first = active_card(suzuki, name).locator(":scope > *").first
    assert first.get_attribute("data-testid") == "handover-note"
    assert sato.locator("[data-testid=handover-note]").count() == 0
    # Said once through the live region, as a new call is.
    suzuki.locator("#announcer", has_text=f"佐藤から転送: {NOTE}").wait_for(state="attached")
    settle(suzuki)
    suzuki.screenshot(path=str(shots() / "handover.png"), animations="disabled")
    dial.finish(call, timeout=LONG_RING + 30)


def test_without_presence_the_picker_lists_staff_from_the_server(
    page: Any, service: Service, dial: Dialer
) -> None:
    """Trunk mode: the snapshot lists nobody, so the picker asks GET /api/staff."""
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if r.url.endswith("/api/staff") else None)
    log_in(page, service, "sato")
    number, name = ITO
    call = dial.call(number, ring_seconds=LONG_RING)
    card = active_card(page, name)
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert page.locator("[data-testid=staff-chip]").count() == 0
    card.get_by_role("button", name="応答しました").click()
    slot = page.locator(
        "#active-list .call-slot", has=page.locator("[data-testid=call-card]", has_text=name)
    )
    form = slot.locator("[data-testid=handover-form]")
    form.wait_for()
    picker = form.locator("[data-testid=handover-to]")
    picker.locator("option").first.wait_for(state="attached")
    # Everyone active with an extension, by extension, never me; nothing known of phones.
    assert picker.locator("option").all_inner_texts() == [
        "高橋 誠 (内線 201) 不明",
        "鈴木 美咲 (内線 204) 不明",
    ]
    assert picker.is_enabled()
    assert asked, "the picker did not ask GET /api/staff"
    suzuki = demo_staff(service)["suzuki"]["staff_id"]
    picker.select_option(str(suzuki))
    form.locator("[data-testid=handover-input]").fill(NOTE)
    form.get_by_role("button", name="転送メモ").click()
    form.locator("[data-testid=handover-status]", has_text="鈴木へ転送メモを送りました").wait_for()
    line = card.locator("[data-testid=handover-line]")
    line.wait_for()
    assert line.inner_text() == "佐藤 → 鈴木へ転送"
    dial.finish(call, timeout=LONG_RING + 30)
