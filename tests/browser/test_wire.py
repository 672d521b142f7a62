"""The browser's side of the /ws protocol (docs/protocol.md): snapshot, then seq.

The protocol core (``popup_ui/static/board.js``) is imported on its own into a page
of the real service and fed messages, the way the SIP core is fed bytes. The page
itself is then checked against the real service through Playwright's WebSocket
routing: the traffic is passed through unchanged except where the test loses a
message or the whole connection, as a flaky network would.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
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

WS_URL = re.compile(r"/ws$")


def wait_until(page: Any, condition: Callable[[], bool], timeout_ms: int, what: str) -> None:
    """Let the page run (and Playwright deliver its events) until ``condition``."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_ms} ms waiting for {what}")
        page.wait_for_timeout(50)


# --- the protocol core, without a socket ------------------------------------------------

# Runs in a page of the service: imports the module the board uses, then the test's
# script, which returns what the board answered. call(id, state) builds a call object
# as the server sends it. (Put together here, not eval'd in the page: the page's
# Content-Security-Policy allows no eval.)
CORE = """async () => {
  const { Board } = await import("/static/board.js");
  const call = (id, state = "ringing", extra = {}) => ({
    id, state, outcome: null, ended_at: null,
    started_at: `2026-11-22T10:3${id.length}:05+09:00`,
    caller: { number: "+81312345678", national: "03-1234-5678", raw: "0312345678" },
    dialed_line: { number: "+81335550100", national: "03-3555-0100", name: "代表" },
    ...extra,
  });
  const card = (status) => ({ status, customers: [] });
  const shown = (change) => ({
    changed: [...change.changed].sort(), fresh: change.fresh, ended: change.ended,
    resync: change.resync,
  });
  // One call message into board b, as the board answered it.
  const feed = (b, type, seq, c, cardValue) =>
    shown(b.receive({ type, seq, call: c, card: cardValue }));
  SCRIPT
}"""


def run_core(page: Any, script: str) -> Any:
    return page.evaluate(CORE.replace("SCRIPT", script))


@pytest.fixture
def core_page(page: Any, service: Service) -> Any:
    page.goto(service.url)  # the login page: same origin, no session needed for /static
    return page


def test_core_resyncs_on_a_gap_a_repeat_or_a_missing_snapshot(core_page: Any) -> None:
    result = run_core(
        core_page,
        """
        const b = new Board();
        b.connectionOpened();
        const early = feed(b, "call.ringing", 1, call("a"), null);
        const snap = shown(b.receive({ type: "board.snapshot", seq: 7, calls: [] }));
        const next = feed(b, "call.ringing", 8, call("a"), card("unknown"));
        const gap = feed(b, "call.answered", 10, call("a", "answered"));
        const seqAfterGap = b.seq;
        const repeat = feed(b, "call.answered", 8, call("a", "answered"));
        const noSeq = feed(b, "call.answered", undefined, call("a", "answered"));
        const stateAfter = b.entry("a").call.state;
        const future = feed(b, "call.transferred", 9, call("a"));
        const after = feed(b, "call.answered", 10, call("a", "answered"));
        return { early, snap, next, gap, seqAfterGap, repeat, noSeq, stateAfter, future, after,
                 seq: b.seq, state: b.entry("a").call.state };
        """,
    )
    assert result["early"]["resync"] == "call.ringing before board.snapshot"
    assert result["snap"]["resync"] is None
    assert result["next"] == {"changed": ["a"], "fresh": ["a"], "ended": [], "resync": None}
    assert result["gap"]["resync"] == "seq 10 after 8"
    # A message that does not fit changes nothing; the next snapshot puts things right.
    assert result["seqAfterGap"] == 8 and result["stateAfter"] == "ringing"
    assert result["repeat"]["resync"] == "seq 8 after 8"
    assert result["noSeq"]["resync"] == "seq missing after 8"
    # A type this page does not know yet counts in seq and shows nothing.
    assert result["future"] == {"changed": [], "fresh": [], "ended": [], "resync": None}
    assert result["after"]["resync"] is None
    assert result["seq"] == 10 and result["state"] == "answered"


def test_core_snapshot_replaces_the_active_set(core_page: Any) -> None:
    result = run_core(
        core_page,
        """
        const b = new Board();
        b.connectionOpened();
        b.receive({ type: "board.snapshot", seq: 1, calls: [
          { call: call("kept"), card: card("matched") },
          { call: call("gone"), card: card("unknown") },
        ] });
        feed(b, "call.ended", 2, call("old", "ended", { outcome: "abandoned" }));
        // Disconnected; a new connection's snapshot no longer has "gone", has a new call,
        // and has "kept" without a card (the card shown stays).
        b.connectionOpened();
        const change = shown(b.receive({ type: "board.snapshot", seq: 40, calls: [
          { call: call("kept"), card: null },
          { call: call("new"), card: card("unknown") },
        ] }));
        return {
          change,
          active: [...b.active.keys()],
          recent: b.recent.map((e) => [e.call.id, e.call.state, e.call.outcome]),
          keptCard: b.entry("kept").card.status,
          seq: b.seq,
        };
        """,
    )
    # Only the call this page had not shown pops (notification, live region).
    assert result["change"]["fresh"] == ["new"]
    assert result["change"]["ended"] == ["gone"]
    assert result["change"]["resync"] is None
    assert result["active"] == ["kept", "new"]
    # Ended while we were away: in the recent list, newest first, no outcome claimed.
    assert result["recent"] == [["gone", "ended", None], ["old", "ended", "abandoned"]]
    assert result["keptCard"] == "matched"
    assert result["seq"] == 40


def test_core_updated_replaces_a_ringing_or_ended_call(core_page: Any) -> None:
    result = run_core(
        core_page,
        """
        const b = new Board();
        b.connectionOpened();
        b.receive({ type: "board.snapshot", seq: 1, calls: [] });
        feed(b, "call.ringing", 2, call("a"), card("degraded"));
        const late = feed(b, "call.updated", 3, call("a"), card("matched"));
        const ringingCard = b.entry("a").card.status;
        feed(b, "call.updated", 4, call("a", "ringing", { display: "x" }), null);
        const keptCard = b.entry("a").card.status;
        const hungUp = call("a", "ended", { outcome: "hangup" });
        feed(b, "call.ended", 5, hungUp);
        const afterEnd = feed(b, "call.updated", 6, hungUp, card("unknown"));
        const unknownCall = feed(b, "call.updated", 7, call("zz", "ended"), null);
        const answeredUnknown = feed(b, "call.answered", 8, call("yy", "answered"));
        return { late, ringingCard, keptCard, afterEnd, unknownCall, answeredUnknown,
                 where: b.where("a"), endedCard: b.entry("a").card.status };
        """,
    )
    assert result["late"]["changed"] == ["a"] and result["late"]["fresh"] == []
    assert result["ringingCard"] == "matched"
    assert result["keptCard"] == "matched"  # call.updated without a card keeps the card
    assert result["afterEnd"]["changed"] == ["a"]
    assert result["where"] == "recent" and result["endedCard"] == "unknown"
    # An update for a call this page never had (it ended before we came): nothing to do.
    assert result["unknownCall"] == {"changed": [], "fresh": [], "ended": [], "resync": None}
    # But an answer for a call that no snapshot had is a sign we missed something.
    assert result["answeredUnknown"]["resync"] == "call.answered for a call that is unknown"


# --- the page against the real service ---------------------------------------------------


def test_a_gap_in_seq_makes_the_page_reconnect_and_resync(
    page: Any, service: Service, dial: Dialer, page_log: Any
) -> None:
    connections: list[Any] = []

    def pass_through(ws: Any) -> None:
        number = len(connections)
        connections.append(ws)
        server = ws.connect_to_server()

        def from_server(text: str | bytes) -> None:
            message = json.loads(text)
            if number == 0 and message.get("type") == "call.ringing":
                # As if the message before it had been lost on the way.
                message["seq"] += 1
                text = json.dumps(message, ensure_ascii=False)
            ws.send(text)

        server.on_message(from_server)

    page.route_web_socket(WS_URL, pass_through)
    log_in(page, service)
    assert len(connections) == 1

    call = dial.call("03-1234-5678", ring_seconds=6)
    # The page notices, leaves, comes back, and the new snapshot brings the call.
    wait_until(page, lambda: len(connections) == 2, RING_TIMEOUT_MS, "a second connection")
    card = ringing_card(page, "山田 太郎")
    card.wait_for(timeout=RING_TIMEOUT_MS)
    page.locator("#conn-status[data-state=open]").wait_for()
    warnings = [line for line in page_log.lines if line.startswith("console.warning")]
    assert any(re.search(r"seq \d+ after \d+", line) for line in warnings), page_log.lines
    assert page.locator("[data-testid=call-card]").count() == 1
    dial.finish(call)
    ended_card(page, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)


def test_a_call_that_ended_while_offline_goes_to_recent_without_an_outcome(
    page: Any, service: Service, dial: Dialer
) -> None:
    reachable = {"yes": True}
    open_now: list[tuple[Any, Any]] = []

    def network(ws: Any) -> None:
        if not reachable["yes"]:
            ws.close()  # refused, as an unreachable server would be
            return
        open_now.append((ws, ws.connect_to_server()))

    page.route_web_socket(WS_URL, network)
    log_in(page, service)
    call = dial.call("03-1234-5678", ring_seconds=3)
    ringing_card(page, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)

    # The network drops; the call ends meanwhile; the network comes back.
    reachable["yes"] = False
    for ws, server in open_now:
        server.close()
        ws.close()
    page.locator("#conn-status[data-state=reconnecting]").wait_for()
    dial.finish(call)
    assert ringing_card(page, "山田 太郎").count() == 1  # the page cannot know yet
    reachable["yes"] = True

    card = ended_card(page, "山田 太郎")
    card.wait_for(timeout=60_000)  # the back-off after a few refused attempts
    page.locator("#conn-status[data-state=open]").wait_for()
    assert ringing_card(page, "山田 太郎").count() == 0
    # How it ended is unknown: no outcome is claimed, not even 着信は終了しました.
    assert card.locator("[data-testid=outcome], .ended-banner").count() == 0
    text = card.inner_text()
    for claim in ("不在着信", "他の人が応答しました", "応答なし", "通話終了", "着信は終了しました"):
        assert claim not in text
    assert page.title() == "着信ボード — callpop"
