"""The call service: turns telephony events into pop messages and call records.

Owns the list of active calls (for the replay a browser gets on connect) and the
order of work for each event. For a ringing call: look the caller up (with a
deadline; never raises), publish ``call.ringing`` to the hub, then write the call
row in a worker thread; when the lookup missed its deadline and its card arrives
later, publish ``call.updated`` with it and link the row to the customer. For an
end: publish ``call.ended``, then write. The browser pop is the deadline that
matters; the database write waits behind it (docs/architecture.md, "Why the order
ring → lookup → publish → record").

It knows events and cards, not SIP wire details, sockets or browsers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from db.calls import record_call_customer, record_call_ended, record_call_started
from lookup.card import CallerCard
from lookup.numbers import Number, RewriteRule, normalise
from popup_ui.hub import Hub
from telephony.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    Event,
    RegistrationChanged,
    RequestRejected,
)

log = logging.getLogger(__name__)

TOKYO = ZoneInfo("Asia/Tokyo")


class CardSource(Protocol):
    """What the call service needs of ``lookup.service.CallerLookup``."""

    async def card_for(
        self,
        raw: str | None,
        *,
        withheld: str | None,
        now: datetime,
        on_late: Callable[[CallerCard], None] | None = None,
    ) -> CallerCard: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Numbering:
    """How raw SIP numbers become E.164 (from ``settings.numbering``)."""

    region: str = "JP"
    rules: Sequence[RewriteRule] = ()
    extension_max_digits: int = 4


@dataclass(slots=True, kw_only=True)
class _Call:
    """One call from its INVITE to its end, with the work still in flight for it."""

    call: dict[str, Any]
    customer_id: int | None = None
    ringing: asyncio.Task[None] | None = None  # lookup + publish
    recorded: asyncio.Task[None] | None = None  # the call row written
    ended: bool = False


def _only_customer(card: CallerCard) -> int | None:
    """The customer a call is logged against: only when the number names exactly one."""
    return card.customers[0].id if len(card.customers) == 1 else None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


class CallService:
    """Active calls and the ring → lookup → publish → record path."""

    def __init__(
        self,
        *,
        hub: Hub,
        lookup: CardSource,
        session_factory: sessionmaker[Session],
        numbering: Numbering,
        clock: Callable[[], datetime] = lambda: datetime.now(TOKYO),
    ) -> None:
        self._hub = hub
        self._lookup = lookup
        self._session_factory = session_factory
        self._numbering = numbering
        self._clock = clock
        self._by_sip_id: dict[str, _Call] = {}  # calls whose end has not arrived yet
        self._active: dict[str, dict[str, Any]] = {}  # call id -> published call.ringing
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.record_failures = 0

    # --- events in ------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """The transport's ``on_event``: synchronous, so it only schedules the work.

        The call's bookkeeping is done here, before anything awaits, so an end that
        arrives while the ringing lookup is still running finds its call.
        """
        if isinstance(event, CallRinging):
            entry = self._start(event)
            if entry is not None:
                entry.ringing = self._spawn(self._ring(entry))
        elif isinstance(event, CallEnded):
            ending = self._by_sip_id.pop(event.call_id, None)
            if ending is None:
                log.debug("end of unknown SIP call %s ignored", event.call_id)
                return
            ending.ended = True
            self._spawn(self._end(ending, event))
        elif isinstance(event, CallAnswered):
            log.debug("answered by %s (not shown yet): %s", event.answered_by, event.call_id)
        elif isinstance(event, RegistrationChanged):
            log.info("SIP registration %s %s", event.state.value, event.detail)
        elif isinstance(event, RequestRejected):
            log.info("SIP request from %s:%d refused: %s", *event.remote, event.reason)

    async def place(self, event: Event) -> None:
        """Handle ``event`` and wait until its pop is published (tests, the CLI)."""
        before = set(self._tasks)
        self.handle(event)
        new = [task for task in self._tasks if task not in before]
        if new:
            await asyncio.gather(*new)

    # --- the ringing path --------------------------------------------------------

    def _start(self, event: CallRinging) -> _Call | None:
        if event.call_id in self._by_sip_id:
            return None  # a retransmitted INVITE the core passed on twice: one pop only
        caller = event.caller
        number = national = dialed = None
        if caller.number is not None and caller.withheld is None:
            parsed = self._normalise(caller.number)
            number, national = parsed.e164, parsed.national  # national "203" for an extension
        if caller.dialed:
            dialed = self._normalise(caller.dialed).e164
        call = {
            "id": uuid.uuid4().hex,
            "sip_call_id": event.call_id,
            "started_at": _iso(self._clock()),
            "ended_at": None,
            "state": "ringing",
            "outcome": None,
            "answered_by": None,
            "caller": {
                "number": number,
                "national": national,
                "raw": caller.number,
                "display_name": caller.display_name,
                "withheld": caller.withheld.value if caller.withheld else None,
                "source": caller.source.value if caller.source else None,
            },
            "dialed_line": dialed,
        }
        entry = _Call(call=call)
        self._by_sip_id[event.call_id] = entry
        return entry

    def _normalise(self, raw: str) -> Number:
        return normalise(
            raw,
            region=self._numbering.region,
            rules=self._numbering.rules,
            extension_max_digits=self._numbering.extension_max_digits,
        )

    async def _ring(self, entry: _Call) -> None:
        call = entry.call
        caller = call["caller"]
        now = datetime.fromisoformat(call["started_at"])
        card = await self._lookup.card_for(
            caller["raw"],
            withheld=caller["withheld"],
            now=now,
            on_late=lambda late: self._on_late_card(entry, late),
        )
        entry.customer_id = _only_customer(card)
        message = {"type": "call.ringing", "call": call, "card": card.to_json()}
        # No await between marking the call active and publishing it: a browser that
        # subscribes and reads the active calls in one step sees it exactly once (replay
        # or live). A call that ended during the lookup still pops; its end follows.
        if not entry.ended:
            self._active[call["id"]] = message
        await self._hub.publish(message)
        entry.recorded = self._spawn(self._record_started(entry))

    def _on_late_card(self, entry: _Call, card: CallerCard) -> None:
        if not self._closing:
            self._spawn(self._complete(entry, card))

    async def _complete(self, entry: _Call, card: CallerCard) -> None:
        """A card that missed the lookup deadline arrived: complete the pop.

        The degraded ``call.ringing`` went out first (``_ring`` is awaited); then
        ``call.updated`` carries the card, the replay for browsers that connect later
        gets it too, and the call row gets its customer. A call that has ended in the
        meantime is still updated: its card stays on the board under recent calls.
        """
        if entry.ringing is not None:
            await asyncio.wait({entry.ringing})
        call = entry.call
        card_json = card.to_json()
        entry.customer_id = _only_customer(card)
        if call["id"] in self._active:
            self._active[call["id"]] = {"type": "call.ringing", "call": call, "card": card_json}
        await self._hub.publish({"type": "call.updated", "call": call, "card": card_json})
        if entry.customer_id is None:
            return
        if entry.recorded is not None:
            await asyncio.wait({entry.recorded})
        await self._record(
            record_call_customer, call["id"], id=call["id"], customer_id=entry.customer_id
        )

    async def _end(self, entry: _Call, event: CallEnded) -> None:
        if entry.ringing is not None:
            await asyncio.wait({entry.ringing})  # the ringing pop goes out first
        call = dict(entry.call)
        call.update(state="ended", outcome=event.reason.value, ended_at=_iso(self._clock()))
        entry.call = call
        self._active.pop(call["id"], None)
        await self._hub.publish({"type": "call.ended", "call": call})
        if entry.recorded is not None:
            await asyncio.wait({entry.recorded})
        await self._record(
            record_call_ended,
            call["id"],
            id=call["id"],
            ended_at=datetime.fromisoformat(call["ended_at"]),
            outcome=call["outcome"],
        )

    async def _record_started(self, entry: _Call) -> None:
        call = entry.call
        caller = call["caller"]
        await self._record(
            record_call_started,
            call["id"],
            id=call["id"],
            sip_call_id=call["sip_call_id"],
            caller_e164=caller["number"],
            caller_raw=caller["raw"],
            display_name=caller["display_name"],
            withheld=caller["withheld"],
            dialed_e164=call["dialed_line"],
            started_at=datetime.fromisoformat(call["started_at"]),
            customer_id=entry.customer_id,
        )

    async def _record(self, write: Callable[..., None], call_id: str, **fields: Any) -> None:
        def run() -> None:
            with self._session_factory() as session:
                write(session, **fields)
                session.commit()

        try:
            await asyncio.to_thread(run)
        except Exception:
            # The pop already went out; a lost row is logged with its id, never raised
            # into the event loop.
            self.record_failures += 1
            log.exception("could not record call %s (%s)", call_id, write.__name__)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call event handling failed", exc_info=task.exception())

    # --- what browsers ask for ----------------------------------------------------

    def active_messages(self) -> list[dict[str, Any]]:
        """The ``call.ringing`` message of every call still ringing, oldest first."""
        return list(self._active.values())

    async def close(self, timeout: float = 5.0) -> None:
        """Let in-flight pops and call records finish (bounded), then stop."""
        self._closing = True  # late cards from lookups still running are dropped
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
