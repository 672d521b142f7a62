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
to every subscriber. Publishing never waits for a browser, but it yields to the event
loop after each message, so the browsers' pump tasks run between the publishes of a
burst rather than after all of them.

Bounds. A browser is dropped when it is really stuck, not because a burst came in
faster than one turn of the loop: its queue may hold up to :data:`DEFAULT_QUEUE_BYTES`
of text and :data:`DEFAULT_QUEUE_SIZE` messages, and it is dropped earlier only when it
has taken nothing for :data:`DEFAULT_STALL_SECONDS` while messages waited for it.
Worst-case memory: every queue holds references to the same strings (one encoding per
publish), so all browsers together keep at most the text published since the slowest
one last read — at most ``DEFAULT_QUEUE_BYTES`` (16 MiB) — plus one 8-byte reference per
queued message per browser (at most 10,000 × 8 B = 80 KB a browser).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from popup_ui.messages import (
    REANSWERABLE,
    BoardEntry,
    BoardSnapshot,
    CallAnsweredMessage,
    CallEndedMessage,
    CallRingingMessage,
    CallState,
    LiveMessage,
    StaffPresence,
    StaffPresenceMessage,
    WhichCallMessage,
)

log = logging.getLogger(__name__)

# Messages buffered per browser at most: a ceiling no browser that reads as fast as we
# write comes near (sip.max_ringing = 200 calls ringing, updated and ended in one burst
# is 600 messages).
DEFAULT_QUEUE_SIZE = 10_000

# Memory (sys.getsizeof of the encoded text) buffered per browser at most. A pop is a
# few KB; the burst above fits several times over.
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024

# A browser with messages waiting that has taken none for this long is stuck (its
# socket does not drain, its tab hangs): it is dropped at the next publish.
DEFAULT_STALL_SECONDS = 15.0

# Open call.which questions the board replays to a browser that connects, at most; the
# call service closes the oldest before it asks more (callpop.calls.OPEN_QUESTIONS).
QUESTIONS_LIMIT = 100

# Cards of calls that just left the board cancelled (answered elsewhere, or abandoned by
# a PBX that sends no Reason), kept for a call that comes back: in a ring-all group
# callpop's leg is cancelled when a watched phone answers, and the call.answered that
# follows puts the call back, answered (callpop.calls). Only the last few seconds'
# matter; past the limit the oldest go first (routine, not logged).
ENDED_CARDS_LIMIT = 200

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
    async def publish(self, message: LiveMessage) -> int:
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

    Bounded three ways (see the module docstring): messages, bytes, and time without
    progress. A drop wakes a reader blocked in :meth:`get` by queueing ``None`` (when
    messages are queued, the reader is not blocked, and the next :meth:`get` sees the
    drop first): one plain queue wait per message, no extra tasks on the fan-out path.
    """

    __slots__ = (
        "_queue",
        "_dropped",
        "_reason",
        "readers",
        "_max_messages",
        "_max_bytes",
        "_stall_seconds",
        "_clock",
        "_bytes",
        "_behind_since",
        "full_reason",
    )

    def __init__(
        self,
        maxsize: int = DEFAULT_QUEUE_SIZE,
        *,
        max_bytes: int = DEFAULT_QUEUE_BYTES,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        first: str | None = None,
    ) -> None:
        # Unbounded as an asyncio.Queue: offer() enforces the bounds, and the drop's
        # None must always fit.
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._dropped = asyncio.Event()
        self._reason = ""
        self.readers = 0  # get() calls waiting now
        self._max_messages = maxsize
        self._max_bytes = max_bytes
        self._stall_seconds = stall_seconds
        self._clock = clock
        self._bytes = 0  # sys.getsizeof of the texts queued now
        self._behind_since: float | None = None  # messages waiting since, or last progress
        self.full_reason = ""  # why the last offer() was refused
        if first is not None:
            # The snapshot opens the stream; it does not count against the budget.
            self._queue.put_nowait(first)

    def offer(self, text: str, *, size: int | None = None, now: float | None = None) -> bool:
        """Queue ``text`` without waiting; False (and ``full_reason``) when stuck."""
        size = sys.getsizeof(text) if size is None else size
        now = self._clock() if now is None else now
        queued = self._queue.qsize()
        if queued >= self._max_messages:
            self.full_reason = f"{queued} messages behind"
        elif self._bytes + size > self._max_bytes:
            self.full_reason = f"{self._bytes} bytes behind"
        elif (
            queued
            and self._behind_since is not None
            and now - self._behind_since > self._stall_seconds
        ):
            self.full_reason = f"no message taken for {now - self._behind_since:.0f} s"
        else:
            if not queued:
                self._behind_since = now
            self._bytes += size
            self._queue.put_nowait(text)
            return True
        return False

    def drop(self, reason: str) -> None:
        if not self._dropped.is_set():
            self._reason = reason
            self._dropped.set()
            self._queue.put_nowait(None)  # wakes a waiting get()

    @property
    def dropped(self) -> bool:
        return self._dropped.is_set()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

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
        # Progress: the stall clock starts again from now (or stops when caught up).
        self._bytes = max(0, self._bytes - sys.getsizeof(text))
        self._behind_since = self._clock() if self._queue.qsize() else None
        return text

    async def wait_dropped(self) -> str:
        await self._dropped.wait()
        return self._reason


class InProcessHub:
    """The board and its fan-out inside one process: one bounded queue per subscriber."""

    def __init__(
        self,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        self._stall_seconds = stall_seconds
        self._clock = clock
        self._subscribers: set[QueueSubscription] = set()
        self._board: dict[str, BoardEntry] = {}
        self._staff: dict[
            str, StaffPresence
        ] = {}  # extension -> presence, bounded by config  # call id -> entry, oldest first
        # question id -> open call.which, oldest first (QUESTIONS_LIMIT)
        self._questions: dict[str, WhichCallMessage] = {}
        # call id -> the card of a call that ended, oldest first (ENDED_CARDS_LIMIT)
        self._ended_cards: dict[str, BoardEntry] = {}
        self._seq = 0
        self._dropped = 0

    async def publish(self, message: LiveMessage) -> int:
        seq = self._publish_now(message)
        # Let the browsers' pump tasks take this message before the next publish of a
        # burst (a single publisher publishing in a loop would otherwise fill every
        # queue before any browser got a turn).
        await asyncio.sleep(0)
        return seq

    def _publish_now(self, message: LiveMessage) -> int:
        # Synchronous, no await: the board change, its seq and the fan-out are one step,
        # so a subscriber's snapshot and its live stream never overlap or leave a hole.
        self._seq += 1
        message = message.model_copy(update={"seq": self._seq})
        self._apply(message)
        text = message.model_dump_json()  # once, whatever the number of browsers
        size, now = sys.getsizeof(text), self._clock()
        too_slow = [sub for sub in self._subscribers if not sub.offer(text, size=size, now=now)]
        for sub in too_slow:
            self._subscribers.discard(sub)
            sub.drop("too slow")
            self._dropped += 1
            log.warning(
                "dropped a browser that is stuck: %s (%d dropped since start)",
                sub.full_reason,
                self._dropped,
            )
        return self._seq

    def _apply(self, message: LiveMessage) -> None:
        if isinstance(message, StaffPresenceMessage):
            for one in message.staff:
                self._staff[one.extension] = one
            return
        if isinstance(message, WhichCallMessage):
            self._questions.pop(message.question_id, None)
            if message.state == "open":
                self._questions[message.question_id] = message
                if len(self._questions) > QUESTIONS_LIMIT:
                    oldest = next(iter(self._questions))
                    del self._questions[oldest]
                    log.warning("open call.which %s left out of the snapshot (limit)", oldest)
            return
        call = message.call
        if isinstance(message, CallRingingMessage):
            self._board[call.id] = BoardEntry(call=call, card=message.card)
        elif isinstance(message, CallEndedMessage):
            ended = self._board.pop(call.id, None)
            if ended is not None and call.outcome in REANSWERABLE:
                self._ended_cards[call.id] = ended
                if len(self._ended_cards) > ENDED_CARDS_LIMIT:
                    del self._ended_cards[next(iter(self._ended_cards))]
        elif isinstance(message, CallAnsweredMessage) and call.id not in self._board:
            # Answered again after its ring leg ended (a ring-all group): back on the board.
            if call.state != CallState.ENDED:
                before = self._ended_cards.pop(call.id, None)
                self._board[call.id] = BoardEntry(call=call, card=before.card if before else None)
        elif (entry := self._board.get(call.id)) is not None:
            card = getattr(message, "card", None) or entry.card
            self._board[call.id] = BoardEntry(call=call, card=card)

    async def subscribe(self) -> QueueSubscription:
        sub = QueueSubscription(
            self._queue_size,
            max_bytes=self._queue_bytes,
            stall_seconds=self._stall_seconds,
            clock=self._clock,
            first=self._snapshot().model_dump_json(),
        )
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, subscription: Subscription) -> None:
        if isinstance(subscription, QueueSubscription):
            self._subscribers.discard(subscription)

    async def snapshot(self) -> BoardSnapshot:
        return self._snapshot()

    def _snapshot(self) -> BoardSnapshot:
        return BoardSnapshot(
            seq=self._seq,
            calls=list(self._board.values()),
            staff=list(self._staff.values()),
            questions=list(self._questions.values()),
        )

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
