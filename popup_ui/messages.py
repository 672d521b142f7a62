"""The board's wire vocabulary: every WebSocket message, as pydantic models.

One union keyed on ``type`` (:data:`BoardMessage`) is everything ``/ws`` sends. A
browser first gets a :class:`BoardSnapshot` (the calls active now, with the board's
sequence number), then one live message per change, each with the next ``seq``; a
browser that sees a gap reconnects and gets a fresh snapshot. docs/protocol.md is
checked against these models (tests/web/test_protocol_doc.py).

Knows calls and cards as data; nothing of SIP, sockets or the database.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter

from lookup.card import CallerCard

# Times go out with milliseconds and their offset: "2026-11-22T10:31:05.123+09:00".
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda moment: moment.isoformat(timespec="milliseconds"), return_type=str),
]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CallState(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class Caller(_Wire):
    """Who is calling, normalised once on the call path."""

    number: str | None = Field(description="E.164, or null (withheld, extension, unreadable)")
    national: str | None = Field(description="as people read it: 03-1234-5678, or 203")
    raw: str | None = Field(description="as SIP presented it")
    display_name: str | None
    withheld: Literal["anonymous", "payphone", "unavailable", "interaction"] | None
    source: Literal["p-asserted-identity", "remote-party-id", "from"] | None


class DialedLine(_Wire):
    """Which of the office's numbers was called."""

    number: str | None = Field(description="E.164")
    national: str | None
    name: str | None = Field(description="the line's name from [numbering.lines]: 代表, FAX")


class AnsweredBy(_Wire):
    """Who took a call, and how callpop knows."""

    staff_id: int | None
    name: str | None
    extension: str | None
    # claimed: the person pressed 応答しました; the others come from the PBX's dialog
    # events (RFC 4235): the remote identity, the SIP Call-ID, or the time window.
    how: Literal["claimed", "identity", "call-id", "time-window"]


class Handover(_Wire):
    """転送メモ: the person who has the call hands it on, with one line for the next."""

    from_staff_id: int | None
    from_name: str | None
    to_staff_id: int
    to_name: str
    to_extension: str
    note: str
    at: Timestamp
    # requested: written; ringing: the PBX rings the target's extension with this caller;
    # answered: the target took it (the call's answered_by is now them).
    state: Literal["requested", "ringing", "answered"]


RoutingReason = Literal[
    "assignee-idle",
    "assignee-busy",
    "assignee-presence-unknown",
    "unknown-caller",
    "several-customers",
    "no-assignee",
    "lookup-timeout",
    "degraded",
    "deadline",
]


class Routing(_Wire):
    """Known-customer routing: where callpop redirected a routed line's call, and why."""

    target: str = Field(description="the SIP URI sent in the 302's Contact")
    extension: str | None = Field(description="the target's extension (203, 600), if it is one")
    staff_id: int | None = Field(description="the 担当者 when the call went straight to them")
    name: str | None = Field(description="the 担当者's name when the call went straight to them")
    reason: RoutingReason
    decided_at: Timestamp


# Outcomes of callpop's ring leg after which a watched phone's answer (within seconds)
# brings the call back, answered: the leg cancelled as answered elsewhere, or cancelled
# without a Reason by a PBX that does not say why (docs/protocol.md, call.answered).
REANSWERABLE = frozenset({"answered_elsewhere", "abandoned"})


class Call(_Wire):
    id: str = Field(description="callpop's call id (uuid4 hex)")
    sip_call_id: str
    started_at: Timestamp
    ended_at: Timestamp | None = None
    state: CallState = CallState.RINGING
    # interrupted: the service stopped (crash, kill -9) before it saw the end.
    # routed: callpop redirected it (302, known-customer routing) and no dialog event said
    # more within sip.ring_timeout.
    outcome: (
        Literal["answered_elsewhere", "abandoned", "timeout", "hangup", "interrupted", "routed"]
        | None
    ) = None
    answered_by: AnsweredBy | None = Field(default=None, description="who took the call")
    answered_at: Timestamp | None = None
    talk_seconds: int | None = Field(default=None, description="when the end of the talk is known")
    handover: Handover | None = None
    caller: Caller
    dialed_line: DialedLine | None = None
    routing: Routing | None = Field(default=None, description="routed lines only")


class BoardEntry(_Wire):
    """One active call as the board holds it: the call and the card it popped with."""

    call: Call
    card: CallerCard | None


class StaffPresence(_Wire):
    """What a staff member's extension is doing, from the PBX's dialog events."""

    staff_id: int | None
    name: str | None
    extension: str
    # busy: on a call; unknown: not watched, or the PBX has not said (yet).
    presence: Literal["idle", "ringing", "busy", "unknown"]


class WhichCandidate(_Wire):
    """One call a ``call.which`` question offers: who called, and when."""

    call_id: str
    started_at: Timestamp
    caller: Caller
    customer_name: str | None = Field(description="the one customer the number names, or null")


class WhichCallMessage(_Wire):
    """どちらが応答しましたか: the phone on ``extension`` answered one of ``calls`` and the
    PBX did not say which (no identity, no Call-ID, several ring legs cancelled at once).
    Only the browser of ``staff_id`` shows it; it answers with ``POST /api/calls/{id}/claim``.
    ``open`` again with fewer ``calls`` when others took some; ``closed`` once answered
    or when none is left to offer."""

    type: Literal["call.which"] = "call.which"
    seq: int = 0
    question_id: str
    staff_id: int
    name: str | None
    extension: str
    asked_at: Timestamp
    state: Literal["open", "closed"] = "open"
    calls: list[WhichCandidate] = Field(description="oldest first; empty once closed")


class BoardSnapshot(_Wire):
    """The first message on a connection: every active call, oldest first."""

    type: Literal["board.snapshot"] = "board.snapshot"
    seq: int = Field(description="the board's sequence number; the next live message has seq+1")
    calls: list[BoardEntry]
    staff: list[StaffPresence] = Field(
        default_factory=list, description="every watched extension's presence"
    )
    questions: list[WhichCallMessage] = Field(
        default_factory=list, description="call.which questions still open, oldest first"
    )


class StaffPresenceMessage(_Wire):
    """An extension's presence changed: ``staff`` lists the ones that changed."""

    type: Literal["staff.presence"] = "staff.presence"
    seq: int = 0
    staff: list[StaffPresence]


class CallRingingMessage(_Wire):
    type: Literal["call.ringing"] = "call.ringing"
    seq: int = 0
    call: Call
    card: CallerCard


class CallUpdatedMessage(_Wire):
    """The call changed (its card arrived late, …): replace what is shown for its id."""

    type: Literal["call.updated"] = "call.updated"
    seq: int = 0
    call: Call
    card: CallerCard | None = None


class CallAnsweredMessage(_Wire):
    type: Literal["call.answered"] = "call.answered"
    seq: int = 0
    call: Call


class CallEndedMessage(_Wire):
    type: Literal["call.ended"] = "call.ended"
    seq: int = 0
    call: Call


CallMessage = CallRingingMessage | CallUpdatedMessage | CallAnsweredMessage | CallEndedMessage
LiveMessage = CallMessage | StaffPresenceMessage | WhichCallMessage
BoardMessage = Annotated[
    BoardSnapshot
    | CallRingingMessage
    | CallUpdatedMessage
    | CallAnsweredMessage
    | CallEndedMessage
    | StaffPresenceMessage
    | WhichCallMessage,
    Field(discriminator="type"),
]
board_message = TypeAdapter[BoardMessage](BoardMessage)
