"""The records in real Chromium: the 通話履歴 search, correcting a note, and
「どちらが応答しましたか」.

The call log is searched on the real service: a customer of its own with 25 calls in
its database (written with the models, as the call log writes them) gives a search that
needs two pages, one of the calls with a note that was corrected once. The number is
typed the way people write it (03-…): the server normalises it.

The which-call prompt needs a phone whose dialog events cannot be told apart, which the
demo (trunk mode, no dialog subscriptions) cannot produce; tests/web/test_which_call.py
drives that through the call service. Here two real calls ring the service, and the
board's WebSocket is passed through with ``call.which`` messages slipped in the way the
server sends them (every later message's seq moved on by one, as test_handover.py does);
the button then claims the real call on the real server.

With ``CALLPOP_UPDATE_SCREENSHOTS=1`` the pictures go to docs/screenshots/
(call-log.png, note-history.png, which-answered.png), else to test-artifacts/.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import RING_TIMEOUT_MS, TOKYO, Dialer, Service, log_in
from tests.browser.test_after_the_pop import settle, shots, unknown_number
from tests.browser.test_wire import WS_URL

pytestmark = pytest.mark.browser

NAKAMURA = "中村 由美"
NUMBER_TYPED = "03-3900-1234"  # how staff type it; stored as E.164
NUMBER_E164 = "+81339001234"
CALLS = 25  # more than one page (calllog.js PAGE_SIZE = 20)
FIRST_TEXT = "屋根の見積を希望\n来週の午前中に電話"
EARLIER_TEXT = "屋根の見積"
RING = 2  # seconds the two calls of the which-call test ring before the PBX cancels
KOBAYASHI = ("03-3900-5678", "+81339005678", "小林 健太")  # one note, for the card test
CARD_NOTE = "排水管の点検を予約"
MARKUP = "<b>雨樋</b>も見積に追加"  # must show as text, never as markup


_SEEDED: dict[str, list[datetime]] = {}  # service URL -> the calls' start times


def _seed_call_log(service: Service) -> list[datetime]:
    """A customer with CALLS calls on the service's database, one an hour up to an hour
    ago; the newest has a note corrected once by 鈴木. Once per service (the session's
    database); the calls' start times."""
    if service.url in _SEEDED:
        return _SEEDED[service.url]
    from sqlalchemy import select

    from db.engine import make_engine, make_session_factory
    from db.models import Call, Customer, CustomerPhone, Note, NoteRevision, Staff

    engine = make_engine(f"sqlite:///{service.data_dir / 'callpop-demo.db'}")
    try:
        with make_session_factory(engine)() as session:
            found = session.scalar(select(Customer.id).where(Customer.name == NAKAMURA))
            staff = {s.login: s.id for s in session.scalars(select(Staff))}
            if found is None:
                customer = Customer(name=NAKAMURA, furigana="なかむら ゆみ", tags=[])
                session.add(customer)
                session.flush()
                found = customer.id
                session.add(
                    CustomerPhone(
                        customer_id=found, e164=NUMBER_E164, raw=NUMBER_TYPED, label="自宅"
                    )
                )
                start = datetime.now(TOKYO).replace(microsecond=0) - timedelta(hours=CALLS + 1)
                ids = []
                for n in range(CALLS):
                    at = start + timedelta(hours=n)
                    answered = n % 5 != 0
                    call = Call(
                        id=uuid.uuid4().hex,
                        sip_call_id=f"{uuid.uuid4().hex}@records.invalid",
                        caller_e164=NUMBER_E164,
                        caller_raw="0339001234",
                        started_at=at,
                        ended_at=at + timedelta(seconds=200),
                        state="ended",
                        outcome="hangup" if answered else "answered_elsewhere",
                        answered_by="203" if answered else None,
                        answered_staff_id=staff["sato"] if answered else None,
                        answered_at=at + timedelta(seconds=8) if answered else None,
                        answered_how="claimed" if answered else None,
                        talk_seconds=192 if answered else None,
                        dialed_e164="+81335550100",
                        customer_id=found,
                    )
                    session.add(call)
                    ids.append(call.id)
                newest = start + timedelta(hours=CALLS - 1)
                note = Note(
                    customer_id=found,
                    staff_id=staff["sato"],
                    body=FIRST_TEXT,
                    call_id=ids[-1],
                    tags=["見積依頼"],
                    created_at=newest + timedelta(minutes=4),
                    updated_at=newest + timedelta(minutes=30),
                )
                session.add(note)
                session.flush()
                session.add(
                    NoteRevision(
                        note_id=note.id,
                        body=EARLIER_TEXT,
                        staff_id=staff["suzuki"],
                        changed_at=newest + timedelta(minutes=30),
                    )
                )
                session.commit()
                number, e164, name = KOBAYASHI
                other = Customer(name=name, furigana="こばやし けんた", tags=[])
                session.add(other)
                session.flush()
                session.add(
                    CustomerPhone(customer_id=other.id, e164=e164, raw=number, label="携帯")
                )
                written = start - timedelta(days=3)
                session.add(
                    Note(
                        customer_id=other.id,
                        staff_id=staff["suzuki"],
                        body=CARD_NOTE,
                        created_at=written,
                        updated_at=written,
                    )
                )
                session.commit()
                _SEEDED[service.url] = [start + timedelta(hours=n) for n in range(CALLS)]
            return _SEEDED[service.url]
    finally:
        engine.dispose()


def _open_call_log(page: Any) -> Any:
    page.locator("[data-testid=calllog-tab]").click()
    view = page.locator("#calllog-view")
    view.wait_for(state="visible")
    return view


def _search(page: Any, number: str) -> None:
    page.locator("[data-testid=calllog-number]").fill(number)
    page.locator("[data-testid=calllog-search]").click()
    page.locator("#calllog-view[data-state=ready] [data-testid=calllog-row]").first.wait_for()


def test_the_call_log_finds_a_number_typed_with_dashes_and_pages(
    page: Any, service: Service
) -> None:
    started = _seed_call_log(service)
    log_in(page, service, "sato")
    _open_call_log(page)
    heading = page.locator("#calllog-heading")
    assert heading.inner_text() == "通話履歴"
    _search(page, NUMBER_TYPED)
    rows = page.locator("[data-testid=calllog-row]")
    assert rows.count() == 20
    pager = page.locator("[data-testid=calllog-page]")
    assert pager.inner_text() == f"1 / 2 ページ（全 {CALLS}件）"
    newest = rows.first.locator("td")
    when = newest.nth(0).inner_text()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", when), when
    assert newest.nth(1).inner_text().splitlines() == [f"{NAKAMURA} 様", NUMBER_TYPED]
    link = newest.nth(1).locator("a")
    assert link.get_attribute("href").endswith("#/customers/" + str(_customer(service)))
    assert newest.nth(2).inner_text() == "代表"
    assert newest.nth(3).inner_text() == "応答: 佐藤 健"
    assert newest.nth(4).inner_text() == "3分12秒"
    assert newest.nth(5).locator("summary").inner_text() == FIRST_TEXT.splitlines()[0]
    outcomes = rows.locator("[data-testid=calllog-outcome]").all_inner_texts()
    assert "他で応答" in outcomes
    shots_dir = shots()
    settle(page)
    page.screenshot(path=str(shots_dir / "call-log.png"), full_page=False)

    prev, nxt = (
        page.locator("[data-testid=calllog-prev]"),
        page.locator("[data-testid=calllog-next]"),
    )
    assert prev.is_disabled() and nxt.is_enabled()
    nxt.click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=calllog-page]').textContent.startsWith('2 /')"
    )
    assert rows.count() == CALLS - 20
    assert nxt.is_disabled() and prev.is_enabled()
    prev.click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=calllog-page]').textContent.startsWith('1 /')"
    )
    assert rows.count() == 20

    # Any spelling of the number finds the same calls; what is no number says so.
    for typed in ("0339001234", "+81 3-3900-1234", "０３－３９００－１２３４"):
        _search(page, typed)
        assert pager.inner_text() == f"1 / 2 ページ（全 {CALLS}件）", typed
    page.locator("[data-testid=calllog-number]").fill("abc")
    page.locator("[data-testid=calllog-search]").click()
    status = page.locator("[data-testid=calllog-status]")
    status.wait_for(state="visible")
    assert status.inner_text().startswith("検索できません")

    # A date range, both days included: the calls of the newest call's day.
    day = started[-1].date()
    page.locator("[data-testid=calllog-from]").fill(day.isoformat())
    page.locator("[data-testid=calllog-to]").fill(day.isoformat())
    _search(page, NUMBER_TYPED)
    that_day = sum(1 for at in started if at.date() == day)
    assert pager.inner_text() == f"1 / {(that_day + 19) // 20} ページ（全 {that_day}件）"
    page.locator(".topbar .lang[data-lang=en]").click()
    assert heading.inner_text() == "Call log"
    assert rows.first.locator("[data-testid=calllog-outcome]").inner_text() in (
        "Answered: 佐藤 健",
        "Answered elsewhere",
    )
    page.locator(".topbar .lang[data-lang=ja]").click()


def _customer(service: Service) -> int:
    with sqlite3.connect(service.data_dir / "callpop-demo.db") as db:
        (found,) = db.execute("SELECT id FROM customers WHERE name = ?", (NAKAMURA,)).fetchone()
    return int(found)


def test_a_note_is_corrected_in_place_and_its_history_shows_who_and_when(
    page: Any, service: Service
) -> None:
    _seed_call_log(service)
    log_in(page, service, "sato")
    _open_call_log(page)
    _search(page, NUMBER_TYPED)
    note = page.locator("[data-testid=calllog-note]").first
    note.locator("summary").click()
    record = note.locator("[data-testid=note-record]")
    assert record.locator("[data-testid=note-record-body]").inner_text() == FIRST_TEXT
    corrected = record.locator("[data-testid=note-corrected]")
    assert corrected.inner_text().startswith("修正済み（鈴木 美咲 ")

    # Esc leaves the note as it was.
    record.locator("[data-testid=note-correct]").click()
    editor = record.locator("[data-testid=note-edit]")
    assert editor.evaluate("e => e === document.activeElement")
    assert editor.input_value() == FIRST_TEXT
    editor.fill("捨てる文")
    editor.press("Escape")
    assert editor.is_hidden()
    assert record.locator("[data-testid=note-record-body]").inner_text() == FIRST_TEXT

    # Ctrl+Enter saves the correction; the text is shown as text.
    record.locator("[data-testid=note-correct]").click()
    editor.fill(MARKUP)
    editor.press("Control+Enter")
    body = record.locator("[data-testid=note-record-body]")
    page.wait_for_function(
        "e => e.textContent === " + json.dumps(MARKUP), arg=body.element_handle()
    )
    assert body.locator("b").count() == 0
    page.wait_for_function(
        "e => e.textContent.startsWith('修正済み（佐藤 健 ')", arg=corrected.element_handle()
    )
    toggle = record.locator("[data-testid=note-history-toggle]")
    assert toggle.inner_text() == "履歴 (2)"
    toggle.click()
    versions = record.locator("[data-testid=note-version]")
    assert versions.count() == 2
    # Newest earlier text first: written by 鈴木 (her correction), replaced by 佐藤 now;
    # then the first text, written by 佐藤, replaced by 鈴木.
    latest, first = versions.nth(0).inner_text(), versions.nth(1).inner_text()
    assert latest.startswith(FIRST_TEXT)
    assert "記入: 鈴木 美咲" in latest and "修正: 佐藤 健" in latest
    assert first.startswith(EARLIER_TEXT)
    assert "記入: 佐藤 健" in first and "修正: 鈴木 美咲" in first
    assert toggle.get_attribute("aria-expanded") == "true"
    settle(page)
    page.locator("[data-testid=calllog-row]").first.screenshot(
        path=str(shots() / "note-history.png")
    )

    # Stored: after a reload the corrected text and its history come back.
    page.reload()
    page.locator("#conn-status[data-state=open]").wait_for()
    _open_call_log(page)
    _search(page, NUMBER_TYPED)
    note = page.locator("[data-testid=calllog-note]").first
    assert note.locator("summary").inner_text() == MARKUP
    note.locator("summary").click()
    assert note.locator("[data-testid=note-history-toggle]").inner_text() == "履歴 (2)"


def test_a_note_on_the_pop_card_is_corrected_and_the_next_pop_shows_it_corrected(
    page: Any, service: Service, dial: Dialer
) -> None:
    _seed_call_log(service)
    number, _, name = KOBAYASHI
    log_in(page, service, "sato")
    first_call = dial.call(number, ring_seconds=20)
    card = page.locator("#active-list [data-testid=call-card]", has_text=name)
    card.wait_for(timeout=RING_TIMEOUT_MS)
    line = card.locator(".history.notes .line.note").first
    record = line.locator("[data-testid=note-record]")
    assert record.locator("[data-testid=note-record-body]").inner_text() == CARD_NOTE
    assert record.locator("[data-testid=note-corrected]").is_hidden()
    record.locator("[data-testid=note-correct]").click()
    editor = record.locator("[data-testid=note-edit]")
    editor.fill("排水管の点検を予約（来週火曜 10時）")
    editor.press("Control+Enter")
    corrected = record.locator("[data-testid=note-corrected]")
    corrected.wait_for()
    assert corrected.inner_text().startswith("修正済み（佐藤 健 ")
    assert record.locator("[data-testid=note-record-body]").inner_text() == (
        "排水管の点検を予約（来週火曜 10時）"
    )
    record.locator("[data-testid=note-history-toggle]").click()
    [version] = record.locator("[data-testid=note-version]").all_inner_texts()
    assert version.startswith(CARD_NOTE) and "記入: 鈴木 美咲" in version
    dial.finish(first_call, timeout=90)

    # The next pop of the number reads the corrected note, and who corrected it.
    second_call = dial.call(number, ring_seconds=4)
    card = page.locator("#active-list [data-testid=call-card][data-state=ringing]", has_text=name)
    card.wait_for(timeout=RING_TIMEOUT_MS)
    record = card.locator(".history.notes [data-testid=note-record]").first
    assert record.locator("[data-testid=note-record-body]").inner_text() == (
        "排水管の点検を予約（来週火曜 10時）"
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-state=ringing] [data-testid=note-corrected]')]"
        ".some(e => e.textContent.startsWith('修正済み（佐藤 健 '))"
    )
    assert record.locator("[data-testid=note-history-toggle]").inner_text() == "履歴 (1)"
    dial.finish(second_call)


# --- どちらが応答しましたか -----------------------------------------------------------------


class WhichFeed:
    """Passes the board's WebSocket through and slips ``call.which`` messages in."""

    def __init__(self) -> None:
        self.open: list[tuple[Any, dict[str, int]]] = []

    def route(self, ws: Any) -> None:
        server = ws.connect_to_server()
        seq = {"offset": 0, "last": 0}
        self.open.append((ws, seq))

        def from_server(text: str | bytes) -> None:
            message = json.loads(text)
            if message.get("type") == "board.snapshot":
                seq["offset"] = 0
            else:
                message["seq"] += seq["offset"]
            seq["last"] = message["seq"]
            ws.send(json.dumps(message, ensure_ascii=False))

        server.on_message(from_server)

    def send(self, message: dict[str, Any]) -> None:
        for ws, seq in self.open:
            seq["offset"] += 1
            seq["last"] += 1
            ws.send(json.dumps({**message, "seq": seq["last"]}, ensure_ascii=False))


def _question(
    question_id: str, staff: dict[str, Any], calls: list[dict[str, Any]], state: str = "open"
) -> dict[str, Any]:
    return {
        "type": "call.which",
        "question_id": question_id,
        "staff_id": staff["id"],
        "name": staff["name"],
        "extension": staff["extension"],
        "asked_at": datetime.now(TOKYO).isoformat(timespec="milliseconds"),
        "state": state,
        "calls": calls,
    }


def _candidate(call_id: str, national: str, e164: str, customer: str | None) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "started_at": datetime.now(TOKYO).isoformat(timespec="milliseconds"),
        "caller": {
            "number": e164,
            "national": national,
            "raw": national.replace("-", ""),
            "display_name": None,
            "withheld": None,
            "source": "from",
        },
        "customer_name": customer,
    }


def test_which_call_asks_only_the_phones_person_and_a_choice_claims_the_call(
    new_page: Any, service: Service, dial: Dialer
) -> None:
    with sqlite3.connect(service.data_dir / "callpop-demo.db") as db:
        staff = {
            login: {"id": id_, "name": name, "extension": ext}
            for login, id_, name, ext in db.execute("SELECT login, id, name, extension FROM staff")
        }
    sato_page, suzuki_page = new_page(), new_page()
    feeds = {"sato": WhichFeed(), "suzuki": WhichFeed()}
    for login, page in (("sato", sato_page), ("suzuki", suzuki_page)):
        page.route_web_socket(WS_URL, feeds[login].route)
        log_in(page, service, login)

    # Two real calls ring, 伊藤 修 (a customer) and a number nobody has, and the PBX
    # cancels both of callpop's legs as answered elsewhere: the ambiguity in question.
    stranger_number = unknown_number()
    for number in ("048-234-5678", stranger_number):
        dial.finish(dial.call(number, ring_seconds=RING, answered_elsewhere=True))
    cards = sato_page.locator("#recent-list [data-testid=call-card]")
    for text in ("伊藤 修", stranger_number):
        cards.filter(has_text=text).first.wait_for(timeout=RING_TIMEOUT_MS)
    # Newest first: these calls, even if the session rang the same number before.
    ito_id = cards.filter(has_text="伊藤 修").first.get_attribute("data-call-id")
    other_id = cards.filter(has_text=stranger_number).first.get_attribute("data-call-id")
    assert ito_id and other_id and cards.count() >= 2
    candidates = [
        _candidate(ito_id, "048-234-5678", "+81482345678", "伊藤 修"),
        _candidate(other_id, stranger_number, "+81" + stranger_number.replace("-", "")[1:], None),
    ]
    # Suzuki's question reaches both browsers; only Suzuki's asks. Sato's reaches both too.
    for feed in feeds.values():
        feed.send(_question("q-suzuki", staff["suzuki"], candidates))
        feed.send(_question("q-sato", staff["sato"], candidates))
    prompt = sato_page.locator("[data-testid=which-prompt]")
    prompt.wait_for()
    suzuki_prompt = suzuki_page.locator("[data-testid=which-prompt]")
    suzuki_prompt.wait_for()
    assert prompt.count() == 1 and suzuki_prompt.count() == 1
    assert prompt.locator("h2").inner_text() == "どちらが応答しましたか"
    assert "内線 203" in prompt.inner_text()
    choices = prompt.locator("[data-testid=which-choice]")
    assert choices.count() == 2
    first = choices.nth(0).inner_text().splitlines()
    assert first[0] == "伊藤 修 様" and first[1] == "048-234-5678" and first[2].endswith("着信")
    assert choices.nth(1).inner_text().splitlines()[0] == stranger_number
    settle(sato_page)
    sato_page.screenshot(path=str(shots() / "which-answered.png"))

    # Sato picks 伊藤 修: the real claim; the prompt goes, every browser sees who has it.
    choices.nth(0).click()
    prompt.wait_for(state="detached")
    answered = suzuki_page.locator("#recent-list [data-testid=call-card]", has_text="伊藤 修")
    suzuki_page.wait_for_function(
        "() => [...document.querySelectorAll('#recent-list [data-testid=call-card]')]"
        ".some(c => c.textContent.includes('伊藤 修') && c.textContent.includes('応答: 佐藤 健'))"
    )
    assert answered.first.get_attribute("data-state") == "ended"
    # The server's closed question removes Suzuki's prompt (the other call was taken).
    for feed in feeds.values():
        feed.send(_question("q-suzuki", staff["suzuki"], [], state="closed"))
    suzuki_prompt.wait_for(state="detached")
