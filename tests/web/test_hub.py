"""The in-process hub on its own: bounded queues, drops, and waking a waiting reader."""

from __future__ import annotations

import asyncio

import pytest

from popup_ui.hub import InProcessHub, QueueSubscription, SubscriptionDropped


@pytest.mark.asyncio
async def test_a_queue_holds_its_budget_then_refuses_and_a_drop_wins_over_queued_messages() -> None:
    sub = QueueSubscription(2)
    assert sub.offer("a") and sub.offer("b")
    assert not sub.offer("c")  # full: the hub drops this subscriber
    assert await sub.get() == "a"
    sub.drop("too slow")
    with pytest.raises(SubscriptionDropped, match="too slow"):
        await sub.get()  # "b" is still queued, but a dropped browser gets nothing more
    assert await asyncio.wait_for(sub.wait_dropped(), 1) == "too slow"


@pytest.mark.asyncio
async def test_closing_the_hub_wakes_readers_that_wait_for_a_message() -> None:
    hub = InProcessHub(queue_size=4)
    subs = [hub.subscribe() for _ in range(3)]
    readers = [asyncio.ensure_future(sub.get()) for sub in subs]
    await asyncio.sleep(0)  # every reader is now waiting on its empty queue
    await hub.publish({"type": "call.updated", "call": {"id": "1"}})
    assert [await asyncio.wait_for(r, 1) for r in readers] == [
        '{"type":"call.updated","call":{"id":"1"}}'
    ] * 3
    waiting = [asyncio.ensure_future(sub.get()) for sub in subs]
    await asyncio.sleep(0)
    await hub.close()
    for reader in waiting:
        with pytest.raises(SubscriptionDropped, match="server shutting down"):
            await asyncio.wait_for(reader, 1)
    assert hub.subscriber_count == 0


@pytest.mark.asyncio
async def test_a_full_subscriber_is_dropped_without_holding_up_the_others() -> None:
    hub = InProcessHub(queue_size=2)
    stuck, reading = hub.subscribe(), hub.subscribe()
    for n in range(3):
        await hub.publish({"n": n})
        assert await reading.get() == f'{{"n":{n}}}'
    assert stuck.dropped and not reading.dropped
    assert (hub.subscriber_count, hub.dropped) == (1, 1)
