"""A burst of calls at the board, and a customer with nothing on file.

The burst is sent from this process with the same UAC as ``callpop call``
(``telephony.dialer.UacCall``), a hundred calls from one socket in a worker thread,
each ringing a few seconds and then cancelled; the real call after it is a
``callpop call`` process. No timing is asserted: the board must show the real call,
and the connection must still be the one it opened.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from telephony.dialer import DialError, UacCall
from telephony.transport import drive
from tests.browser.conftest import (
    BARE_NAME,
    BARE_NUMBER,
    RING_TIMEOUT_MS,
    Dialer,
    Service,
    ended_card,
    log_in,
    ringing_card,
)

pytestmark = pytest.mark.browser

BURST = 100
BURST_RING_SECONDS = 8.0
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.I | re.M)


class _Router(asyncio.DatagramProtocol):
    """One UDP socket for every call of the burst; responses go by Call-ID."""

    def __init__(self) -> None:
        self.inboxes: dict[str, asyncio.Queue[bytes]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        match = _CALL_ID.search(data)
        if match and (inbox := self.inboxes.get(match.group(1).strip().decode())) is not None:
            inbox.put_nowait(data)


async def _burst(sip_port: int, results: list[str]) -> None:
    loop = asyncio.get_running_loop()
    transport, router = await loop.create_datagram_endpoint(_Router, local_addr=("127.0.0.1", 0))
    local = ("127.0.0.1", int(transport.get_extra_info("sockname")[1]))
    target = ("127.0.0.1", sip_port)

    async def one(n: int) -> None:
        call = UacCall(
            f"0505{n:07d}",  # IP-phone numbers: nobody's customer
            target=target,
            local=local,
            ring_seconds=BURST_RING_SECONDS,
            call_id=f"burst-{n}-{time.monotonic_ns()}@127.0.0.1",
        )
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        router.inboxes[call.call_id] = inbox
        try:
            await drive(call, lambda data: transport.sendto(data, target), inbox, time.monotonic)
            results.append("ok")
        except DialError as exc:
            results.append(str(exc))

    try:
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(BURST))), 90)
    finally:
        transport.close()


@pytest.fixture
def burst(service: Service) -> Iterator[tuple[threading.Thread, list[str]]]:
    """The burst, started: BURST calls in the next moment, each cancelled after a while."""
    results: list[str] = []
    thread = threading.Thread(
        target=lambda: asyncio.run(_burst(service.sip_port, results)), daemon=True
    )
    thread.start()
    try:
        yield thread, results
    finally:
        thread.join(120)  # every call ends before the next test


def test_a_real_call_after_a_burst_of_calls_shows_on_the_board(
    board: Any, new_page: Any, service: Service, dial: Dialer, burst: Any
) -> None:
    thread, results = burst
    # The burst reaches the board: many cards ring at once.
    board.wait_for_function(
        "n => document.querySelectorAll('#active-list [data-testid=call-card]').length >= n",
        arg=BURST // 2,
        timeout=RING_TIMEOUT_MS,
    )
    # A browser that connects now gets the whole board in one snapshot, drawn in one
    # frame and announced as a count, not a hundred times one by one.
    late = new_page()
    log_in(late, service)
    announced = late.locator("#announcer")
    announced.filter(has_text=re.compile(r"着信 \d+件")).wait_for(state="attached")
    count = int(re.search(r"着信 (\d+)件", announced.text_content() or "")[1])  # type: ignore[index]
    assert count > 3

    call = dial.call("03-1234-5678", ring_seconds=BURST_RING_SECONDS + 4)
    ringing_card(board, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)
    ringing_card(late, "山田 太郎").wait_for(timeout=RING_TIMEOUT_MS)
    dial.finish(call)
    thread.join(120)
    assert results == ["ok"] * BURST, results[:3]
    # Still the connection each page opened: never dropped, never resynced.
    for page in (board, late):
        assert page.locator("#conn-status").get_attribute("data-state") == "open"
        page.wait_for_function(
            "() => document.querySelectorAll('#active-list [data-testid=call-card]').length == 0",
            timeout=RING_TIMEOUT_MS,
        )


# --- a customer with nothing on file ------------------------------------------------------

_WORDS_OF_BUGS = """
(card) => {
  const bad = [];
  for (const node of [card, ...card.querySelectorAll("*")]) {
    const own = [...node.childNodes].filter((c) => c.nodeType === Node.TEXT_NODE)
      .map((c) => c.textContent).join("");
    const attrs = ["title", "aria-label", "alt"].map((a) => node.getAttribute(a) || "");
    for (const text of [own, ...attrs]) {
      if (/null|undefined|NaN/.test(text)) bad.push(`${node.className}: ${text}`);
    }
  }
  return bad;
}
"""


def test_a_customer_with_nothing_on_file_shows_no_null_and_no_empty_sections(
    board: Any, dial: Dialer
) -> None:
    call = dial.call(BARE_NUMBER, ring_seconds=3)
    card = ringing_card(board, BARE_NAME)
    card.wait_for(timeout=RING_TIMEOUT_MS)
    assert card.locator("[data-testid=customer-name]").inner_text().startswith(BARE_NAME)
    assert card.evaluate(_WORDS_OF_BUGS) == []
    # Nothing on file: no furigana, company, rank or tags, no facts, no histories.
    for empty in (".furigana", ".company", ".badges", ".facts", ".history", ".histories"):
        assert card.locator(empty).count() == 0, f"{empty} shown for a customer without it"
    assert re.search(r"null|undefined", board.title()) is None
    dial.finish(call)

    ended = ended_card(board, BARE_NAME)
    ended.wait_for(timeout=RING_TIMEOUT_MS)
    assert ended.evaluate(_WORDS_OF_BUGS) == []
    assert ended.locator(".history").count() == 0
