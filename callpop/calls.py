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
from callpop.logs import Throttle
from callpop.routing import CallRouter
from db.calls import (
    AnsweredHow,
    record_call_answered,
    record_call_customer,
    record_call_ended,
    record_call_handover,
    record_call_routed,
    record_call_started,
)
from lookup.card import CallerCard, CardStatus
from lookup.numbers import Number, Numbering
from lookup.service import Lookup
from popup_ui.context import CallNotFound, CallNotYours, CallTaken
from popup_ui.hub import Hub
from popup_ui.messages import (
    REANSWERABLE,
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
    WhichCallMessage,
    WhichCandidate,
)
from telephony.dialogstate import DialogChange
from telephony.events import CallEnded, CallRedirected, CallRinging, EndReason

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
# どちらが応答しましたか questions open at once, at most: asking one more closes the oldest
# (counted in which_dropped). Each is closed anyway once its calls are past CLAIM_WINDOW.
OPEN_QUESTIONS = 50


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
    customer_name: str | None = None  # the one customer the card names (call.which)
    awaiting_route: bool = False  # a routed line's call: callpop answers it with a 302
    redirected_to: str | None = None  # the SIP side's fallback 302 (decision too late)


@dataclass(slots=True, kw_only=True)
class _Question:
    """どちらが応答しましたか: the phone's dialog ``key`` answered one of ``call_ids``."""

    id: str
    key: tuple[str, str]  # (extension, dialog id)
    staff: StaffOnExtension
    asked_at: datetime
    call_ids: list[str]
    hung_up_at: datetime | None = None  # the dialog terminated before the answer came


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


def _ring_leg_just_cancelled(call: Call, now: datetime) -> bool:
    """callpop's ring leg was cancelled a moment ago (a ring-all group): as answered
    elsewhere, or without ``Reason: SIP;cause=200`` by a PBX that does not send it."""
    return (
        call.state is CallState.ENDED
        and call.outcome in REANSWERABLE
        and call.ended_at is not None
        and abs(now - call.ended_at) <= CANCEL_MATCH_WINDOW
    )


def _only_customer_name(card: CallerCard) -> str | None:
    return card.customers[0].name if len(card.customers) == 1 else None


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
        router: CallRouter | None = None,
        ring_timeout: float = 60.0,
    ) -> None:
        self._hub = hub
        self._router = router
        # A routed call no dialog event resolved is ended this long after its 302.
        self._ring_timeout = ring_timeout
        self._routed: OrderedDict[str, asyncio.TimerHandle] = OrderedDict()  # bounded
        self.routed_overflow = 0  # routed calls ended early: RECENT_CALLS were pending
        self.routing_errors = 0  # decisions that raised (a bug): the deadline took over
        self._overflow_said = Throttle()
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
        self.which_asked = 0  # of those, the ones asked on the phone's browser (call.which)
        self.which_dropped = 0  # questions closed unanswered: OPEN_QUESTIONS were open
        self._questions: OrderedDict[str, _Question] = OrderedDict()  # id -> open, oldest first
        self._questions_said = Throttle()  # the OPEN_QUESTIONS warning, once a minute
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls handled since start

    # --- events in ------------------------------------------------------------

    def handle(self, event: CallRinging | CallEnded | CallRedirected) -> None:
        """Synchronous, so it only schedules the work.

        The call's bookkeeping is done here, before anything awaits, so an end that
        arrives while the ringing lookup is still running finds its call.
        """
        if isinstance(event, CallRinging):
            entry = self._start(event)
            if entry is not None:
                entry.ringing = self._spawn(self._ring(entry))
            return
        if isinstance(event, CallRedirected):
            self._redirected(event)
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
        await self._settle_questions(entry, staff.id)
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
            found: tuple[_Call, AnsweredHow] | list[_Call] = (
                (handed, "identity") if handed is not None else self._match(change, now)
            )
            if isinstance(found, list):
                self.dialogs_unmatched += 1
                log.info("extension %s answered a call callpop cannot tell", change.extension)
                # Several calls fit: the person on the phone is asked, never guessed for.
                unclaimed = [e for e in found if e.call.answered_by is None]
                if len(found) > 1 and unclaimed and staff.id is not None:
                    self._ask(key, staff, unclaimed, now)
                return
            entry, how = found
            self.dialogs_matched += 1
            self._talking[key] = entry.call.id
            if len(self._talking) > RECENT_CALLS:  # a terminated that never came
                del self._talking[next(iter(self._talking))]
            self._spawn(self._answer(entry, staff, how, now))
        elif state == "terminated":
            for question in self._questions.values():
                if question.key == key and question.hung_up_at is None:
                    question.hung_up_at = self._clock()
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
        self._record_handover(entry)

    def _match(
        self, change: DialogChange, now: datetime
    ) -> tuple[_Call, AnsweredHow] | list[_Call]:
        """The call ``change`` answered and how that is known, else the calls that fit
        (none, or several that cannot be told apart)."""
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
            # A call the caller gave up on cannot be answered now: the calls still going
            # (ringing, or their ring leg cancelled because a phone picked up) come first;
            # the same number calling two lines, the older one is answered first.
            going = [e for e in same if e.call.outcome in (None, "answered_elsewhere")]
            if going:
                return going[0], "identity"
            # A PBX that cancels without Reason: cause=200 ends the leg as abandoned; the
            # one that ended a moment ago is the one answered.
            just_ended = [
                e
                for e in same
                if e.call.ended_at is not None and abs(now - e.call.ended_at) <= CANCEL_MATCH_WINDOW
            ]
            return (just_ended[-1], "identity") if just_ended else []
        cancelled = [
            e
            for e in recent
            if e.call.outcome == "answered_elsewhere"
            and e.call.ended_at is not None
            and abs(now - e.call.ended_at) <= CANCEL_MATCH_WINDOW
        ]
        if len(cancelled) == 1:
            return cancelled[0], "time-window"
        return cancelled

    # --- どちらが応答しましたか ------------------------------------------------------------

    def _ask(
        self, key: tuple[str, str], staff: StaffOnExtension, calls: list[_Call], now: datetime
    ) -> None:
        """Ask the phone's browser which of ``calls`` it answered (``call.which``)."""
        assert staff.id is not None
        stale = [q for q in self._questions.values() if now - q.asked_at > CLAIM_WINDOW]
        while len(self._questions) - len(stale) >= OPEN_QUESTIONS:
            oldest = next(q for q in self._questions.values() if q not in stale)
            stale.append(oldest)
            self.which_dropped += 1
            if (repeats := self._questions_said.allow("full")) is not None:
                log.warning(
                    "which-call questions: %d open, the oldest closed unanswered "
                    "(%d since start, %d more since last said)",
                    OPEN_QUESTIONS,
                    self.which_dropped,
                    repeats,
                )
        for question in stale:
            del self._questions[question.id]
            self._spawn(self._publish_question(question, closed=True))
        question = _Question(
            id=uuid.uuid4().hex,
            key=key,
            staff=staff,
            asked_at=now,
            call_ids=[entry.call.id for entry in calls],
        )
        self._questions[question.id] = question
        self.which_asked += 1
        log.info("asking extension %s which of %d calls it answered", staff.extension, len(calls))
        self._spawn(self._publish_question(question))

    async def _publish_question(self, question: _Question, *, closed: bool = False) -> None:
        entries = [self._recent[i] for i in question.call_ids if i in self._recent]
        pending = {e.ringing for e in entries if e.ringing is not None}
        if pending:
            await asyncio.wait(pending)  # their pops (and customer names) come first
        assert question.staff.id is not None
        await self._hub.publish(
            WhichCallMessage(
                question_id=question.id,
                staff_id=question.staff.id,
                name=question.staff.name,
                extension=question.staff.extension,
                asked_at=question.asked_at,
                state="closed" if closed else "open",
                calls=[]
                if closed
                else [
                    WhichCandidate(
                        call_id=e.call.id,
                        started_at=e.call.started_at,
                        caller=e.call.caller,
                        customer_name=e.customer_name,
                    )
                    for e in entries
                ],
            )
        )

    async def _settle_questions(self, entry: _Call, staff_id: int | None) -> None:
        """``entry`` was answered by ``staff_id``: its questions close or offer less."""
        for question in list(self._questions.values()):
            if entry.call.id not in question.call_ids:
                continue
            if question.staff.id == staff_id:
                del self._questions[question.id]
                # The phone's dialog is this call: its hang-up ends the talk.
                if question.hung_up_at is not None:
                    self._spawn(self._talk_ended(entry, question.hung_up_at))
                elif question.key not in self._talking:
                    self._talking[question.key] = entry.call.id
                    if len(self._talking) > RECENT_CALLS:  # a terminated that never came
                        del self._talking[next(iter(self._talking))]
                await self._publish_question(question, closed=True)
                continue
            question.call_ids.remove(entry.call.id)
            if not question.call_ids:
                del self._questions[question.id]
            await self._publish_question(question, closed=not question.call_ids)

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
        elif how != "claimed" and _ring_leg_just_cancelled(entry.call, now):
            # Ring-all: callpop's leg was cancelled because this phone picked up (its
            # CANCEL usually comes before the NOTIFY). The talk is on: answered again.
            changes.update(state=CallState.ANSWERED, outcome=None, ended_at=None)
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
        if "handover" in changes:
            self._record_handover(entry)
        await self._hub.publish(CallAnsweredMessage(call=entry.call))
        await self._settle_questions(entry, staff.id)

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
        self._record_handover(entry)
        return entry.call

    def _record_handover(self, entry: _Call) -> None:
        handover = entry.call.handover
        if handover is None:
            return
        self._call_log.submit(
            record_call_handover,
            id=entry.call.id,
            from_staff_id=handover.from_staff_id,
            to_staff_id=handover.to_staff_id,
            to_extension=handover.to_extension,
            state=handover.state,
            note=handover.note,
        )

    def staff_presence(self, staff: list[StaffPresence]) -> None:
        """Extensions' presence changed: to the board (``staff.presence``), in order."""
        self._spawn(self._publish_presence(staff))

    async def _publish_presence(self, staff: list[StaffPresence]) -> None:
        await self._hub.publish(StaffPresenceMessage(staff=staff))

    # --- routed calls (known-customer routing) ---------------------------------------

    def _redirected(self, event: CallRedirected) -> None:
        """callpop's leg ended with a 302: the call rings on at the target.

        It stays ``ringing`` (not missed, not abandoned); the watched extensions' dialog
        events say who answered (:meth:`on_dialog`). Without one within the ring
        timeout it ends with the outcome ``routed``.
        """
        entry = self._by_sip_id.pop(event.call_id, None)
        if entry is None:
            return
        if event.by_deadline:
            entry.redirected_to = event.target
        if len(self._routed) >= RECENT_CALLS:
            call_id, handle = self._routed.popitem(last=False)
            handle.cancel()
            self.routed_overflow += 1
            held_back = self._overflow_said.allow("routed")
            if held_back is not None:
                log.warning(
                    "%d routed calls pending; the oldest ended early (%d more since the last line)",
                    RECENT_CALLS,
                    held_back,
                )
            self._routed_unresolved(call_id)
        loop = asyncio.get_running_loop()
        self._routed[entry.call.id] = loop.call_later(
            self._ring_timeout, self._routed_unresolved, entry.call.id
        )

    def _routed_unresolved(self, call_id: str) -> None:
        self._routed.pop(call_id, None)
        entry = self._recent.get(call_id)
        if entry is not None and entry.call.state is CallState.RINGING:
            self._spawn(self._end_routed(entry))

    async def _end_routed(self, entry: _Call) -> None:
        if entry.ringing is not None:
            await asyncio.wait({entry.ringing})
        if entry.call.state is not CallState.RINGING:
            return
        entry.ended = True
        now = self._clock()
        entry.call = entry.call.model_copy(
            update={"state": CallState.ENDED, "outcome": "routed", "ended_at": now}
        )
        await self._hub.publish(CallEndedMessage(call=entry.call))
        self._call_log.submit(record_call_ended, id=entry.call.id, ended_at=now, outcome="routed")

    def _route(self, entry: _Call, card: CallerCard) -> None:
        """Decide where a routed line's call goes and send the 302 (synchronous)."""
        if self._router is None or not entry.awaiting_route:
            return
        call = entry.call
        try:
            routing = self._router.route(
                call_id=call.id,
                sip_call_id=call.sip_call_id,
                dialed=call.dialed_line.number if call.dialed_line else None,
                card=card,
                by_deadline=entry.redirected_to,
                now=self._clock(),
            )
        except Exception:
            # A bug must not cost the pop; the SIP side's deadline sends the call to
            # the ring group.
            self.routing_errors += 1
            log.exception("routing call %s failed; the ring group gets it", call.id)
            return
        if routing is not None:
            entry.call = call.model_copy(update={"routing": routing})

    async def place(self, event: CallRinging | CallEnded | CallRedirected) -> None:
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
        entry = _Call(call=call, number=number, awaiting_route=event.awaiting_route)
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
        entry.customer_name = _only_customer_name(card)
        # A routed line's 302 goes out first (no await: microseconds), so the pop carries
        # the decision and waits no longer than any other pop.
        self._route(entry, card)
        call = entry.call
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
        entry.customer_name = _only_customer_name(card)
        await self._hub.publish(CallUpdatedMessage(call=entry.call, card=card))
        if entry.customer_id is None:
            return
        # Spawned after the started row was submitted, so the call log applies it after.
        self._call_log.submit(record_call_customer, id=entry.call.id, customer_id=entry.customer_id)

    async def _end(self, entry: _Call, event: CallEnded) -> None:
        if entry.ringing is not None:
            await asyncio.wait({entry.ringing})  # the ringing pop goes out first
        answerer = entry.call.answered_by
        if (
            event.reason is EndReason.ANSWERED_ELSEWHERE
            and entry.call.state is not CallState.RINGING
            and answerer is not None
            and answerer.how != "claimed"
        ):
            # A watched phone has the call (its NOTIFY came first): only callpop's ring
            # leg ended. The phone's dialog ends the talk (on_dialog, terminated), or
            # already did.
            return
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
        if call.routing is not None:
            self._call_log.submit(
                record_call_routed,
                id=call.id,
                to=call.routing.extension or call.routing.target,
                staff_id=call.routing.staff_id,
                reason=call.routing.reason,
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
        for handle in self._routed.values():
            handle.cancel()  # the interrupted-call sweep at the next start closes them
        self._routed.clear()
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
