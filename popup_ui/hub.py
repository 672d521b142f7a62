"""The pop hub: fans every published message out to every connected browser.

Owns the publish/subscribe interface and the in-process implementation. It knows
nothing of SIP, calls or customers: a message is an opaque JSON object. A Redis
pub/sub hub for several web instances can implement the same :class:`Hub`
protocol (publish = PUBLISH the encoded text; each subscription = a reader task
feeding the same bounded queue).

Hot path: each message is encoded to JSON text once per publish and the same
string goes to every subscriber; publishing never waits for a browser.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Messages buffered per browser before it counts as too slow and is dropped. Pops are
# a few per minute; a browser this far behind is gone or stuck, and one stuck browser
# must never hold up the others.
DEFAULT_QUEUE_SIZE = 64

# WebSocket close code for a subscriber dropped for being too slow (RFC 6455 §7.4.1
# registry: 1013 "Try Again Later").
CLOSE_TOO_SLOW = 1013


def encode_message(message: dict[str, Any]) -> str:
    """The one wire form of a message: compact JSON, UTF-8 text (Japanese kept as is)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


class SubscriptionDropped(Exception):
    """The subscription was dropped (too slow, or the hub closed); stop reading."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription(Protocol):
    """One browser's view of the hub."""

    async def get(self) -> str:
        """Next encoded message; raises :class:`SubscriptionDropped` once dropped."""
        ...

    async def wait_dropped(self) -> str:
        """Return the drop reason as soon as the hub drops this subscription."""
        ...


class Hub(Protocol):
    async def publish(self, message: dict[str, Any]) -> None: ...

    def subscribe(self) -> Subscription: ...

    def unsubscribe(self, subscription: Subscription) -> None: ...

    @property
    def subscriber_count(self) -> int: ...

    async def close(self) -> None: ...


class QueueSubscription:
    """A bounded queue of encoded messages plus a drop signal.

    A drop wakes a reader blocked in :meth:`get` by queueing ``None`` (when the queue
    is full, the reader is not blocked, and the next :meth:`get` sees the drop first):
    one plain queue wait per message, no extra tasks on the fan-out path.
    """

    __slots__ = ("_queue", "_dropped", "_reason")

    def __init__(self, maxsize: int) -> None:
        # One slot more than the message budget, so the drop's None always fits.
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=maxsize + 1)
        self._dropped = asyncio.Event()
        self._reason = ""

    def offer(self, text: str) -> bool:
        """Queue ``text`` without waiting; False when the queue is full."""
        if self._queue.qsize() >= self._queue.maxsize - 1:
            return False
        self._queue.put_nowait(text)
        return True

    def drop(self, reason: str) -> None:
        if not self._dropped.is_set():
            self._reason = reason
            self._dropped.set()
            self._queue.put_nowait(None)  # the spare slot: wakes a waiting get()

    @property
    def dropped(self) -> bool:
        return self._dropped.is_set()

    async def get(self) -> str:
        if self._dropped.is_set():
            raise SubscriptionDropped(self._reason)
        text = await self._queue.get()
        if text is None or self._dropped.is_set():
            raise SubscriptionDropped(self._reason)
        return text

    async def wait_dropped(self) -> str:
        await self._dropped.wait()
        return self._reason


class InProcessHub:
    """Fan-out inside one process: one bounded asyncio queue per subscriber."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscribers: set[QueueSubscription] = set()
        self.published = 0
        self.dropped = 0

    async def publish(self, message: dict[str, Any]) -> None:
        text = encode_message(message)  # once, whatever the number of browsers
        self.published += 1
        too_slow = [sub for sub in self._subscribers if not sub.offer(text)]
        for sub in too_slow:
            self._subscribers.discard(sub)
            sub.drop("too slow")
            self.dropped += 1
            log.warning("dropped a browser that fell %d messages behind", self._queue_size)

    def subscribe(self) -> QueueSubscription:
        sub = QueueSubscription(self._queue_size)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, subscription: Subscription) -> None:
        if isinstance(subscription, QueueSubscription):
            self._subscribers.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def close(self) -> None:
        for sub in self._subscribers:
            sub.drop("server shutting down")
        self._subscribers.clear()
