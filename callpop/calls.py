"""The call service: turns telephony call events into board messages and call records.

The order of work for each event. For a ringing call: normalise the caller once
(the office's :class:`~lookup.numbers.Numbering`), look the caller up (with a
deadline; never raises), publish ``call.ringing`` to the hub, then hand the call row
to the call log (:class:`~callpop.calllog.CallLog`: its own thread, in order, retried,
never dropped); when the lookup missed its deadline, await the card it still
produces and publish it as ``call.updated`` (and link the row to the customer). For
an end: publish ``call.ended``, then write. The browser pop is the deadline that
matters; the database write waits behind it (docs/architecture.md, "Why the order
ring → lookup → publish → record"). Per call the writes are submitted in their order
(started, customer, ended) and the call log keeps it. The hub owns the board; this
service only keeps the calls whose end has not arrived yet, by SIP Call-ID.

It knows events, numbers and cards, not SIP wire details, sockets or browsers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from callpop.calllog import Write
from db.calls import (
    AnsweredHow,
    record_call_answered,
    record_call_customer,
    record_call_ended,
    record_call_started,
)
from lookup.card import CallerCard, CardStatus
from lookup.numbers import Number, Numbering
from lookup.service import Lookup
from popup_ui.context import CallNotFound, CallNotYours, CallTaken
from popup_ui.hub import Hub
from popup_ui.messages import (
    AnsweredBy,
    Call,
    CallAnsweredMessage,
    CallEndedMessage,
    Caller,
    CallRingingMessage,
    CallState,
    CallUpdatedMessage,
    DialedLine,
    Handover,
    StaffPresence,
    StaffPresenceMessage,
)
from telephony.dialogstate import DialogChange
from telephony.events import CallEnded, CallRinging

log = logging.getLogger(__name__)

TOKYO = ZoneInfo("Asia/Tokyo")

# A call can be claimed (応答しました) while it rings and for a while after callpop's leg
# ended: in a ring group that leg is CANCELled the moment someone picks up, so the
# person who did claims a call the board already shows under recent calls.
CLAIM_WINDOW = timedelta(minutes=30)
RECENT_CALLS = 500  # calls kept for claiming, newest last; the oldest go first
# A phone's dialog going confirmed is matched to a call that rang in the last few
# minutes; without an identity, to the one whose ring leg was cancelled as answered
# elsewhere within a few seconds of it (the PBX cancels the other legs on the answer).
ANSWER_MATCH_WINDOW = timedelta(minutes=5)
CANCEL_MATCH_WINDOW = timedelta(seconds=5)
_RINGING_STATES = frozenset({"trying", "proceeding", "early"})  # RFC 4235 §3.7.1


class Claimant(Protocol):
    """The staff member taking a call (``popup_ui.schemas.StaffOut``)."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def extension(self) -> str | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StaffOnExtension:
    """The staff member whose extension a dialog event is about."""

    id: int | None
    name: str | None
    extension: str


class CallRecorder(Protocol):
    """What the call service needs of ``callpop.calllog.CallLog``."""

    def submit(self, write: Write, /, **fields: Any) -> None: ...


class CardSource(Protocol):
    """What the call service needs of ``lookup.service.CallerLookup``."""

    async def card_for(
        self,
        number: Number,
        *,
        withheld: str | None = None,
        now: datetime,
        keep_late: bool = True,
    ) -> Lookup: ...


@dataclass(slots=True, kw_only=True)
class _Call:
    """One call from its INVITE to its end, with the work still in flight for it."""

    call: Call
    number: Number
    customer_id: int | None = None
    ringing: asyncio.Task[None] | None = None  # lookup + publish + the row submitted
    ended: bool = False


def _number_of(identity: str | None) -> str | None:
    """The user part of a ``sip:``/``sips:``/``tel:`` identity: what a number can be read from."""
    if not identity:
        return None
    text = identity.strip().strip("<>")
    scheme, _, rest = text.partition(":")
    if scheme.lower() not in ("sip", "sips", "tel") or not rest:
        return None
    user = rest.split("@", 1)[0] if scheme.lower() != "tel" else rest
    return user.split(";", 1)[0] or None


def _only_customer(card: CallerCard) -> int | None:
    """The customer a call is logged against: only when the number names exactly one."""
    return card.customers[0].id if len(card.customers) == 1 else None


class CallService:
    """The ring → lookup → publish → record path, for every call."""

    def __init__(
        self,
        *,
        hub: Hub,
        lookup: CardSource,
        numbering: Numbering,
        call_log: CallRecorder,
        clock: Callable[[], datetime] = lambda: datetime.now(TOKYO),
    ) -> None:
        self._hub = hub
        self._lookup = lookup
        self._numbering = numbering
        self._call_log = call_log
        self._clock = clock
        self._by_sip_id: dict[str, _Call] = {}  # calls whose end has not arrived yet
        self._recent: OrderedDict[str, _Call] = OrderedDict()  # call id -> call, bounded
        # (extension, dialog id) -> call id, while that phone talks on that call
        self._talking: dict[tuple[str, str], str] = {}
        self.dialogs_matched = 0
        self.dialogs_unmatched = 0  # confirmed dialogs no call (or more than one) fitted
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls handled since start

    # --- events in ------------------------------------------------------------

    def handle(self, event: CallRinging | CallEnded) -> None:
        """Synchronous, so it only schedules the work.

        The call's bookkeeping is done here, before anything awaits, so an end that
        arrives while the ringing lookup is still running finds its call.
        """
        if isinstance(event, CallRinging):
            entry = self._start(event)
            if entry is not None:
                entry.ringing = self._spawn(self._ring(entry))
            return
        ending = self._by_sip_id.pop(event.call_id, None)
        if ending is None:
            log.debug("end of unknown SIP call %s ignored", event.call_id)
            return
        ending.ended = True
        self._spawn(self._end(ending, event))

    async def claim(self, call_id: str, staff: Claimant) -> Call:
        """``staff`` took the call (応答しました): every browser sees who has it.

        Idempotent for the same person; :class:`CallTaken` when someone else has it,
        :class:`CallNotFound` for an unknown call or one past :data:`CLAIM_WINDOW`.
        A ringing call becomes ``answered``; one whose leg already ended keeps its
        state and gains ``answered_by``.
        """
        entry = self._recent.get(call_id)
        if entry is None or self._clock() - entry.call.started_at > CLAIM_WINDOW:
            raise CallNotFound(call_id)
        if entry.ringing is not None:
            await asyncio.wait({entry.ringing})  # its pop and its call row come first
        # No await from here to the publish: two claims cannot both win.
        taken = entry.call.answered_by
        if taken is not None:
            if taken.staff_id == staff.id:
                return entry.call
            raise CallTaken(taken)
        now = self._clock()
        changes: dict[str, Any] = {
            "answered_by": AnsweredBy(
                staff_id=staff.id, name=staff.name, extension=staff.extension, how="claimed"
            ),
            "answered_at": now,
        }
        if entry.call.state is CallState.RINGING:
            changes["state"] = CallState.ANSWERED
        entry.call = entry.call.model_copy(update=changes)
        log.info("call %s claimed by staff %d", call_id, staff.id)
        self._call_log.submit(
            record_call_answered,
            id=call_id,
            staff_id=staff.id,
            extension=staff.extension,
            at=now,
            how="claimed",
        )
        await self._hub.publish(CallAnsweredMessage(call=entry.call))
        return entry.call

    # --- who answered, from the PBX's dialog events ----------------------------------

    def on_dialog(self, change: DialogChange, staff: StaffOnExtension) -> None:
        """A phone's dialog changed state: who answered a call, and when the talk ended.

        ``confirmed`` is matched to a call by the SIP Call-ID when the PBX keeps it, else
        by the caller's number (the dialog's remote identity, normalised), else by time
        (the one call whose ring leg was cancelled as answered elsewhere just now). More
        than one candidate is never guessed. ``terminated`` of a matched dialog ends the
        talk. Synchronous: it only schedules the work.
        """
        key = (change.extension, change.dialog.id)
        state = change.dialog.state
        handed = self._handed_to(change)
        if state in _RINGING_STATES and change.previous not in _RINGING_STATES:
            if handed is not None:
                self._spawn(self._handover_state(handed, "ringing"))
        elif state == "confirmed" and change.previous != "confirmed":
            now = self._clock()
            # A call handed over to this extension is followed to it (転送).
            found: tuple[_Call, AnsweredHow] | None = (
                (handed, "identity") if handed is not None else self._match(change, now)
            )
            if found is None:
                self.dialogs_unmatched += 1
                log.info("extension %s answered a call callpop cannot tell", change.extension)
                return
            entry, how = found
            self.dialogs_matched += 1
            self._talking[key] = entry.call.id
            if len(self._talking) > RECENT_CALLS:  # a terminated that never came
                del self._talking[next(iter(self._talking))]
            self._spawn(self._answer(entry, staff, how, now))
        elif state == "terminated":
            call_id = self._talking.pop(key, None)
            talked = self._recent.get(call_id) if call_id else None
            # The first phone hangs up once it transferred: the talk goes on elsewhere.
            answerer = talked.call.answered_by if talked is not None else None
            if (
                talked is not None
                and answerer is not None
                and answerer.extension == change.extension
            ):
                self._spawn(self._talk_ended(talked, self._clock()))

    def _handed_to(self, change: DialogChange) -> _Call | None:
        """The one call handed over to this extension that this dialog can be, if any."""
        caller = _number_of(change.dialog.remote_identity)
        number = self._numbering.normalise(caller).e164 if caller else None
        pending = [
            entry
            for entry in self._recent.values()
            if entry.call.handover is not None
            and entry.call.handover.to_extension == change.extension
            and entry.call.handover.state != "answered"
            and (number is None or entry.call.caller.number == number)
        ]
        return pending[-1] if len(pending) == 1 else None

    async def _handover_state(self, entry: _Call, state: str) -> None:
        handover = entry.call.handover
        if handover is None or handover.state == state:
            return
        entry.call = entry.call.model_copy(
            update={"handover": handover.model_copy(update={"state": state})}
        )
        await self._hub.publish(CallUpdatedMessage(call=entry.call))

    def _match(self, change: DialogChange, now: datetime) -> tuple[_Call, AnsweredHow] | None:
        dialog = change.dialog
        # A call another phone's dialog already took is not a candidate, even while the
        # answer is still being published (on_dialog takes it before any await).
        taken = set(self._talking.values())
        recent = [
            entry
            for entry in self._recent.values()
            if now - entry.call.started_at <= ANSWER_MATCH_WINDOW
            and entry.call.id not in taken
            and (entry.call.answered_by is None or entry.call.answered_by.how == "claimed")
        ]
        if dialog.call_id:
            by_id = [e for e in recent if e.call.sip_call_id == dialog.call_id]
            if len(by_id) == 1:
                return by_id[0], "call-id"
        caller = _number_of(dialog.remote_identity)
        if caller is not None:
            number = self._numbering.normalise(caller).e164
            same = [e for e in recent if number is not None and e.call.caller.number == number]
            # The same number calling two lines: the older call is answered first.
            if same:
                return same[0], "identity"
            return None
        cancelled = [
            e
            for e in recent
            if e.call.outcome == "answered_elsewhere"
            and e.call.ended_at is not None
            and abs(now - e.call.ended_at) <= CANCEL_MATCH_WINDOW
        ]
        if len(cancelled) == 1:
            return cancelled[0], "time-window"
        return None

    async def _answer(
        self, entry: _Call, staff: StaffOnExtension, how: AnsweredHow, now: datetime
    ) -> None:
        if entry.ringing is not None:
            await asyncio.wait({entry.ringing})
        answered = AnsweredBy(
            staff_id=staff.id, name=staff.name, extension=staff.extension, how=how
        )
        if entry.call.answered_by == answered:
            return
        changes: dict[str, Any] = {"answered_by": answered, "answered_at": now}
        handover = entry.call.handover
        if handover is not None and handover.to_extension == staff.extension:
            changes["handover"] = handover.model_copy(update={"state": "answered"})
        if entry.call.state is CallState.RINGING:
            changes["state"] = CallState.ANSWERED
        entry.call = entry.call.model_copy(update=changes)
        log.info("call %s answered on extension %s (%s)", entry.call.id, staff.extension, how)
        self._call_log.submit(
            record_call_answered,
            id=entry.call.id,
            staff_id=staff.id,
            extension=staff.extension,
            at=now,
            how=how,
        )
        await self._hub.publish(CallAnsweredMessage(call=entry.call))

    async def _talk_ended(self, entry: _Call, now: datetime) -> None:
        call = entry.call
        answered_at = call.answered_at or now
        changes: dict[str, Any] = {
            "talk_seconds": max(0, round((now - answered_at).total_seconds()))
        }
        ended_here = call.state is not CallState.ENDED
        if ended_here:
            changes.update(state=CallState.ENDED, ended_at=now, outcome="hangup")
        entry.call = call.model_copy(update=changes)
        message = CallEndedMessage if ended_here else CallUpdatedMessage
        await self._hub.publish(message(call=entry.call))
        assert entry.call.ended_at is not None and entry.call.outcome is not None
        self._call_log.submit(
            record_call_ended, id=call.id, ended_at=now, outcome=entry.call.outcome
        )

    async def hand_over(self, call_id: str, by: Claimant, to: Claimant, note: str) -> Call:
        """転送メモ: the person who has the call leaves one line for ``to``.

        When the PBX rings ``to``'s extension with this caller the handover is
        ``ringing`` (their browser pops the card with the line on top); when it answers,
        the call is theirs (:meth:`on_dialog`).
        """
        entry = self._recent.get(call_id)
        if entry is None or self._clock() - entry.call.started_at > CLAIM_WINDOW:
            raise CallNotFound(call_id)
        answered = entry.call.answered_by
        if answered is None or answered.staff_id != by.id or to.extension is None:
            raise CallNotYours(call_id)
        entry.call = entry.call.model_copy(
            update={
                "handover": Handover(
                    from_staff_id=by.id,
                    from_name=by.name,
                    to_staff_id=to.id,
                    to_name=to.name,
                    to_extension=to.extension,
                    note=note,
                    at=self._clock(),
                    state="requested",
                )
            }
        )
        log.info("call %s handed over by staff %d to staff %d", call_id, by.id, to.id)
        await self._hub.publish(CallUpdatedMessage(call=entry.call))
        return entry.call

    def staff_presence(self, staff: list[StaffPresence]) -> None:
        """Extensions' presence changed: to the board (``staff.presence``), in order."""
        self._spawn(self._publish_presence(staff))

    async def _publish_presence(self, staff: list[StaffPresence]) -> None:
        await self._hub.publish(StaffPresenceMessage(staff=staff))

    async def place(self, event: CallRinging | CallEnded) -> None:
        """Handle ``event`` and wait until its message is published (tests, benchmarks)."""
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
        shown = caller.number if caller.withheld is None else None
        number = self._numbering.normalise(shown)
        dialed = self._numbering.normalise(caller.dialed) if caller.dialed else None
        call = Call(
            id=uuid.uuid4().hex,
            sip_call_id=event.call_id,
            started_at=self._clock(),
            caller=Caller(
                number=number.e164,
                national=number.national,  # "203" for an extension
                raw=caller.number,
                display_name=caller.display_name,
                withheld=caller.withheld.value if caller.withheld else None,
                source=caller.source.value if caller.source else None,
            ),
            dialed_line=(
                DialedLine(
                    number=dialed.e164,
                    national=dialed.national,
                    name=self._numbering.line_name(dialed.e164),
                )
                if dialed is not None and dialed.e164 is not None
                else None
            ),
        )
        entry = _Call(call=call, number=number)
        self._by_sip_id[event.call_id] = entry
        self._recent[call.id] = entry
        if len(self._recent) > RECENT_CALLS:
            self._recent.popitem(last=False)
        self.calls += 1
        return entry

    async def _ring(self, entry: _Call) -> None:
        call = entry.call
        found = await self._lookup.card_for(
            entry.number, withheld=call.caller.withheld, now=call.started_at
        )
        card = found.card
        if card.status is CardStatus.DEGRADED:
            log.warning(
                "call %s popped without its customer record (%s)", call.id, card.degraded_reason
            )
        entry.customer_id = _only_customer(card)
        # A call that ended during the lookup still pops; its end follows.
        await self._hub.publish(CallRingingMessage(call=call, card=card))
        self._record_started(entry)
        if found.late is not None:
            self._spawn(self._complete(entry, found.late))

    async def _complete(self, entry: _Call, late: Awaitable[CallerCard]) -> None:
        """A card that missed the lookup deadline arrived: complete the pop.

        ``call.updated`` carries the card; the hub's board (the snapshot browsers get
        on connect) takes it too, and the call row gets its customer. A call that has
        ended in the meantime is still updated: its card stays under recent calls.
        """
        try:
            card = await late
        except Exception as exc:
            log.info("late caller lookup for call %s failed too: %s", entry.call.id, exc)
            return
        log.info("call %s: the late customer record arrived", entry.call.id)
        entry.customer_id = _only_customer(card)
        await self._hub.publish(CallUpdatedMessage(call=entry.call, card=card))
        if entry.customer_id is None:
            return
        # Spawned after the started row was submitted, so the call log applies it after.
        self._call_log.submit(record_call_customer, id=entry.call.id, customer_id=entry.customer_id)

    async def _end(self, entry: _Call, event: CallEnded) -> None:
        if entry.ringing is not None:
            await asyncio.wait({entry.ringing})  # the ringing pop goes out first
        call = entry.call.model_copy(
            update={
                "state": CallState.ENDED,
                "outcome": event.reason.value,
                "ended_at": self._clock(),
            }
        )
        entry.call = call
        await self._hub.publish(CallEndedMessage(call=call))
        assert call.ended_at is not None and call.outcome is not None
        # After the ringing task, which submitted the started row: the order holds.
        self._call_log.submit(
            record_call_ended, id=call.id, ended_at=call.ended_at, outcome=call.outcome
        )

    def _record_started(self, entry: _Call) -> None:
        call = entry.call
        self._call_log.submit(
            record_call_started,
            id=call.id,
            sip_call_id=call.sip_call_id,
            caller_e164=call.caller.number,
            caller_raw=call.caller.raw,
            display_name=call.caller.display_name,
            withheld=call.caller.withheld,
            dialed_e164=call.dialed_line.number if call.dialed_line else None,
            started_at=call.started_at,
            customer_id=entry.customer_id,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call event handling failed", exc_info=task.exception())

    async def close(self, timeout: float = 5.0) -> None:
        """Let in-flight pops and late cards finish (bounded), then stop.

        What they submitted is the call log's to finish (``CallLog.close``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:  # work in flight may spawn more (a late card, a call row)
            left = deadline - loop.time()
            if left <= 0:
                pending = set(self._tasks)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
                return
            await asyncio.wait(set(self._tasks), timeout=left)
