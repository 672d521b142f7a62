"""The whole vocabulary of what the SIP side reports, as frozen dataclasses.

Everything the rest of callpop learns from telephony arrives as one of these
events. They carry only what SIP told us: numbers are raw (as received, not
normalised), times are the monotonic/wall ``now`` the core was given.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Withheld(StrEnum):
    """Why the caller's number is not shown (RFC 3323/3325, JP carrier practice)."""

    ANONYMOUS = "anonymous"  # 非通知
    PAYPHONE = "payphone"  # 公衆電話 ("Coin line/payphone")
    UNAVAILABLE = "unavailable"  # 表示圏外 ("Unavailable")
    INTERACTION = "interaction"  # "Interaction with other service"


class CallerIdSource(StrEnum):
    P_ASSERTED_IDENTITY = "p-asserted-identity"
    REMOTE_PARTY_ID = "remote-party-id"
    FROM = "from"


class EndReason(StrEnum):
    ANSWERED_ELSEWHERE = "answered_elsewhere"  # CANCEL with Reason: SIP;cause=200
    ABANDONED = "abandoned"  # CANCEL without such reason: the caller gave up (missed call)
    TIMEOUT = "timeout"  # nobody ended the ring within ring_timeout: we sent 480
    HANGUP = "hangup"  # BYE received for the dialog


class RegistrationState(StrEnum):
    DISABLED = "disabled"  # trunk mode: no registration wanted
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"  # last attempt failed; retrying with back-off


class SubscriptionState(StrEnum):
    """Where the RFC 4235 dialog-event subscription to one extension stands."""

    SUBSCRIBING = "subscribing"  # SUBSCRIBE sent, no 2xx/NOTIFY yet
    ACTIVE = "active"  # the PBX accepted it; NOTIFYs flow
    FAILED = "failed"  # refused (4xx/5xx/481) or unanswered; retrying with back-off
    TERMINATED = "terminated"  # ended by the notifier (retrying) or by us (stopped)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerId:
    """Who is calling, as SIP presented it.

    ``number`` is the user part (or tel: number) as received, e.g. ``"0312345678"``
    or ``"+81312345678"``; ``None`` when withheld or absent. ``dialed`` is the raw
    number of the office line that was called (Diversion / P-Called-Party-ID / To /
    Request-URI), or ``None``.
    """

    number: str | None
    display_name: str | None
    withheld: Withheld | None
    source: CallerIdSource | None
    dialed: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRinging:
    call_id: str  # SIP Call-ID of the INVITE
    caller: CallerId
    at: float  # the `now` given to the core when the INVITE arrived
    remote: tuple[str, int]  # address the INVITE came from
    # A routed line (known-customer routing): only 100 Trying was sent; the call waits
    # for SipEndpoint.redirect, or is redirected to the line's fallback at the deadline.
    awaiting_route: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRedirected:
    """A routed call was answered ``302 Moved Temporarily`` with ``target`` in Contact.

    callpop's own leg is over (it replaces that leg's ``CallEnded``); the call goes on at
    the target. ``by_deadline``: no decision came in time, ``target`` is the fallback.
    """

    call_id: str
    target: str  # the SIP URI in the 302's Contact
    by_deadline: bool
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered:
    """Reserved for RFC 4235 dialog events (who answered); not emitted yet."""

    call_id: str
    answered_by: str  # extension
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    call_id: str
    reason: EndReason
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationChanged:
    state: RegistrationState
    at: float
    detail: str = ""  # e.g. "403 Forbidden", "no response", "registered for 300 s"
    expires_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogNotified:
    """A NOTIFY for a watched extension (RFC 4235 ``Event: dialog``), body unparsed.

    ``body`` is the NOTIFY body as received (normally ``application/dialog-info+xml``);
    telephony/dialoginfo.py turns it into dialog states. ``content_type`` is the
    Content-Type header as received ("" when absent).
    """

    extension: str
    body: bytes
    content_type: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionChanged:
    """The dialog-event subscription to ``extension`` changed state (see SubscriptionState)."""

    extension: str
    state: SubscriptionState
    detail: str  # e.g. "active for 600 s", "481 Subscription does not exist", "no response"
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRejected:
    """A datagram that was dropped or refused (counted for /healthz and logs)."""

    remote: tuple[str, int]
    reason: str  # e.g. "host not allowed", "unparseable: missing CSeq"
    at: float


Event = (
    CallRinging
    | CallAnswered
    | CallEnded
    | CallRedirected
    | RegistrationChanged
    | RequestRejected
    | DialogNotified
    | SubscriptionChanged
)
