"""The REGISTER client: keep callpop registered to the PBX as an ordinary extension.

Theory of operation. One :class:`RegistrationClient` owns one binding (our Contact at
the registrar) and everything that affects it lives here: the REGISTER client
transaction (RFC 3261 §17.1.2: Timer E retransmits, Timer F gives up), digest
authentication (401/407, RFC 3261 §22.2), ``423 Interval Too Brief`` (§10.2.8), the
refresh before the granted expiry (§10.2.4) and the back-off after a failure. It is
sans-I/O: it is fed responses and ``now``, and it hands back datagrams, events and the
time of its next timer. It knows nothing of INVITEs, sockets or the asyncio loop.

Two layers of state: the *phase* (what the client is waiting for, internal) and the
public :class:`~telephony.events.RegistrationState`. Transitions between phases are
listed in ``_TRANSITIONS``; an input that a phase does not expect is counted as a
stray and ignored, never silently mixed into another phase.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from telephony.digest import (
    Challenge,
    Credentials,
    DigestError,
    authorization,
    choose_challenge,
)
from telephony.events import RegistrationChanged, RegistrationState
from telephony.message import SipResponse, build_request, new_branch, new_call_id, new_tag
from telephony.timers import T1, T2, TIMER_F
from telephony.uri import hostport, parse_name_addr, parse_uri, parse_via

MIN_REFRESH = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationParams:
    """What the client needs to know about the registrar and about us."""

    registrar: tuple[str, int]  # where REGISTERs are sent (resolved address)
    domain: str  # the AOR's domain and the Request-URI (RFC 3261 §10.2); the endpoint
    # fills it (EndpointConfig.domain, else the registrar's host name)
    user: str
    auth_user: str
    password: str
    expires: int
    local: tuple[str, int]  # our Via sent-by and Contact host:port
    user_agent: str
    retry_base: float = 2.0
    retry_max: float = 60.0

    def __post_init__(self) -> None:
        if not self.domain:
            raise ValueError("RegistrationParams.domain is empty (the AOR needs a domain)")


class _Phase(enum.Enum):
    IDLE = "idle"
    TRYING = "trying"  # REGISTER in flight
    BOUND = "bound"  # registered, waiting for the refresh time
    BACKING_OFF = "backing_off"  # last attempt failed, waiting to retry
    UNREGISTERING = "unregistering"  # Expires: 0 in flight
    STOPPED = "stopped"


class _Input(enum.Enum):
    START = "start"
    STOP = "stop"
    OK = "2xx"
    CHALLENGE = "401/407"
    TOO_BRIEF = "423"
    FAILURE = "failure"
    PROVISIONAL = "1xx"
    RETRANSMIT = "timer E"
    TIMEOUT = "timer F"
    REFRESH = "refresh due"
    RETRY = "retry due"


# RFC 3261 §20.19: Expires (and the Contact "expires" parameter, §20.10) is "an integral
# number of seconds (in decimal) between 0 and (2**32)-1".
_MAX_DELTA_SECONDS = 2**32 - 1


def _delta_seconds(text: str | None) -> int | None:
    """The value of a delta-seconds field (``1*DIGIT``), or ``None`` when it is not one.

    Larger values are capped at 2**32-1. Decided on the text before any ``int()``: the
    registrar's bytes may hold thousands of digits, or digits that are not ASCII.
    """
    if text is None:
        return None
    text = text.strip(" \t")
    if not text.isascii() or not text.isdigit():
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(_MAX_DELTA_SECONDS)):
        return _MAX_DELTA_SECONDS
    return min(int(significant), _MAX_DELTA_SECONDS) if significant else 0


def delta_seconds(text: str | None) -> int | None:
    """Public name of :func:`_delta_seconds` (the SUBSCRIBE client reads Expires too)."""
    return _delta_seconds(text)


class ClientTimers:
    """The timers of one non-INVITE client transaction over UDP (RFC 3261 §17.1.2.2).

    Shared by the REGISTER and SUBSCRIBE clients: Timer E retransmits (T1, doubling up
    to T2; every T2 once a provisional arrived), Timer F gives up after 64*T1.
    """

    __slots__ = ("_interval", "give_up_at", "retransmit_at")

    def __init__(self) -> None:
        self.retransmit_at: float | None = None
        self.give_up_at: float | None = None
        self._interval = T1

    def begin(self, now: float) -> None:
        self._interval = T1
        self.retransmit_at = now + T1
        self.give_up_at = now + TIMER_F

    def proceeding(self, now: float) -> None:
        # RFC 3261 §17.1.2.2: in Proceeding, retransmit every T2.
        self._interval = T2
        self.retransmit_at = now + T2

    def retransmitted(self, now: float) -> None:
        # RFC 3261 §17.1.2.2 Timer E: double up to T2.
        self._interval = min(self._interval * 2, T2)
        self.retransmit_at = now + self._interval

    def end(self) -> None:
        self.retransmit_at = None
        self.give_up_at = None

    def timed_out(self, now: float) -> bool:
        return self.give_up_at is not None and now >= self.give_up_at

    def retransmit_due(self, now: float) -> bool:
        return self.retransmit_at is not None and now >= self.retransmit_at


class DigestAuth:
    """The digest credentials a client answers challenges with (RFC 3261 §22.2).

    Shared by the REGISTER and SUBSCRIBE clients. Remembers the last challenge so the
    next request answers it again with the next nonce count (RFC 3261 §22.3, RFC 7616
    §3.4), and tells a stale nonce from rejected credentials (RFC 7616 §3.3).
    """

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self._challenge: tuple[str, Challenge] | None = None  # (answer header, challenge)
        self._nc = 0
        self._answered = False  # credentials in flight came from a fresh challenge

    def challenged(self, response: SipResponse) -> str | None:
        """Take a 401/407; ``None`` when it can be answered, else why not (a detail)."""
        status_line = f"{response.status} {response.reason}"
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        if not self.password:
            return f"{status_line}: no password configured"
        try:
            challenge = choose_challenge(response.headers.get_all(header))
        except DigestError as exc:
            return f"{status_line}: {exc}"
        if self._answered and not challenge.stale:
            # We already answered a fresh challenge and were challenged again without
            # stale=true (RFC 7616 §3.3): the server rejects our credentials.
            self._answered = False
            return f"{status_line}: credentials rejected"
        self._challenge = (answer, challenge)
        self._nc = 0
        self._answered = True
        return None

    def accepted(self) -> None:
        """A final response other than 401/407: the next challenge is a fresh one."""
        self._answered = False

    def header(self, method: str, uri: str) -> tuple[str, str] | None:
        """The (Proxy-)Authorization field for the next request, if challenged before."""
        if self._challenge is None:
            return None
        answer, challenge = self._challenge
        self._nc += 1
        credentials = Credentials(username=self.username, password=self.password)
        return answer, authorization(challenge, credentials, method=method, uri=uri, nc=self._nc)


def refresh_delay(granted: float) -> float:
    """Seconds until the refresh: 80 % of the grant or 30 s early, whichever is sooner.

    Never below :data:`MIN_REFRESH`, so a tiny grant cannot turn into a REGISTER storm.
    """
    return max(MIN_REFRESH, min(granted * 0.8, granted - 30.0))


def retry_backoff(failures: int, base: float, cap: float) -> float:
    """Back-off before the next attempt after ``failures`` in a row: base * 2^(failures-1),
    capped at ``cap`` (REGISTER and SUBSCRIBE clients alike)."""
    return float(min(cap, base * (2 ** max(0, failures - 1))))


class RegistrationClient:
    """One binding at one registrar, refreshed forever until :meth:`stop`."""

    def __init__(self, params: RegistrationParams) -> None:
        self.params = params
        self.state = RegistrationState.REGISTERING
        self.detail = "not started"
        self.expires_at: float | None = None
        self.attempts = 0  # REGISTER transactions started (for stats)
        self.bindings = 0  # 2xx that confirmed our binding, refreshes included (for stats)
        self.failures = 0  # consecutive failed attempts (drives the back-off)
        self.strays = 0  # responses or timers that no phase expected
        self._phase = _Phase.IDLE
        self._call_id = new_call_id(params.local[0])  # RFC 3261 §10.2: one Call-ID per binding
        self._from_tag = new_tag()
        self._cseq = 0
        self._expires = params.expires
        self._branch = ""
        self._request = b""
        self._timers = ClientTimers()
        self._wakeup_at: float | None = None  # refresh or retry
        self._auth = DigestAuth(params.auth_user or params.user, params.password)
        self._outbox: list[bytes] = []
        self._events: list[RegistrationChanged] = []

    # -- public API -----------------------------------------------------------------

    def start(self, now: float) -> None:
        self._dispatch(_Input.START, now, None)

    def stop(self, now: float) -> None:
        self._dispatch(_Input.STOP, now, None)

    def receive_response(self, response: SipResponse, now: float) -> bool:
        """Feed a response; returns False when it is not ours (another branch/Call-ID)."""
        if response.call_id != self._call_id or not self._branch:
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
        elif status == 423:
            kind = _Input.TOO_BRIEF
        else:
            kind = _Input.FAILURE
        self._dispatch(kind, now, response)
        return True

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
            kind = _Input.REFRESH if self._phase is _Phase.BOUND else _Input.RETRY
            self._dispatch(kind, now, None)

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def events(self) -> list[RegistrationChanged]:
        out, self._events = self._events, []
        return out

    @property
    def retry_delay(self) -> float:
        """Back-off before the next attempt (:func:`retry_backoff`)."""
        return retry_backoff(self.failures, self.params.retry_base, self.params.retry_max)

    # -- state machine --------------------------------------------------------------

    def _dispatch(self, kind: _Input, now: float, response: SipResponse | None) -> None:
        handler = _TRANSITIONS.get((self._phase, kind))
        if handler is None:
            # h2 style: an input this phase does not expect is a protocol error. For a
            # registration client that is a late or duplicate response: count, ignore.
            self.strays += 1
            return
        handler(self, now, response)

    def _on_start(self, now: float, _: SipResponse | None) -> None:
        self._set_state(RegistrationState.REGISTERING, now, "")
        self._send_register(now, self._expires)

    def _on_refresh(self, now: float, _: SipResponse | None) -> None:
        # RFC 3261 §10.2.4: refresh with the same Call-ID and a higher CSeq; the
        # public state stays REGISTERED while the binding is still valid.
        self._send_register(now, self._expires)

    def _on_retry(self, now: float, _: SipResponse | None) -> None:
        self._send_register(now, self._expires)

    def _on_stop(self, now: float, _: SipResponse | None) -> None:
        self._wakeup_at = None
        if self._phase in (_Phase.BOUND, _Phase.TRYING):
            # RFC 3261 §10.2.2: Expires: 0 removes our binding.
            self._phase = _Phase.UNREGISTERING
            self._send_register(now, 0, phase=_Phase.UNREGISTERING)
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
        granted = self._granted_expires(response)
        if granted <= 0:
            self._fail(now, f"{response.status} {response.reason} without our binding")
            return
        self.failures = 0
        self.bindings += 1
        self.expires_at = now + granted
        self._phase = _Phase.BOUND
        self._wakeup_at = now + refresh_delay(granted)
        self._set_state(RegistrationState.REGISTERED, now, f"registered for {granted} s")

    def _on_unregistered(self, now: float, _: SipResponse | None) -> None:
        self._finish(now)

    def _on_challenge(self, now: float, response: SipResponse | None) -> None:
        assert response is not None
        self._end_transaction()
        problem = self._auth.challenged(response)
        if problem is not None:
            self._fail(now, problem)
            return
        expires = 0 if self._phase is _Phase.UNREGISTERING else self._expires
        self._send_register(now, expires, phase=self._phase)

    def _on_too_brief(self, now: float, response: SipResponse | None) -> None:
        assert response is not None
        self._end_transaction()
        minimum = _delta_seconds(response.headers.get("Min-Expires"))
        if minimum is None or minimum <= self._expires:
            self._fail(now, f"423 {response.reason} without a usable Min-Expires")
            return
        # RFC 3261 §10.2.8: retry with at least Min-Expires.
        self._expires = minimum
        self._send_register(now, self._expires)

    def _on_failure(self, now: float, response: SipResponse | None) -> None:
        assert response is not None
        self._end_transaction()
        self._fail(now, f"{response.status} {response.reason}")

    def _on_timeout(self, now: float, _: SipResponse | None) -> None:
        self._end_transaction()
        self._fail(now, "no response from registrar")

    def _on_unregister_failed(self, now: float, _: SipResponse | None) -> None:
        self._end_transaction()
        self._finish(now)

    # -- steps ----------------------------------------------------------------------

    def _fail(self, now: float, detail: str) -> None:
        self.failures += 1
        self.expires_at = None
        self._phase = _Phase.BACKING_OFF
        self._wakeup_at = now + self.retry_delay
        self._set_state(RegistrationState.FAILED, now, detail)

    def _finish(self, now: float) -> None:
        self._end_transaction()
        self._wakeup_at = None
        self._phase = _Phase.STOPPED
        self.expires_at = None
        self._set_state(RegistrationState.DISABLED, now, "unregistered")

    def _end_transaction(self) -> None:
        self._timers.end()

    def _set_state(self, state: RegistrationState, now: float, detail: str) -> None:
        # Emit on every change of state or detail; a retry that fails the same way
        # again is not news.
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        self._events.append(
            RegistrationChanged(state=state, at=now, detail=detail, expires_at=self.expires_at)
        )

    def _request_uri(self) -> str:
        # RFC 3261 §10.2: the Request-URI names the domain of the registrar.
        return f"sip:{self.params.domain}"

    def _aor(self) -> str:
        return f"sip:{self.params.user}@{self.params.domain}"

    def _contact_uri(self) -> str:
        return f"sip:{self.params.user}@{hostport(*self.params.local)};transport=udp"

    def _send_register(self, now: float, expires: int, *, phase: _Phase = _Phase.TRYING) -> None:
        self._phase = phase
        self._cseq += 1
        self._branch = new_branch()
        self.attempts += 1
        headers = [
            ("Via", f"SIP/2.0/UDP {hostport(*self.params.local)};branch={self._branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{self._aor()}>;tag={self._from_tag}"),
            ("To", f"<{self._aor()}>"),
            ("Call-ID", self._call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", f"<{self._contact_uri()}>"),
            ("Expires", str(expires)),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY"),
            ("User-Agent", self.params.user_agent),
        ]
        # RFC 3261 §22.3: the last challenge is answered again with the next nonce
        # count; a registrar that has forgotten the nonce challenges afresh.
        credentials = self._auth.header("REGISTER", self._request_uri())
        if credentials is not None:
            headers.append(credentials)
        self._request = build_request("REGISTER", self._request_uri(), headers)
        self._outbox.append(self._request)
        self._timers.begin(now)

    def _granted_expires(self, response: SipResponse) -> int:
        """RFC 3261 §10.2.4: the expiry of *our* Contact, else Expires, else what we asked."""
        ours = parse_uri(self._contact_uri())
        for value in response.headers.get_all("Contact"):
            try:
                contact = parse_name_addr(value)
            except ValueError:
                continue
            uri = contact.uri
            if getattr(uri, "user", None) != getattr(ours, "user", None):
                continue
            if getattr(uri, "host", None) != getattr(ours, "host", None):
                continue
            if getattr(uri, "port", None) not in (getattr(ours, "port", None), None):
                continue
            granted = _delta_seconds(contact.params.get("expires"))
            if granted is not None:
                return granted
        granted = _delta_seconds(response.headers.get("Expires"))
        return self._expires if granted is None else granted


_Handler = Callable[[RegistrationClient, float, SipResponse | None], None]
C = RegistrationClient
P = _Phase
I = _Input  # noqa: E741

# (phase, input) -> handler. What is not listed is a stray (see _dispatch).
_TRANSITIONS: dict[tuple[_Phase, _Input], _Handler] = {
    (P.IDLE, I.START): C._on_start,
    (P.IDLE, I.STOP): C._on_stop,
    (P.TRYING, I.PROVISIONAL): C._on_provisional,
    (P.TRYING, I.RETRANSMIT): C._on_retransmit,
    (P.TRYING, I.OK): C._on_ok,
    (P.TRYING, I.CHALLENGE): C._on_challenge,
    (P.TRYING, I.TOO_BRIEF): C._on_too_brief,
    (P.TRYING, I.FAILURE): C._on_failure,
    (P.TRYING, I.TIMEOUT): C._on_timeout,
    (P.TRYING, I.STOP): C._on_stop,
    (P.BOUND, I.REFRESH): C._on_refresh,
    (P.BOUND, I.STOP): C._on_stop,
    (P.BACKING_OFF, I.RETRY): C._on_retry,
    (P.BACKING_OFF, I.STOP): C._on_stop,
    (P.UNREGISTERING, I.PROVISIONAL): C._on_provisional,
    (P.UNREGISTERING, I.RETRANSMIT): C._on_retransmit,
    (P.UNREGISTERING, I.OK): C._on_unregistered,
    (P.UNREGISTERING, I.CHALLENGE): C._on_challenge,
    (P.UNREGISTERING, I.TOO_BRIEF): C._on_unregister_failed,
    (P.UNREGISTERING, I.FAILURE): C._on_unregister_failed,
    (P.UNREGISTERING, I.TIMEOUT): C._on_unregister_failed,
}
del C, P, I
