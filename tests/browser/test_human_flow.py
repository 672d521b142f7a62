"""The human flow in real Chromium, driven by real dialog events from a real PBX.

The office (``tests/browser/sip_office.py``): Kamailio with dialog presence and a ring-all
group 100 (callpop and 佐藤's desk phone 203), ``callpop serve`` in register mode on the
demo data watching every staff extension, SIPp desk phones 203 and 204 that register,
ring, answer (200/ACK) and take the caller's BYE, and SIPp outside callers with the
numbers of demo customers. Two people, 佐藤 健 (ext 203) and 鈴木 美咲 (ext 204), are
logged in in browser contexts of their own; the test looks at what each of them sees.

* A customer of 佐藤 calls the office number: the pop is on both pages; 佐藤's desk phone
  picks up (SIPp), so 鈴木's page says 「佐藤 健が応答中」; the caller hangs up; the note
  form (open on 佐藤's page since his phone answered) is there with the cursor in it, and
  never on 鈴木's. 佐藤 types, reloads mid-typing (the draft comes
  back), then callpop is stopped, Ctrl+Enter queues the save (the page says it will
  retry), callpop is started again on the same ports and database, and the note is
  stored exactly once. The customer calls again: the pop shows the note; nobody answers
  and the caller gives up: the 不在着信 list on both pages has the call, 佐藤 marks it
  折り返し済み with a note and the list says who and when.
* Hand-over: 佐藤's phone answers a call, 佐藤 leaves a 転送メモ for 鈴木, then 鈴木's
  extension 204 rings with the same caller: 鈴木's page pops the card with the note on
  top. The PBX's transfer is stood in for by a second INVITE from the same caller number
  to 204 (SIPp has no attended transfer; the dialog events callpop sees on 204 are the
  same: an early dialog whose remote identity is the caller).
* The board's core, alone: a call whose ring leg ended as answered elsewhere comes back
  among the active calls when the phone's answer arrives (the PBX's CANCEL usually
  comes before the NOTIFY, so the end-to-end tests mostly take that path).

A caller hangs up (or gives up) when the test sends it an INFO on its call; the test then
waits for what a person sees (the card ending) and says it again if the first one came
before the caller was listening. With ``CALLPOP_UPDATE_SCREENSHOTS=1`` the pictures
(answered-other, note-after-hangup, draft-restored, note-retrying, next-pop,
missed-ringing-group, missed-called-back, handover-ringing .png) go to docs/screenshots/,
else to test-artifacts/.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import RING_TIMEOUT_MS, log_in
from tests.browser.sip_office import Caller, Office, Sipp, running_office
from tests.browser.test_after_the_pop import card, drafts, note_form, settle, shots
from tests.browser.test_wire import run_core

pytestmark = [pytest.mark.browser, pytest.mark.kamailio, pytest.mark.sipp]

ITO = ("0482345678", "048-234-5678", "伊藤 修")  # 担当 佐藤 健 (demo data)
YAMADA = ("0312345678", "03-1234-5678", "山田 太郎")  # 担当 佐藤 健 (demo data)
ANSWER_AFTER_MS = 2500  # the desk phone rings this long, then picks up
TOLD_WAIT_MS = 10_000  # after telling a caller to hang up, before telling it again
SAVE_WAIT_MS = 90_000  # a queued note: callpop restarts and the page's retry comes round


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office]:
    with running_office(tmp_path_factory.mktemp("office")) as running:
        yield running


@pytest.fixture
def watch_office(office: Office, request: pytest.FixtureRequest) -> Iterator[Office]:
    """The office, with callpop's, Kamailio's and SIPp's logs printed if the test fails."""
    yield office
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(office.report())
    office.stop_sipps()  # a failed test's phones and callers do not ring into the next


def active_card(page: Any, text: str) -> Any:
    return page.locator("#active-list [data-testid=call-card]", has_text=text)


def recent_card(page: Any, text: str) -> Any:
    return page.locator("#recent-list [data-testid=call-card][data-state=ended]", has_text=text)


def chip(page: Any, extension: str, presence: str) -> Any:
    """The staff strip's chip of ``extension`` showing ``presence``."""
    return page.locator(
        f"[data-testid=staff-chip][data-extension='{extension}'][data-presence={presence}]"
    )


def tell(caller: Caller, until: Any) -> None:
    """Tell ``caller`` to hang up (or give up) until the locator ``until`` is there."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(3):
        caller.tell()
        try:
            until.wait_for(timeout=TOLD_WAIT_MS)
            return
        except PlaywrightTimeout:
            continue
    until.wait_for(timeout=TOLD_WAIT_MS)  # fails naming what did not show


def snap(page: Any, name: str, *, full_page: bool = False) -> Path:
    settle(page)
    path: Path = shots() / name
    page.screenshot(path=str(path), animations="disabled", full_page=full_page)
    return path


def finish(*sipps: Sipp) -> None:
    for sipp in sipps:
        sipp.finish(timeout=60)


def test_core_brings_back_a_call_answered_after_its_ring_leg_ended(
    watch_office: Office, page: Any
) -> None:
    """Ring-all: the PBX cancels callpop's leg as answered elsewhere, then the phone's
    NOTIFY says who talks: the call is back among the active calls, answered."""
    page.goto(watch_office.url)
    result = run_core(
        page,
        """
        const b = new Board();
        b.receive({ type: "board.snapshot", seq: 1, calls: [] });
        feed(b, "call.ringing", 2, call("a"), card("unknown"));
        feed(b, "call.ended", 3, call("a", "ended", { outcome: "answered_elsewhere" }));
        const away = b.where("a");
        const by = { staff_id: 2, name: "佐藤 健", extension: "203", how: "call-id" };
        const back = feed(b, "call.answered", 4, call("a", "answered", { answered_by: by }));
        const where = b.where("a"), kept = b.entry("a").card.status;
        const end = feed(b, "call.ended", 5,
          call("a", "ended", { outcome: "hangup", answered_by: by, talk_seconds: 42 }));
        return { away, back, where, kept, end, after: b.where("a"), recent: b.recent.length };
        """,
    )
    assert result["away"] == "recent"
    assert result["back"]["changed"] == ["a"] and result["back"]["resync"] is None
    assert result["where"] == "active" and result["kept"] == "unknown"
    assert result["end"]["ended"] == ["a"] and result["end"]["resync"] is None
    assert result["after"] == "recent" and result["recent"] == 1


def test_answered_at_the_desk_phone_the_note_survives_a_reload_and_a_restart(
    watch_office: Office, new_page: Any
) -> None:
    office = watch_office
    digits, number, name = ITO
    sato, suzuki = new_page(), new_page()
    log_in(sato, office.service, "sato")
    log_in(suzuki, office.service, "suzuki")
    for page in (sato, suzuki):  # the dialog subscriptions are live: 203 is idle
        chip(page, "203", "idle").wait_for(timeout=RING_TIMEOUT_MS)

    # --- the pop on both pages; 佐藤's desk phone answers ------------------------------
    phone = office.phone("203", answer_after_ms=ANSWER_AFTER_MS)
    caller = office.call(digits, answered=True)
    for page in (sato, suzuki):
        card(page, name).first.wait_for(timeout=RING_TIMEOUT_MS)
        assigned = card(page, name).first.locator("[data-testid=assigned]").inner_text()
        assert assigned.startswith("担当: 佐藤 健 (内線 203)")
    answered = active_card(suzuki, name).locator(
        "[data-testid=answered-by]", has_text="佐藤 健が応答中"
    )
    answered.wait_for(timeout=RING_TIMEOUT_MS)
    assert active_card(suzuki, name).get_attribute("data-state") == "answered"
    chip(suzuki, "203", "busy").wait_for(timeout=RING_TIMEOUT_MS)
    assert suzuki.get_by_role("button", name="応答しました").count() == 0
    # 佐藤 is the 担当者 and has this very call: no "佐藤は通話中です", nothing to transfer.
    panel = active_card(suzuki, name).locator("[data-testid=assigned]")
    panel.locator("[data-testid=assigned-presence]", has_text="通話中").wait_for()
    assert panel.locator("[data-testid=assigned-warning]").count() == 0
    assert "担当者へ転送" not in panel.inner_text()
    active_card(sato, name).locator(
        "[data-testid=answered-by]", has_text="佐藤 健が応答中"
    ).wait_for()
    snap(suzuki, "answered-other.png")

    # The note form is 佐藤's alone.
    form = note_form(sato, name)
    form.wait_for()
    call_id = form.get_attribute("data-call-id")
    assert form.locator("[data-testid=note-who]").inner_text() == f"{name} 様"
    assert form.locator(".note-when").inner_text().endswith(" · 通話中")
    assert suzuki.locator("[data-testid=note-form]").count() == 0
    sato.locator("[data-testid=handover-form]").wait_for()  # while the talk goes on

    # --- the caller hangs up ---------------------------------------------------------------
    tell(caller, recent_card(suzuki, name).first)
    finish(caller, phone)
    ended = recent_card(suzuki, name).first
    assert "応答: 佐藤 健" in ended.locator("[data-testid=answered-by]").inner_text()
    chip(suzuki, "203", "idle").wait_for(timeout=RING_TIMEOUT_MS)
    # 佐藤's form stays open, the cursor in it; 鈴木 has none.
    card(sato, name).and_(sato.locator("[data-state=ended]")).wait_for(timeout=RING_TIMEOUT_MS)
    assert note_form(sato, name).is_visible()
    assert sato.evaluate("document.activeElement.dataset.testid") == "note-body"
    # The header has the talk time now; nobody hands over a call that is over.
    when = note_form(sato, name).locator(".note-when")
    when.filter(has_text=re.compile(r" · 通話時間 (\d+分)?\d+秒$")).wait_for()
    assert sato.locator("[data-testid=handover-form]").count() == 0
    assert suzuki.locator("[data-testid=note-form]").count() == 0

    # --- type, reload mid-typing: the draft comes back --------------------------------------
    first = f"見積もり依頼、2階北側 {secrets.token_hex(3)}"
    sato.keyboard.type(first)
    form.get_by_role("button", name="見積依頼").click()
    snap(sato, "note-after-hangup.png", full_page=True)
    sato.reload()
    sato.locator("#conn-status[data-state=open]").wait_for()
    # The call ended before the reload: the form comes back on its own, from the draft.
    form = sato.locator(f"[data-testid=note-form][data-call-id='{call_id}']")
    assert form.locator("[data-testid=note-who]").inner_text() == f"{name} 様"
    body = form.locator("[data-testid=note-body]")
    body.wait_for()
    assert body.input_value() == first
    assert form.get_by_role("button", name="見積依頼").get_attribute("aria-pressed") == "true"
    snap(sato, "draft-restored.png")

    # --- callpop stops; Ctrl+Enter queues the save; callpop comes back ------------------------
    office.stop()
    sato.locator("#conn-status:not([data-state=open])").wait_for(timeout=RING_TIMEOUT_MS)
    body.press("End")
    sato.keyboard.type("、来週伺う")
    text = first + "、来週伺う"
    sato.keyboard.press("Control+Enter")
    pending = form.locator("[data-testid=note-status][data-state=pending]")
    pending.wait_for()
    assert pending.inner_text() == "送信待ち (再試行します)"
    [queued] = drafts(sato).values()
    assert queued["sending"] is True and queued["body"] == text
    snap(sato, "note-retrying.png")
    office.start()  # the same ports, the same database
    saved = form.locator("[data-testid=note-status][data-state=saved]")
    saved.wait_for(timeout=SAVE_WAIT_MS)
    assert drafts(sato) == {}
    rows = office.rows(
        "SELECT n.call_id, n.idempotency_key, s.name, c.name FROM notes n"
        " JOIN staff s ON s.id = n.staff_id JOIN customers c ON c.id = n.customer_id"
        " WHERE n.body = ?",
        text,
    )
    assert rows == [(call_id, queued["key"], "佐藤 健", name)]  # stored once, for this call

    # --- the next call from the number pops with the note; nobody answers ---------------------
    phone = office.phone("203", answer_after_ms=None)
    caller = office.call(digits, answered=False)
    for page in (sato, suzuki):
        ringing = page.locator("[data-testid=call-card][data-state=ringing]", has_text=name)
        ringing.wait_for(timeout=RING_TIMEOUT_MS)
        assert text in ringing.locator(".history.notes").inner_text()
    snap(suzuki, "next-pop.png")
    again = ringing.get_attribute("data-call-id")
    gone = f"[data-testid=call-card][data-call-id='{again}'][data-state=ended]"
    tell(caller, suzuki.locator(gone))
    finish(caller, phone)

    # --- 不在着信 on both pages, then 折り返し済み -------------------------------------------
    for page in (sato, suzuki):
        page.get_by_test_id("missed-tab").click()
        page.locator("[data-testid=missed-row]", has_text=number).wait_for(timeout=RING_TIMEOUT_MS)
    row = sato.locator("[data-testid=missed-row]", has_text=number)
    assert name in row.inner_text()
    snap(suzuki, "missed-ringing-group.png")
    row.get_by_role("textbox").fill("伊藤様に折り返し、来週訪問")
    row.get_by_role("button", name="折り返し済み").click()
    row.wait_for(state="detached")
    for page in (sato, suzuki):
        page.get_by_role("button", name="更新").click()
        shown = page.get_by_text("対応済みも表示")
        if not page.locator("#missed-show-resolved").is_checked():
            shown.click()
        done = page.locator("[data-testid=missed-row][data-status=called_back]", has_text=number)
        done.wait_for(timeout=RING_TIMEOUT_MS)
        resolved = done.locator("[data-testid=missed-resolved]").inner_text()
        assert resolved.startswith("折り返し済み: 佐藤 健 (")  # who, and when
        assert "伊藤様に折り返し、来週訪問" in done.inner_text()
    snap(suzuki, "missed-called-back.png")


def test_a_handover_note_pops_on_the_colleague_when_their_phone_rings(
    watch_office: Office, new_page: Any
) -> None:
    office = watch_office
    digits, _number, name = YAMADA
    note = f"雨漏り再発の件、2階北側 {secrets.token_hex(2)}"
    sato, suzuki = new_page(), new_page()
    log_in(sato, office.service, "sato")
    log_in(suzuki, office.service, "suzuki")
    chip(suzuki, "204", "idle").wait_for(timeout=RING_TIMEOUT_MS)

    phone = office.phone("203", answer_after_ms=ANSWER_AFTER_MS)
    caller = office.call(digits, answered=True)
    active_card(sato, name).locator(
        "[data-testid=answered-by]", has_text="佐藤 健が応答中"
    ).wait_for(timeout=RING_TIMEOUT_MS)

    # 佐藤 leaves one line for 鈴木 before transferring on the phone.
    slot = sato.locator("#active-list .call-slot", has=card(sato, name))
    form = slot.locator("[data-testid=handover-form]")
    form.wait_for()
    picker = form.locator("[data-testid=handover-to]")
    [suzuki_id] = [
        option.get_attribute("value")
        for option in picker.locator("option").all()
        if option.inner_text().startswith("鈴木 美咲 (内線 204)")
    ]
    picker.select_option(suzuki_id)
    form.locator("[data-testid=handover-input]").fill(note)
    form.get_by_role("button", name="転送メモ").click()
    form.locator("[data-testid=handover-status]", has_text="鈴木へ転送メモを送りました").wait_for()

    # The transfer: 204 rings with the same caller.
    target = office.phone("204", answer_after_ms=None)
    transferred = office.call(digits, to="204", answered=False)
    chip(suzuki, "204", "ringing").wait_for(timeout=RING_TIMEOUT_MS)
    line = active_card(suzuki, name).locator(
        "[data-testid=handover-line][data-handover-state=ringing]"
    )
    line.wait_for(timeout=RING_TIMEOUT_MS)
    mine = active_card(suzuki, name)
    first = mine.locator(":scope > *").first
    assert first.get_attribute("data-testid") == "handover-note"
    assert " ".join(first.inner_text().split()) == f"転送メモ: {note} (佐藤 健より)"
    assert sato.locator("[data-testid=handover-note]").count() == 0
    snap(suzuki, "handover-ringing.png")

    # 204 stops ringing, 佐藤 hangs up: both phones idle again.
    tell(transferred, chip(suzuki, "204", "idle"))
    tell(caller, chip(suzuki, "203", "idle"))
    finish(transferred, target, caller, phone)
