"""The in-process hub on its own: the board, its sequence, bounded queues and drops."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from lookup.card import CallerCard, CardStatus
from popup_ui.hub import InProcessHub, QueueSubscription, SubscriptionDropped
from popup_ui.messages import (
    Call,
    CallEndedMessage,
    Caller,
    CallRingingMessage,
    CallState,
    CallUpdatedMessage,
    board_message,
)
from tests.waiting import wait_for

TOKYO = ZoneInfo("Asia/Tokyo")


def _call(call_id: str, **changes: Any) -> Call:
    call = Call(
        id=call_id,
        sip_call_id=f"{call_id}@pbx",
        started_at=datetime(2026, 11, 22, 10, 31, 5, 123456, tzinfo=TOKYO),
        caller=Caller(
            number="+81312345678",
            national="03-1234-5678",
            raw="0312345678",
            display_name=None,
            withheld=None,
            source="from",
        ),
    )
    return call.model_copy(update=changes)


def _card(status: CardStatus = CardStatus.UNKNOWN) -> CallerCard:
    return CallerCard(status=status, number="+81312345678", national="03-1234-5678", raw_number="0")


def _ringing(call_id: str) -> CallRingingMessage:
    return CallRingingMessage(call=_call(call_id), card=_card())


def _decode(text: str) -> Any:
    return board_message.validate_json(text)


@pytest.mark.asyncio
async def test_a_queue_holds_its_budget_then_refuses_and_a_drop_wins_over_queued_messages() -> None:
    sub = QueueSubscription(2)
    assert sub.offer("a") and sub.offer("b")
    assert not sub.offer("c")  # full: the hub drops this subscriber
    assert await sub.get() == "a"
    sub.drop("too slow")
    with pytest.raises(SubscriptionDropped, match="too slow"):
        await sub.get()  # "b" is still queued, but a dropped browser gets nothing more
    assert await wait_for(sub.wait_dropped, what="the drop reason") == "too slow"


@pytest.mark.asyncio
async def test_the_board_holds_active_calls_and_every_message_has_the_next_seq() -> None:
    hub = InProcessHub()
    first = await hub.subscribe()
    assert _decode(await first.get()).model_dump() == {
        "type": "board.snapshot",
        "seq": 0,
        "calls": [],
        "staff": [],
        "questions": [],
    }
    assert await hub.publish(_ringing("a")) == 1
    assert await hub.publish(_ringing("b")) == 2
    late = _card(CardStatus.MATCHED)
    await hub.publish(CallUpdatedMessage(call=_call("a"), card=late))
    await hub.publish(CallEndedMessage(call=_call("b", state=CallState.ENDED)))
    # An update for a call that is no longer on the board changes nothing there.
    await hub.publish(CallUpdatedMessage(call=_call("b", state=CallState.ENDED), card=late))
    live = [_decode(await first.get()) for _ in range(5)]
    assert [(m.type, m.seq) for m in live] == [
        ("call.ringing", 1),
        ("call.ringing", 2),
        ("call.updated", 3),
        ("call.ended", 4),
        ("call.updated", 5),
    ]

    # A browser that connects now gets the board as it is, then what follows it.
    second = await hub.subscribe()
    snapshot = _decode(await second.get())
    assert snapshot.type == "board.snapshot" and snapshot.seq == 5
    assert [(e.call.id, e.card.status) for e in snapshot.calls] == [("a", "matched")]
    await hub.publish(CallEndedMessage(call=_call("a", state=CallState.ENDED)))
    after = _decode(await second.get())
    assert (after.type, after.seq) == ("call.ended", 6)
    assert (await hub.snapshot()).calls == []
    assert hub.stats.seq == 6 and hub.stats.active_calls == 0


@pytest.mark.asyncio
async def test_times_go_out_with_milliseconds_and_the_offset() -> None:
    hub = InProcessHub()
    sub = await hub.subscribe()
    await sub.get()
    await hub.publish(_ringing("a"))
    wire = json.loads(await sub.get())
    assert wire["call"]["started_at"] == "2026-11-22T10:31:05.123+09:00"


@pytest.mark.asyncio
async def test_closing_the_hub_wakes_readers_that_wait_for_a_message() -> None:
    hub = InProcessHub(queue_size=4)
    subs = [await hub.subscribe() for _ in range(3)]
    for sub in subs:
        await sub.get()  # the snapshot
    readers = [asyncio_task(sub.get()) for sub in subs]
    await wait_for(lambda: all(sub.readers == 1 for sub in subs), what="readers waiting")
    await hub.publish(_ringing("1"))
    texts = [await wait_for(lambda r=r: r.done() and r.result(), what="a message") for r in readers]
    assert [(_decode(t).type, _decode(t).call.id) for t in texts] == [("call.ringing", "1")] * 3
    waiting = [asyncio_task(sub.get()) for sub in subs]
    await wait_for(lambda: all(sub.readers == 1 for sub in subs), what="readers waiting")
    await hub.close()
    for reader in waiting:
        await wait_for(reader.done, what="the reader woken")
        with pytest.raises(SubscriptionDropped, match="server shutting down"):
            reader.result()
    assert hub.stats.subscribers == 0


@pytest.mark.asyncio
async def test_a_full_subscriber_is_dropped_without_holding_up_the_others() -> None:
    hub = InProcessHub(queue_size=2)
    stuck, reading = await hub.subscribe(), await hub.subscribe()
    await reading.get()  # the snapshot
    for n in range(3):
        await hub.publish(_ringing(str(n)))
        assert _decode(await reading.get()).call.id == str(n)
    assert stuck.dropped and not reading.dropped
    assert (hub.stats.subscribers, hub.stats.dropped_subscribers) == (1, 1)


def asyncio_task(coro: Any) -> Any:
    import asyncio

    return asyncio.ensure_future(coro)


# --- bursts: yielding, and dropping only a stuck browser --------------------------------


@pytest.mark.asyncio
async def test_publish_lets_a_reader_take_each_message_before_the_next_publish() -> None:
    import asyncio

    hub = InProcessHub()
    sub = await hub.subscribe()
    await sub.get()  # the snapshot
    taken: list[str] = []

    async def read() -> None:
        while True:
            taken.append(_decode(await sub.get()).call.id)

    reader = asyncio.ensure_future(read())
    await wait_for(lambda: sub.readers == 1, what="the reader waiting")
    behind = []
    for n in range(300):  # one publisher, no other await: only publish can yield
        await hub.publish(_ringing(str(n)))
        behind.append(n + 1 - len(taken))
    reader.cancel()
    assert max(behind) <= 1, "the reader got no turn between publishes of a burst"
    assert taken == [str(n) for n in range(300)]


@pytest.mark.asyncio
async def test_a_burst_far_beyond_the_old_64_messages_drops_no_browser_that_reads() -> None:
    hub = InProcessHub()
    reading = await hub.subscribe()
    for n in range(1000):
        # Publish from one task without reading in between, as 1,000 ring tasks would.
        hub._publish_now(_ringing(str(n)))
    assert not reading.dropped and hub.stats.dropped_subscribers == 0
    await reading.get()  # the snapshot
    assert [_decode(await reading.get()).call.id for _ in range(1000)] == [
        str(n) for n in range(1000)
    ]
    assert reading.queued_bytes == 0


@pytest.mark.asyncio
async def test_a_browser_that_takes_nothing_for_the_stall_time_is_dropped() -> None:
    now = [0.0]
    hub = InProcessHub(stall_seconds=15.0, clock=lambda: now[0])
    stuck, reading = await hub.subscribe(), await hub.subscribe()
    await reading.get()
    await stuck.get()  # it read its snapshot, then stopped
    for n in range(5):
        now[0] += 5.0  # a slow trickle: 25 s in all
        await hub.publish(_ringing(str(n)))
        assert _decode(await reading.get()).call.id == str(n)  # progress every time
    # First queued at t=5, nothing taken since: past 15 s at t=25 -> dropped then.
    assert stuck.dropped and not reading.dropped
    assert "no message taken for 20 s" in stuck.full_reason
    assert hub.stats.dropped_subscribers == 1


@pytest.mark.asyncio
async def test_a_browser_over_the_byte_budget_is_dropped() -> None:
    hub = InProcessHub(queue_bytes=20_000)
    stuck = await hub.subscribe()
    sent = 0
    while not stuck.dropped:
        assert sent < 100, "never dropped by its byte budget"
        await hub.publish(_ringing(str(sent)))
        sent += 1
    assert 10 < sent < 100  # a few KB a message
    assert "bytes behind" in stuck.full_reason
    assert stuck.queued_bytes <= 20_000
