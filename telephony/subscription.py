"""The SUBSCRIBE client: watch one extension's calls through RFC 4235 dialog events.

Theory of operation. One :class:`SubscriptionClient` owns one subscription (RFC 6665)
to ``Event: dialog`` of one extension, ``sip:<extension>@<domain>``, sent through the
registrar (the same outbound target as REGISTER), and everything that affects it lives
here: the SUBSCRIBE client transaction (RFC 3261 §17.1.2, the timers shared with
``registration.py``), digest authentication (401/407, the ``DigestAuth`` shared with
``registration.py``), the dialog the subscription creates (Call-ID, our From tag, the
notifier's tag, its Contact and the route set), the refresh before the granted expiry
(RFC 6665 §4.1.2.2), the NOTIFYs for that dialog (RFC 6665 §4.1.3) and the back-off
before subscribing again after a refusal, a silence, or a ``terminated`` NOTIFY.

It is sans-I/O: fed responses, NOTIFY requests and ``now``; it hands back datagrams,
events and the time of its next timer. NOTIFY bodies are handed up unparsed
(:class:`~telephony.events.DialogNotified`): reading dialog-info XML is
``telephony/dialoginfo.py``'s business, not this module's.

Transitions between phases are listed in ``_TRANSITIONS``; an input a phase does not
expect is counted as a stray and ignored.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from telephony.events import DialogNotified, SubscriptionChanged, SubscriptionState
from telephony.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    build_request,
    new_branch,
    new_call_id,
    new_tag,
)
from telephony.registration import (
    ClientTimers,
    DigestAuth,
    delta_seconds,
    refresh_delay,
    retry_backoff,
)
from telephony.uri import SipUri, hostport, parse_name_addr, parse_via

EVENT_PACKAGE = "dialog"  # RFC 4235 §3.1
ACCEPT = "application/dialog-info+xml"  # RFC 4235 §4.1
# A dialog-info document for one extension is ~0.6 KB per dialog (Kamailio 5.6,
# include_localremote); 32 KiB holds dozens. Bigger NOTIFY bodies are refused with 413
# (RFC 3261 §21.4.11 "Request Entity Too Large") and counted, never handed up. (64 KiB
# would be a limit no UDP datagram can reach.)
MAX_NOTIFY_BODY = 32 * 1024
# What an extension may look like: the user part of a SIP URI we build ourselves, so
# nothing from the config or the database can inject header text (RFC 3261 §25.1
# "user" is wider; office extensions are digits, maybe with * # + . _ -).
EXTENSION_PATTERN = re.compile(r"[0-9A-Za-z*#+._-]{1,32}")


def check_extension(extension: str) -> str:
    """``extension`` if it can be watched, else ValueError naming it."""
    if not EXTENSION_PATTERN.fullmatch(extension):
        raise ValueError(f"extension {extension!r} to watch is not 1-32 of 0-9 A-Z a-z * # + . _ -")
    return extension


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionParams:
    """What the client needs to know about the watched extension, the PBX and us."""

    extension: str
    registrar: tuple[str, int]  # where SUBSCRIBEs are sent (the registrar, resolved)
    domain: str  # the extension's domain: sip:<extension>@<domain>
    user: str  # our own user (From and Contact), as registered
    auth_user: str
    password: str
    expires: int  # asked for; the 2xx says what was granted (RFC 6665 §4.1.2.1)
    local: tuple[str, int]  # our Via sent-by and Contact host:port
    user_agent: str
    retry_base: float = 2.0
    retry_max: float = 60.0

    def __post_init__(self) -> None:
        check_extension(self.extension)
        if not self.domain:
            raise ValueError("SubscriptionParams.domain is empty")
        if self.expires < 1:
            raise ValueError("SubscriptionParams.expires must be at least 1 s")


class _Phase(enum.Enum):
    IDLE = "idle"  # not started, or waiting for a staggered (re)start
    SUBSCRIBING = "subscribing"  # SUBSCRIBE for a new dialog in flight
    ACTIVE = "active"  # subscribed, waiting for the refresh time
    REFRESHING = "refreshing"  # in-dialog SUBSCRIBE in flight
    BACKING_OFF = "backing_off"  # failed or terminated, waiting to subscribe again
    UNSUBSCRIBING = "unsubscribing"  # Expires: 0 in flight
    STOPPED = "stopped"


class _Input(enum.Enum):
    START = "start"
    RESTART = "restart"  # the registration was re-established: a new dialog
    STOP = "stop"
    OK = "2xx"
    CHALLENGE = "401/407"
    FAILURE = "failure"  # 3xx-6xx other than 401/407 (481 among them)
    PROVISIONAL = "1xx"
    RETRANSMIT = "timer E"
    TIMEOUT = "timer F"
    REFRESH = "refresh due"
    RETRY = "retry due"
    TERMINATED = "NOTIFY terminated"


@dataclass(slots=True)
class _Dialog:
    """The dialog a SUBSCRIBE creates (RFC 6665 §4.1.2.1, RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str | None = None  # the notifier's tag: from the 2xx or the first NOTIFY
    remote_target: str | None = None  # its Contact (2xx or NOTIFY): refresh Request-URI
    route_set: list[str] = field(default_factory=list)
    cseq: int = 0


@dataclass(frozen=True, slots=True)
class _Ending:
    """Why a NOTIFY ended the subscription (RFC 6665 §4.1.3)."""

    reason: str
    retry_after: int | None


class SubscriptionClient:
    """One dialog-event subscription to one extension, kept alive until :meth:`stop`."""

    def __init__(self, params: SubscriptionParams) -> None:
        self.params = params
        self.extension = params.extension
        self.state = SubscriptionState.SUBSCRIBING
        self.detail = "not started"
        self.expires_at: float | None = None
        self.attempts = 0  # SUBSCRIBE transactions started
        self.failures = 0  # consecutive failures (drives the back-off)
        self.failed = 0  # failures ever (stats subscription_failures)
        self.notifies = 0  # NOTIFYs accepted for our dialog
        self.too_large = 0  # NOTIFYs refused with 413
        self.unmatched = 0  # NOTIFYs with our Call-ID refused with 481 (tags, Event)
        self.strays = 0  # responses or timers no phase expected
        self.unsubscribed = False  # the notifier confirmed our Expires: 0 with a 2xx
        self._phase = _Phase.IDLE
        self._dialog = self._new_dialog()
        self._branch = ""
        self._request = b""
        self._timers = ClientTimers()
        self._wakeup_at: float | None = None  # staggered start, refresh or retry
        self._auth = DigestAuth(params.auth_user or params.user, params.password)
        self._ending: _Ending | None = None
        self._retry_after: int | None = None
        self._outbox: list[bytes] = []
        self._events: list[DialogNotified | SubscriptionChanged] = []

    # -- public API -----------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._phase in (_Phase.ACTIVE, _Phase.REFRESHING)

    @property
    def stopped(self) -> bool:
        """Unsubscribed (or never subscribed) after :meth:`stop`: nothing more to do."""
        return self._phase is _Phase.STOPPED

    @property
    def call_id(self) -> str:
        return self._dialog.call_id

    def start(self, now: float, *, delay: float = 0.0) -> None:
        """Subscribe now, or after ``delay`` seconds (the endpoint staggers many)."""
        if delay > 0 and self._phase is _Phase.IDLE:
            self._wakeup_at = now + delay
            return
        self._dispatch(_Input.START, now, None)

    def restart(self, now: float, *, delay: float = 0.0) -> None:
        """Forget the current dialog and subscribe afresh (after a PBX restart)."""
        self._dispatch(_Input.RESTART, now, None)
        if self._phase is _Phase.IDLE:
            self.start(now, delay=delay)

    def stop(self, now: float) -> None:
        self._dispatch(_Input.STOP, now, None)

    def receive_response(self, response: SipResponse, now: float) -> bool:
        """Feed a response to SUBSCRIBE; False when it is not ours."""
        if response.call_id != self._dialog.call_id or not self._branch:
            return False
        via = response.headers.get("Via")
        if via is None or parse_via(via).branch != self._branch:
            return False
        status = response.status
        if status < 200:
            kind = _Input.PROVISIONAL
        elif status < 300:
            kind = _Input.OK
        elif status in (401, 407):
            kind = _Input.CHALLENGE
        else:
            kind = _Input.FAILURE
        self._dispatch(kind, now, response)
        return True

    def receive_notify(self, request: SipRequest, now: float) -> tuple[int, str]:
        """Take a NOTIFY with our Call-ID; the status and reason to answer it with."""
        dialog = self._dialog
        if self._phase in (_Phase.IDLE, _Phase.BACKING_OFF, _Phase.STOPPED):
            # The dialog this NOTIFY belongs to was given up (RFC 6665 §4.1.3: 481).
            self.unmatched += 1
            return 481, "Subscription Does Not Exist"
        try:
            to_tag = parse_name_addr(request.headers.get("To") or "").tag
            from_tag = parse_name_addr(request.headers.get("From") or "").tag
        except (SipParseError, ValueError):
            return 400, "Bad From/To"
        event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if to_tag != dialog.local_tag or from_tag is None or event != EVENT_PACKAGE:
            self.unmatched += 1
            return 481, "Subscription Does Not Exist"
        if dialog.remote_tag is None:
            # RFC 6665 §4.1.2.4: a NOTIFY may come before the 2xx; it creates the dialog.
            dialog.remote_tag = from_tag
        elif from_tag != dialog.remote_tag:
            # Another notifier (a forked SUBSCRIBE): we keep one dialog per extension.
            self.unmatched += 1
            return 481, "Subscription Does Not Exist"
        state_header = request.headers.get("Subscription-State")
        if state_header is None:
            return 400, "Missing Subscription-State"  # RFC 6665 §8.2.3: it is mandatory
        if len(request.body) > MAX_NOTIFY_BODY:
            self.too_large += 1
            return 413, "Request Entity Too Large"  # RFC 3261 §21.4.11
        self.notifies += 1
        self._learn_target(request.headers.get("Contact"))  # NOTIFY is a target refresh
        if request.body:
            self._events.append(
                DialogNotified(
                    extension=self.extension,
                    body=request.body,
                    content_type=(request.headers.get("Content-Type") or "").strip(),
                    at=now,
                )
            )
        value, params = _parse_state(state_header)
        if value == "terminated":
            self._ending = _Ending(
                reason=params.get("reason") or "",
                retry_after=delta_seconds(params.get("retry-after")),
            )
            self._dispatch(_Input.TERMINATED, now, None)
        else:
            self._on_state_expires(now, delta_seconds(params.get("expires")))
        return 200, "OK"

    def get_timer(self) -> float | None:
        timers = self._timers
        times = [t for t in (timers.retransmit_at, timers.give_up_at, self._wakeup_at) if t]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self._timers.timed_out(now):
            self._dispatch(_Input.TIMEOUT, now, None)
        elif self._timers.retransmit_due(now):
            self._dispatch(_Input.RETRANSMIT, now, None)
        if self._wakeup_at is not None and now >= self._wakeup_at:
            self._wakeup_at = None
            kind = {
                _Phase.IDLE: _Input.START,
                _Phase.ACTIVE: _Input.REFRESH,
            }.get(self._phase, _Input.RETRY)
            self._dispatch(kind, now, None)

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def events(self) -> list[DialogNotified | SubscriptionChanged]:
        out, self._events = self._events, []
        return out

    @property
    def retry_delay(self) -> float:
        """Back-off before the next SUBSCRIBE (:func:`~telephony.registration.retry_backoff`)."""
        return retry_backoff(self.failures, self.params.retry_base, self.params.retry_max)

    # -- state machine --------------------------------------------------------------

    def _dispatch(self, kind: _Input, now: float, response: SipResponse | None) -> None:
        handler = _TRANSITIONS.get((self._phase, kind))
        if handler is None:
            self.strays += 1  # a late or duplicate response, a timer of a past phase
            return
        handler(self, now, response)

    def _on_start(self, now: float, _: SipResponse | None) -> None:
        self._end_transaction()
        self._wakeup_at = None
        self._dialog = self._new_dialog()
        self._set_state(SubscriptionState.SUBSCRIBING, now, "")
        self._send_subscribe(now, self.params.expires, _Phase.SUBSCRIBING)

    def _on_restart(self, now: float, _: SipResponse | None) -> None:
        # The PBX restarted (our registration was re-established): whatever dialog we
        # had is gone there. The next start() makes a new one.
        self._end_transaction()
        self._wakeup_at = None
        self.expires_at = None
        self._dialog = self._new_dialog()
        self._phase = _Phase.IDLE

    def _on_refresh(self, now: float, _: SipResponse | None) -> None:
        # RFC 6665 §4.1.2.2: refresh with a SUBSCRIBE in the dialog; the public state
        # stays ACTIVE while the subscription is still valid.
        self._send_subscribe(now, self.params.expires, _Phase.REFRESHING)

    def _on_stop(self, now: float, _: SipResponse | None) -> None:
        self._wakeup_at = None
        if self._phase in (_Phase.ACTIVE, _Phase.REFRESHING):
            # RFC 6665 §4.1.2.3: a SUBSCRIBE with Expires: 0 ends the subscription.
            self._end_transaction()
            self._send_subscribe(now, 0, _Phase.UNSUBSCRIBING)
        else:
            self._finish(now)

    def _on_provisional(self, now: float, _: SipResponse | None) -> None:
        self._timers.proceeding(now)

    def _on_retransmit(self, now: float, _: SipResponse | None) -> None:
        self._outbox.append(self._request)
        self._timers.retransmitted(now)

    def _on_ok(self, now: float, response: SipResponse | None) -> None:
        assert response is not None
        self._end_transaction()
        self._auth.accepted()
        # RFC 6665 §4.1.2.1: the 2xx carries the granted duration in Expires.
        granted = delta_seconds(response.headers.get("Expires"))
        if granted is None:
            granted = self.params.expires
        if granted <= 0:
            self._fail(now, f"{response.status} {response.reason} with Expires: 0")
            return
        dialog = self._dialog
        if self._phase is _Phase.SUBSCRIBING:
            try:
                to_tag = parse_name_addr(response.headers.get("To") or "").tag
            except (SipParseError, ValueError):
                to_tag = None
            if dialog.remote_tag is None:
                dialog.remote_tag = to_tag
            # RFC 3261 §12.1.2: the UAC's route set is the Record-Route in reverse.
            dialog.route_set = list(reversed(response.headers.get_all("Record-Route")))
        self._learn_target(response.headers.get("Contact"))
        self.failures = 0
        self.expires_at = now + granted
        self._phase = _Phase.ACTIVE
        self._wakeup_at = now + refresh_delay(granted)
        self._set_state(SubscriptionState.ACTIVE, now, f"active for {granted} s")

    def _on_challenge(self, now: float, response: SipResponse | None) -> None:
        assert response is not None
        self._end_transaction()
        problem = self._auth.challenged(response)
        if problem is not None:
            if self._phase is _Phase.UNSUBSCRIBING:
                self._finish(now)
            else:
                self._fail(now, problem)
            return
        # RFC 3261 §22.2: the same request again, in the same dialog, with credentials.
        expires = 0 if self._phase is _Phase.UNSUBSCRIBING else self.params.expires
        self._send_subscribe(now, expires, self._phase)

    def _on_failure(self, now: float, response: SipResponse | None) -> None:
        assert response is not None
        self._end_transaction()
        self._auth.accepted()
        # RFC 6665 §4.1.2.2: a failed refresh (481 above all) ends the subscription; so
        # does any refusal of a new one. Either way a new SUBSCRIBE follows the back-off,
        # no sooner than a Retry-After the PBX gave (RFC 3261 §20.33).
        self._retry_after = delta_seconds((response.headers.get("Retry-After") or "").split(";")[0])
        self._fail(now, f"{response.status} {response.reason}")

    def _on_timeout(self, now: float, _: SipResponse | None) -> None:
        self._end_transaction()
        self._fail(now, "no response (Timer F)")

    def _on_terminated(self, now: float, _: SipResponse | None) -> None:
        # RFC 6665 §4.1.3: the notifier ended the subscription. Even "deactivated" or
        # "timeout", which may be retried at once, wait one back-off step: a notifier
        # that ends every subscription straight away must not get a SUBSCRIBE storm.
        ending = self._ending or _Ending(reason="", retry_after=None)
        self._ending = None
        self._end_transaction()
        self.failures += 1
        self.failed += 1
        self.expires_at = None
        self._phase = _Phase.BACKING_OFF
        delay = max(self.retry_delay, float(ending.retry_after or 0))
        self._wakeup_at = now + delay
        reason = f" (reason={ending.reason})" if ending.reason else ""
        self._set_state(SubscriptionState.TERMINATED, now, f"terminated by the PBX{reason}")

    def _on_unsubscribed(self, now: float, response: SipResponse | None) -> None:
        # A 2xx confirms it; a failure or silence ends it on our side all the same.
        self.unsubscribed = response is not None and 200 <= response.status < 300
        self._finish(now)

    def _on_ignored(self, now: float, _: SipResponse | None) -> None:
        # The final NOTIFY after our Expires: 0 (RFC 6665 §4.1.2.3): answered, nothing
        # else to do.
        pass

    # -- steps ----------------------------------------------------------------------

    def _on_state_expires(self, now: float, expires: int | None) -> None:
        """``active``/``pending`` with ``expires``: the subscription ends sooner than
        the 2xx said (RFC 6665 §4.1.3), so the refresh may have to come forward."""
        if expires is None or self._phase is not _Phase.ACTIVE:
            return
        self.expires_at = now + expires
        due = now + refresh_delay(expires)
        if self._wakeup_at is None or due < self._wakeup_at:
            self._wakeup_at = due

    def _fail(self, now: float, detail: str) -> None:
        self.failures += 1
        self.failed += 1
        self.expires_at = None
        self._phase = _Phase.BACKING_OFF
        retry_after, self._retry_after = self._retry_after, None
        self._wakeup_at = now + max(self.retry_delay, float(retry_after or 0))
        self._set_state(SubscriptionState.FAILED, now, detail)

    def _finish(self, now: float) -> None:
        self._end_transaction()
        self._wakeup_at = None
        self._phase = _Phase.STOPPED
        self.expires_at = None
        self._set_state(SubscriptionState.TERMINATED, now, "unsubscribed")

    def _end_transaction(self) -> None:
        self._timers.end()

    def _set_state(self, state: SubscriptionState, now: float, detail: str) -> None:
        if (state, detail) == (self.state, self.detail):
            return  # a retry that fails the same way again is not news
        self.state, self.detail = state, detail
        self._events.append(
            SubscriptionChanged(extension=self.extension, state=state, detail=detail, at=now)
        )

    def _new_dialog(self) -> _Dialog:
        # RFC 6665 §4.1.2.1: a new subscription is a new dialog: fresh Call-ID and tag.
        return _Dialog(call_id=new_call_id(self.params.local[0]), local_tag=new_tag())

    def _learn_target(self, contact: str | None) -> None:
        """RFC 3261 §12.2.1.2: a 2xx or NOTIFY Contact is the dialog's remote target."""
        if not contact:
            return
        try:
            address = parse_name_addr(contact)
        except (SipParseError, ValueError):
            return
        if not isinstance(address.uri, SipUri):
            return
        text = contact.strip()
        start, end = text.find("<"), text.find(">")
        uri = text[start + 1 : end] if 0 <= start < end else text.split(";", 1)[0]
        if uri and not any(c in uri for c in " \t\r\n"):
            self._dialog.remote_target = uri

    def _target_aor(self) -> str:
        return f"sip:{self.extension}@{self.params.domain}"

    def _send_subscribe(self, now: float, expires: int, phase: _Phase) -> None:
        self._phase = phase
        dialog = self._dialog
        dialog.cseq += 1
        self._branch = new_branch()
        self.attempts += 1
        in_dialog = phase is not _Phase.SUBSCRIBING and dialog.remote_tag is not None
        uri = (dialog.remote_target if in_dialog else None) or self._target_aor()
        to = f"<{self._target_aor()}>"
        if in_dialog:
            to += f";tag={dialog.remote_tag}"
        local = hostport(*self.params.local)
        ours = f"sip:{self.params.user}@{self.params.domain}"
        headers = [
            ("Via", f"SIP/2.0/UDP {local};branch={self._branch};rport"),
            ("Max-Forwards", "70"),
        ]
        if in_dialog:
            headers.extend(("Route", route) for route in dialog.route_set)
        headers += [
            ("From", f"<{ours}>;tag={dialog.local_tag}"),
            ("To", to),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{dialog.cseq} SUBSCRIBE"),
            ("Contact", f"<sip:{self.params.user}@{local};transport=udp>"),
            ("Event", EVENT_PACKAGE),
            ("Accept", ACCEPT),
            ("Expires", str(expires)),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY"),
            ("User-Agent", self.params.user_agent),
        ]
        credentials = self._auth.header("SUBSCRIBE", uri)
        if credentials is not None:
            headers.append(credentials)
        self._request = build_request("SUBSCRIBE", uri, headers)
        self._outbox.append(self._request)
        self._timers.begin(now)


def _parse_state(value: str) -> tuple[str, dict[str, str]]:
    """``active;expires=600`` -> ("active", {"expires": "600"}) (RFC 6665 §8.2.3)."""
    head, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, _, val = item.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return head.strip().lower(), params


_Handler = Callable[[SubscriptionClient, float, SipResponse | None], None]
C = SubscriptionClient
P = _Phase
I = _Input  # noqa: E741

# The SUBSCRIBE transaction in flight, the same in all three phases that have one.
_IN_FLIGHT: dict[_Input, _Handler] = {
    I.PROVISIONAL: C._on_provisional,
    I.RETRANSMIT: C._on_retransmit,
    I.OK: C._on_ok,
    I.CHALLENGE: C._on_challenge,
    I.FAILURE: C._on_failure,
    I.TIMEOUT: C._on_timeout,
    I.TERMINATED: C._on_terminated,
    I.STOP: C._on_stop,
    I.RESTART: C._on_restart,
}

# (phase, input) -> handler. What is not listed is a stray (see _dispatch).
_TRANSITIONS: dict[tuple[_Phase, _Input], _Handler] = {
    (P.IDLE, I.START): C._on_start,
    (P.IDLE, I.STOP): C._on_stop,
    (P.IDLE, I.RESTART): C._on_restart,
    **{(P.SUBSCRIBING, kind): handler for kind, handler in _IN_FLIGHT.items()},
    (P.ACTIVE, I.REFRESH): C._on_refresh,
    (P.ACTIVE, I.TERMINATED): C._on_terminated,
    (P.ACTIVE, I.STOP): C._on_stop,
    (P.ACTIVE, I.RESTART): C._on_restart,
    **{(P.REFRESHING, kind): handler for kind, handler in _IN_FLIGHT.items()},
    (P.BACKING_OFF, I.RETRY): C._on_start,
    (P.BACKING_OFF, I.STOP): C._on_stop,
    (P.BACKING_OFF, I.RESTART): C._on_restart,
    (P.UNSUBSCRIBING, I.PROVISIONAL): C._on_provisional,
    (P.UNSUBSCRIBING, I.RETRANSMIT): C._on_retransmit,
    (P.UNSUBSCRIBING, I.OK): C._on_unsubscribed,
    (P.UNSUBSCRIBING, I.CHALLENGE): C._on_challenge,
    (P.UNSUBSCRIBING, I.FAILURE): C._on_unsubscribed,
    (P.UNSUBSCRIBING, I.TIMEOUT): C._on_unsubscribed,
    (P.UNSUBSCRIBING, I.TERMINATED): C._on_ignored,
}
del C, P, I
