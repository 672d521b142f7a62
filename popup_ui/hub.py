"""The pop hub: owns the board (the calls active now) and fans every change out.

Owns the publish/subscribe interface and the in-process implementation. Publishing
a call message gives it the board's next sequence number, applies it to the board
(a ringing call joins, an update replaces, an end removes) and offers the encoded
text to every subscriber. Subscribing returns, in one step, the board as it is
(a :class:`~popup_ui.messages.BoardSnapshot` as the first message) and the live
stream after it, so a browser sees every call exactly once and can tell a gap by
``seq``. It knows messages as data; nothing of SIP, the database or sockets.

A Redis-backed hub for several web instances implements the same :class:`Hub`
protocol (``subscribe`` is a coroutine for that reason): the board in a hash, the
stream on a channel, ``seq`` from INCR.

Hot path: each message is encoded to JSON once per publish and the same string goes
to every subscriber; publishing never waits for a browser.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from popup_ui.messages import (
    BoardEntry,
    BoardSnapshot,
    CallEndedMessage,
    CallMessage,
    CallRingingMessage,
)

log = logging.getLogger(__name__)

# Messages buffered per browser before it counts as too slow and is dropped. Pops are
# a few per minute; a browser this far behind is gone or stuck, and one stuck browser
# must never hold up the others.
DEFAULT_QUEUE_SIZE = 64

# WebSocket close code for a subscriber dropped for being too slow (RFC 6455 §7.4.1
# registry: 1013 "Try Again Later").
CLOSE_TOO_SLOW = 1013


@dataclass(frozen=True, slots=True, kw_only=True)
class HubStats:
    """What the hub counted, for /healthz."""

    seq: int  # messages published since start (the board's sequence number)
    active_calls: int
    subscribers: int
    dropped_subscribers: int  # browsers dropped for falling too far behind


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
    async def publish(self, message: CallMessage) -> int:
        """Apply ``message`` to the board, send it to every subscriber; its ``seq``."""
        ...

    async def subscribe(self) -> Subscription:
        """A subscription whose first message is the board's snapshot."""
        ...

    def unsubscribe(self, subscription: Subscription) -> None: ...

    async def snapshot(self) -> BoardSnapshot: ...

    @property
    def stats(self) -> HubStats: ...

    async def close(self) -> None: ...


class QueueSubscription:
    """A bounded queue of encoded messages plus a drop signal.

    A drop wakes a reader blocked in :meth:`get` by queueing ``None`` (when the queue
    is full, the reader is not blocked, and the next :meth:`get` sees the drop first):
    one plain queue wait per message, no extra tasks on the fan-out path.
    """

    __slots__ = ("_queue", "_dropped", "_reason", "readers")

    def __init__(self, maxsize: int, *, first: str | None = None) -> None:
        # One slot more than the message budget, so the drop's None always fits, and
        # one for the snapshot that opens the stream.
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=maxsize + 2)
        self._dropped = asyncio.Event()
        self._reason = ""
        self.readers = 0  # get() calls waiting now
        if first is not None:
            self._queue.put_nowait(first)

    def offer(self, text: str) -> bool:
        """Queue ``text`` without waiting; False when the queue is full."""
        if self._queue.qsize() >= self._queue.maxsize - 2:
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
        self.readers += 1
        try:
            text = await self._queue.get()
        finally:
            self.readers -= 1
        if text is None or self._dropped.is_set():
            raise SubscriptionDropped(self._reason)
        return text

    async def wait_dropped(self) -> str:
        await self._dropped.wait()
        return self._reason


class InProcessHub:
    """The board and its fan-out inside one process: one bounded queue per subscriber."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscribers: set[QueueSubscription] = set()
        self._board: dict[str, BoardEntry] = {}  # call id -> entry, oldest first
        self._seq = 0
        self._dropped = 0

    async def publish(self, message: CallMessage) -> int:
        # No await in here: the board change, its seq and the fan-out are one step, so
        # a subscriber's snapshot and its live stream never overlap or leave a hole.
        self._seq += 1
        message = message.model_copy(update={"seq": self._seq})
        self._apply(message)
        text = message.model_dump_json()  # once, whatever the number of browsers
        too_slow = [sub for sub in self._subscribers if not sub.offer(text)]
        for sub in too_slow:
            self._subscribers.discard(sub)
            sub.drop("too slow")
            self._dropped += 1
            log.warning(
                "dropped a browser that fell %d messages behind (%d dropped since start)",
                self._queue_size,
                self._dropped,
            )
        return self._seq

    def _apply(self, message: CallMessage) -> None:
        call = message.call
        if isinstance(message, CallRingingMessage):
            self._board[call.id] = BoardEntry(call=call, card=message.card)
        elif isinstance(message, CallEndedMessage):
            self._board.pop(call.id, None)
        elif (entry := self._board.get(call.id)) is not None:
            card = getattr(message, "card", None) or entry.card
            self._board[call.id] = BoardEntry(call=call, card=card)

    async def subscribe(self) -> QueueSubscription:
        sub = QueueSubscription(self._queue_size, first=self._snapshot().model_dump_json())
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, subscription: Subscription) -> None:
        if isinstance(subscription, QueueSubscription):
            self._subscribers.discard(subscription)

    async def snapshot(self) -> BoardSnapshot:
        return self._snapshot()

    def _snapshot(self) -> BoardSnapshot:
        return BoardSnapshot(seq=self._seq, calls=list(self._board.values()))

    @property
    def stats(self) -> HubStats:
        return HubStats(
            seq=self._seq,
            active_calls=len(self._board),
            subscribers=len(self._subscribers),
            dropped_subscribers=self._dropped,
        )

    async def close(self) -> None:
        for sub in self._subscribers:
            sub.drop("server shutting down")
        self._subscribers.clear()
