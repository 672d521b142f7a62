"""A SIP test caller (UAC): INVITE, let it ring, then CANCEL (or hang up if answered).

This is what ``callpop call NUMBER`` drives, and what the latency benchmark reuses the
request builders of. It owns one outgoing call: the INVITE client transaction, the
CANCEL that ends the ring, the ACK for the final response and, if some phone did
answer, the ACK + BYE that hang up. It must not know callpop's server side (the
listener, customers, browsers); it talks to any SIP UAS.

:class:`UacCall` is sans-I/O like the rest of ``telephony/``: ``start(now)``,
``receive(data, now)``, ``get_timer()`` / ``handle_timer(now)``, ``datagrams_to_send()``.
No socket, no clock. The asyncio runner that gives it one UDP socket and
``loop.time()`` as the clock (:func:`telephony.transport.place_call`,
:func:`telephony.transport.drive`) lives with the other socket code in ``transport.py``.
A :class:`DialError` carries a message a person can act on.

The library prints nothing; the CLI prints.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from telephony.message import (
    SipParseError,
    SipResponse,
    build_request,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from telephony.timers import T1, T2
from telephony.uri import hostport

USER_AGENT = "callpop-call"
OFFICE_USER = "office"  # the Request-URI / To user when no office line is given

# How each withheld reason is presented: the anonymous URI of RFC 3323 §4.1.1.3 with the
# reason in the display name, as Japanese carriers present 非通知 / 公衆電話 / 表示圏外.
WITHHELD_DISPLAY = {
    "anonymous": "Anonymous",
    "payphone": "Coin line/payphone",
    "unavailable": "Unavailable",
}

# Visual separators people type in numbers ("03-1234-5678", "(03) 1234 5678"); RFC 3966
# §5.1.1 treats them as decoration, and carriers send digits only.
_SEPARATORS = re.compile(r"[\s\-().]")
_DIALABLE = re.compile(r"\+?[0-9A-Za-z*#]+")


class DialError(Exception):
    """The call could not be placed or did not end cleanly; the message says why."""


class Step(enum.StrEnum):
    """Milestones of one call, timed from the first INVITE (``CallResult.timings``)."""

    INVITE_SENT = "invite_sent"
    PROVISIONAL = "provisional"  # first 1xx
    RINGING = "ringing"  # first 180
    ANSWERED = "answered"  # a 2xx to the INVITE
    CANCEL_SENT = "cancel_sent"
    CANCEL_ANSWERED = "cancel_answered"
    FINAL = "final"  # final response to the INVITE
    ACK_SENT = "ack_sent"
    BYE_SENT = "bye_sent"
    BYE_ANSWERED = "bye_answered"


class _State(enum.Enum):
    IDLE = "idle"
    CALLING = "calling"  # INVITE sent, nothing heard yet (Timer A retransmits)
    RINGING = "ringing"  # 1xx heard; waiting ring_seconds
    CANCELLING = "cancelling"  # CANCEL sent; waiting for its 200 and the INVITE's 487
    ANSWERED = "answered"  # 2xx heard and ACKed; waiting ring_seconds, then BYE
    HANGING_UP = "hanging_up"  # BYE sent
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallResult:
    """What one test call saw.

    ``responses`` are status codes in arrival order, retransmissions left out, e.g.
    ``(100, 180, 200, 487)`` (the 200 answers the CANCEL). ``timings`` are
    ``(step, seconds since the first INVITE)`` pairs, see :class:`Step`.
    """

    call_id: str
    responses: tuple[int, ...]
    timings: tuple[tuple[str, float], ...]
    final_status: int
    final_reason: str

    def elapsed(self, step: str) -> float | None:
        """Seconds from the first INVITE to ``step``, or ``None`` if it never happened."""
        for name, at in self.timings:
            if name == step:
                return at
        return None


def dialable(number: str) -> str:
    """Strip visual separators; raise DialError for something that cannot be a SIP user."""
    cleaned = _SEPARATORS.sub("", number)
    if not _DIALABLE.fullmatch(cleaned):
        raise DialError(f"{number!r} is not a dialable number")
    return cleaned


def _quote(display: str) -> str:
    # RFC 3261 §25.1 quoted-string: backslash-escape '"' and '\'.
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _branch_of(response: SipResponse) -> str | None:
    vias = response.headers.get_all("Via")
    if not vias:
        return None
    for param in vias[0].split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "branch":
            return value.strip()
    return None


def _contact_uri(response: SipResponse) -> str | None:
    contact = response.headers.get("Contact")
    if not contact:
        return None
    start, end = contact.find("<"), contact.find(">")
    if 0 <= start < end:
        return contact[start + 1 : end]
    return contact.split(";", 1)[0].strip() or None


class _Retransmit:
    """One request's retransmission schedule (RFC 3261 §17.1.1.2 Timer A, §17.1.2.2 Timer E)."""

    def __init__(self, data: bytes, now: float, *, cap: float | None) -> None:
        self.data = data
        self.interval = T1
        self.next_at = now + T1
        self.cap = cap

    def fire(self, now: float) -> bytes:
        # Timer A doubles without bound; Timer E doubles up to T2.
        self.interval *= 2
        if self.cap is not None:
            self.interval = min(self.interval, self.cap)
        self.next_at = now + self.interval
        return self.data


class UacCall:
    """One outgoing test call, sans-I/O.

    Feed it every datagram from the target with :meth:`receive`, call :meth:`handle_timer`
    when :meth:`get_timer` is due, and send whatever :meth:`datagrams_to_send` returns to
    ``target``. It is over when :attr:`done` is true; then :meth:`result` returns the
    :class:`CallResult` or raises :class:`DialError`.
    """

    def __init__(
        self,
        number: str,
        *,
        target: tuple[str, int],
        local: tuple[str, int],
        name: str | None = None,
        ring_seconds: float = 3.0,
        answered_elsewhere: bool = False,
        withheld: str | None = None,
        p_asserted_identity: str | None = None,
        timeout: float = 8.0,
        call_id: str | None = None,
        line: str | None = None,
    ) -> None:
        """``number`` is the caller presented; ``line`` the office number dialled (the
        user of the Request-URI and To, RFC 3261 §8.1.1.1-2), ``"office"`` when None."""
        if withheld is not None and withheld not in WITHHELD_DISPLAY:
            raise DialError(
                f"withheld must be one of {', '.join(WITHHELD_DISPLAY)}, not {withheld!r}"
            )
        self.target = target
        self.local = local
        self.ring_seconds = ring_seconds
        self.answered_elsewhere = answered_elsewhere
        self.timeout = timeout
        self.call_id = call_id or new_call_id(local[0])

        target_hp = hostport(*target)
        local_hp = hostport(*local)
        dialled = OFFICE_USER if line is None else dialable(line)
        self.request_uri = f"sip:{dialled}@{target_hp}"
        self._via_sent_by = f"SIP/2.0/UDP {local_hp}"
        self._branch = new_branch()
        if withheld is not None:
            # RFC 3323 §4.1.1.3: the anonymous From; Privacy: id asks that nothing be shown.
            self._from = (
                f"{_quote(WITHHELD_DISPLAY[withheld])} <sip:anonymous@anonymous.invalid>"
                f";tag={new_tag()}"
            )
            self._privacy: str | None = "id"
            user = "anonymous"
        else:
            user = dialable(number)
            shown = f"{_quote(name)} " if name else ""
            self._from = f"{shown}<sip:{user}@{local_hp}>;tag={new_tag()}"
            self._privacy = None
        self._to = f"<{self.request_uri}>"
        self._contact = f"<sip:{user}@{local_hp}>"
        self._pai = p_asserted_identity
        self._local_host = local[0]

        self._state = _State.IDLE
        self._outbox: list[bytes] = []
        self._started_at = 0.0
        self._responses: list[int] = []
        self._seen: set[tuple[int, str]] = set()
        self._timings: list[tuple[str, float]] = []
        self._invite_tx: _Retransmit | None = None  # Timer A while CALLING
        self._other_tx: _Retransmit | None = None  # Timer E for CANCEL / BYE
        self._deadline: float | None = None  # Timer B / F style give-up time
        self._deadline_error = ""
        self._ring_until: float | None = None
        self._final: SipResponse | None = None
        self._remote_target: str | None = None
        self._dialog_to: str | None = None
        self._error: str | None = None

    # --- public sans-I/O surface -----------------------------------------------------

    @property
    def done(self) -> bool:
        return self._state in (_State.DONE, _State.FAILED)

    def start(self, now: float) -> None:
        if self._state is not _State.IDLE:
            raise RuntimeError("start() called twice")
        self._started_at = now
        invite = self._invite()
        self._outbox.append(invite)
        self._invite_tx = _Retransmit(invite, now, cap=None)
        self._set_deadline(now, self._no_response_message())
        self._mark(Step.INVITE_SENT, now)
        self._state = _State.CALLING

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        if self.done:
            return None
        times = [self._deadline, self._ring_until]
        if self._invite_tx is not None:
            times.append(self._invite_tx.next_at)
        if self._other_tx is not None:
            times.append(self._other_tx.next_at)
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        if self.done:
            return
        if self._deadline is not None and now >= self._deadline:
            self._fail(self._deadline_error)
            return
        if self._invite_tx is not None and now >= self._invite_tx.next_at:
            self._outbox.append(self._invite_tx.fire(now))
        if self._other_tx is not None and now >= self._other_tx.next_at:
            self._outbox.append(self._other_tx.fire(now))
        if self._ring_until is not None and now >= self._ring_until:
            self._ring_until = None
            if self._state is _State.RINGING:
                self._send_cancel(now)
            elif self._state is _State.ANSWERED:
                self._send_bye(now)

    def receive(self, data: bytes, now: float) -> None:
        if self.done:
            return
        try:
            message = parse_message(data)
        except SipParseError:
            return  # Noise on our port: nothing to answer, nothing to learn.
        if not isinstance(message, SipResponse):
            return  # A test caller serves no requests; the UAS retransmits and gives up.
        try:
            if message.call_id != self.call_id:
                return  # Not this call's (the benchmark shares one socket among calls).
            method = message.cseq[1].upper()
        except SipParseError:
            return
        key = (message.status, method)
        if key not in self._seen:
            self._seen.add(key)
            self._responses.append(message.status)
        if method == "INVITE" and _branch_of(message) == self._branch:
            self._on_invite_response(message, now)
        elif method in ("CANCEL", "BYE"):
            self._on_other_response(message, method, now)

    def result(self) -> CallResult:
        if self._error is not None:
            raise DialError(self._error)
        if self._state is not _State.DONE or self._final is None:
            raise RuntimeError("result() before the call is over")
        return CallResult(
            call_id=self.call_id,
            responses=tuple(self._responses),
            timings=tuple(self._timings),
            final_status=self._final.status,
            final_reason=self._final.reason,
        )

    # --- transitions ------------------------------------------------------------------

    def _on_invite_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        if 100 <= status < 200:
            if status == 180:
                self._mark(Step.RINGING, now)
            if self._state is _State.CALLING:
                # RFC 3261 §17.1.1.2: a provisional response stops Timer A; the ring
                # (and our patience with it) starts now.
                self._mark(Step.PROVISIONAL, now)
                self._invite_tx = None
                self._deadline = None
                self._ring_until = now + self.ring_seconds
                self._state = _State.RINGING
            return
        if 200 <= status < 300:
            self._on_answered(response, now)
            return
        # A final non-2xx: RFC 3261 §17.1.1.3, ACK it in the same transaction.
        if self._final is None:
            self._final = response
            self._mark(Step.FINAL, now)
        self._outbox.append(self._ack_for_failure(response))
        self._mark(Step.ACK_SENT, now)
        self._invite_tx = None
        self._other_tx = None  # nothing left to cancel
        self._ring_until = None
        self._deadline = None
        if status == 487 and self._state is _State.CANCELLING:
            self._state = _State.DONE
        else:
            self._fail(
                f"{hostport(*self.target)} ended the call with {status} {response.reason}".rstrip()
            )

    def _on_answered(self, response: SipResponse, now: float) -> None:
        # Some phone picked up (callpop itself never answers). RFC 3261 §13.2.2.4: ACK every
        # 2xx (retransmissions too) as a new transaction to the remote target, then hang up.
        if self._final is None:
            self._final = response
            self._mark(Step.ANSWERED, now)
            self._mark(Step.FINAL, now)
            self._remote_target = _contact_uri(response) or self.request_uri
            self._dialog_to = response.headers.get("To") or self._to
            self._invite_tx = None
            self._other_tx = None
            self._deadline = None
            if self._ring_until is None:
                # Answered without ringing first: stay on the line for ring_seconds. Answered
                # while our CANCEL was on its way: RFC 3261 §9.1, hang up with a BYE at once.
                cancelling = self._state is _State.CANCELLING
                self._ring_until = now if cancelling else now + self.ring_seconds
            self._state = _State.ANSWERED
        self._outbox.append(self._ack_for_2xx())
        self._mark(Step.ACK_SENT, now)

    def _on_other_response(self, response: SipResponse, method: str, now: float) -> None:
        if response.status < 200:
            if self._other_tx is not None:
                # RFC 3261 §17.1.2.2: a provisional response moves Timer E to T2.
                self._other_tx.interval = T2
            return
        if method == "CANCEL" and self._state is _State.CANCELLING:
            self._mark(Step.CANCEL_ANSWERED, now)
            self._other_tx = None
            if response.status >= 300:
                # RFC 3261 §9.1: a 481 means the INVITE is already over at the UAS.
                self._fail(
                    f"{hostport(*self.target)} refused the CANCEL: "
                    f"{response.status} {response.reason}".rstrip()
                )
                return
            # RFC 3261 §9.1: after the 200 to the CANCEL, the INVITE gets its 487.
            self._set_deadline(
                now,
                f"{hostport(*self.target)} accepted the CANCEL but sent no final response to "
                f"the INVITE within {self.timeout:g} s",
            )
        elif method == "BYE" and self._state is _State.HANGING_UP:
            self._mark(Step.BYE_ANSWERED, now)
            self._other_tx = None
            self._deadline = None
            self._state = _State.DONE

    def _send_cancel(self, now: float) -> None:
        cancel = self._cancel()
        self._outbox.append(cancel)
        self._other_tx = _Retransmit(cancel, now, cap=T2)
        self._set_deadline(
            now, f"no response to the CANCEL from {hostport(*self.target)} after {self.timeout:g} s"
        )
        self._mark(Step.CANCEL_SENT, now)
        self._state = _State.CANCELLING

    def _send_bye(self, now: float) -> None:
        bye = self._bye()
        self._outbox.append(bye)
        self._other_tx = _Retransmit(bye, now, cap=T2)
        self._set_deadline(
            now, f"no response to the BYE from {hostport(*self.target)} after {self.timeout:g} s"
        )
        self._mark(Step.BYE_SENT, now)
        self._state = _State.HANGING_UP

    def _fail(self, message: str) -> None:
        self._error = message
        self._invite_tx = None
        self._other_tx = None
        self._deadline = None
        self._ring_until = None
        self._state = _State.FAILED

    def _set_deadline(self, now: float, message: str) -> None:
        self._deadline = now + self.timeout
        self._deadline_error = message

    def _mark(self, step: Step, now: float) -> None:
        if all(name != step.value for name, _ in self._timings):
            self._timings.append((step.value, round(now - self._started_at, 6)))

    def _no_response_message(self) -> str:
        return (
            f"no response from {hostport(*self.target)} after {self.timeout:g} s — is callpop "
            "listening there (trunk mode) and is this host allowed?"
        )

    # --- requests ---------------------------------------------------------------------

    def _common(self, branch: str, to: str, cseq: str) -> list[tuple[str, str]]:
        return [
            ("Via", f"{self._via_sent_by};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", self._from),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", cseq),
        ]

    def _invite(self) -> bytes:
        headers = self._common(self._branch, self._to, "1 INVITE")
        headers.append(("Contact", self._contact))
        if self._pai:
            headers.append(("P-Asserted-Identity", self._pai))
        if self._privacy:
            headers.append(("Privacy", self._privacy))
        headers += [
            ("User-Agent", USER_AGENT),
            ("Allow", "INVITE, ACK, CANCEL, BYE"),
            ("Content-Type", "application/sdp"),
        ]
        return build_request("INVITE", self.request_uri, headers, minimal_sdp(self._local_host))

    def _cancel(self) -> bytes:
        # RFC 3261 §9.1: Request-URI, Call-ID, To, From, CSeq number and the single Via
        # (branch included) match the INVITE; CSeq method is CANCEL.
        headers = self._common(self._branch, self._to, "1 CANCEL")
        if self.answered_elsewhere:
            # RFC 3326 Reason; "call completed elsewhere" is how a ring group says someone
            # else picked up (RFC 3261 has no cause of its own for it).
            headers.append(("Reason", 'SIP;cause=200;text="Call completed elsewhere"'))
        headers.append(("User-Agent", USER_AGENT))
        return build_request("CANCEL", self.request_uri, headers)

    def _ack_for_failure(self, response: SipResponse) -> bytes:
        # RFC 3261 §17.1.1.3: same Request-URI, Call-ID, From, CSeq number and branch as the
        # INVITE; To is the response's (with its tag).
        to = response.headers.get("To") or self._to
        headers = self._common(self._branch, to, "1 ACK")
        return build_request("ACK", self.request_uri, headers)

    def _ack_for_2xx(self) -> bytes:
        # RFC 3261 §13.2.2.4: the ACK for a 2xx is its own transaction (new branch).
        assert self._remote_target is not None and self._dialog_to is not None
        headers = self._common(new_branch(), self._dialog_to, "1 ACK")
        return build_request("ACK", self._remote_target, headers)

    def _bye(self) -> bytes:
        assert self._remote_target is not None and self._dialog_to is not None
        headers = self._common(new_branch(), self._dialog_to, "2 BYE")
        headers.append(("User-Agent", USER_AGENT))
        return build_request("BYE", self._remote_target, headers)


def minimal_sdp(host: str) -> bytes:
    """An SDP offer that names one audio stream and asks for no media (RFC 4566, 3264 §5.1).

    Port 9 (discard) and ``a=inactive``: nobody should send us audio, but a PBX that
    insists on an offer still gets a well-formed one.
    """
    family = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=callpop-call 1 1 IN {family} {host}",
        "s=callpop test call",
        f"c=IN {family} {host}",
        "t=0 0",
        "m=audio 9 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=inactive",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
