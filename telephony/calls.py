"""INVITE server transactions: the ringing side of callpop (RFC 3261 §17.2.1, §9.2).

Theory of operation. callpop rings and never answers: every INVITE gets ``100 Trying``
and ``180 Ringing`` at once and, later, exactly one final response — ``487`` after a
CANCEL (or a BYE, RFC 3261 §15.1.2), ``480`` when the ring times out, ``302`` on a routed
line (below) — which is retransmitted on Timer G until the ACK arrives or Timer H gives
up. Everything that affects one INVITE transaction lives in :class:`InviteTransaction`
and changes only through ``_TRANSITIONS``: a ``(state, input)`` pair that is not listed
is a protocol error, counted and absorbed, never a silent fall-through.

Routed lines (known-customer routing). When the PBX asks callpop first, before it rings
anyone, an INVITE to a line the ``route_for`` callable names (it returns that line's
fallback target, usually the ring group) gets ``100 Trying`` only, enters ``ROUTING`` and
is reported as a :class:`CallRinging` with ``awaiting_route``. The composition then calls
:meth:`InviteServer.redirect` with the decided target, which answers ``302 Moved
Temporarily`` with it in Contact (RFC 3261 §21.3.3, §8.3) through the same final-response
machinery. A decision that does not come within ``route_deadline`` is taken here: 302
to the fallback, so a routed line never rings forever nor waits on callpop. A CANCEL
before the decision gets 487 as any ringing call. After a 302 callpop's leg is over:
:class:`CallRedirected` replaces that leg's ``CallEnded`` (the call goes on at the
target).

:class:`InviteServer` is the table of those transactions (keyed by the Via branch, or
the RFC 2543 fallback key) and of the ringing calls (keyed by Call-ID). It is sans-I/O:
it takes parsed requests and ``now``, and hands back datagrams, events and timers. It
knows nothing of sockets, host filtering or registration (see ``endpoint.py``).

Overload. At most ``max_ringing`` calls ring at once: a PBX (or whoever speaks for it)
that sends a burst of INVITEs gets ``486 Busy Here`` with ``Retry-After`` for every
INVITE beyond that, answered statelessly (no transaction, no timers: RFC 3261 §8.2.7
allows a stateless UAS for exactly this, so the refusals cost no memory), counted in
``refused_busy`` and reported as a ``RequestRejected`` for the composition to log.
486 rather than 503: RFC 3261 §21.5.4 asks a proxy that gets 503 to send *no other
request* to this server for the Retry-After period, which would cut off the office's
real calls too; 486 (§21.4.24, "not willing or able to take additional calls at this
end system", Retry-After per §20.33) refuses this one call only, and a forking PBX keeps
ringing the phones on its other branches.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from telephony.callerid import extract_caller_id
from telephony.events import (
    CallEnded,
    CallerId,
    CallRedirected,
    CallRinging,
    EndReason,
    Event,
    RequestRejected,
)
from telephony.message import SipParseError, SipRequest, build_response, new_tag
from telephony.timers import T1, T2, TIMER_H, TIMER_I
from telephony.uri import SipUri, parse_uri


class InviteState(enum.Enum):
    ROUTING = "routing"  # routed line: 100 sent, waiting for the redirect target
    PROCEEDING = "proceeding"  # 100/180 sent, ringing
    COMPLETED = "completed"  # final response sent, waiting for ACK (Timer G / H)
    CONFIRMED = "confirmed"  # ACK received, absorbing its retransmissions (Timer I)
    TERMINATED = "terminated"


class _Input(enum.Enum):
    RETRANSMISSION = "INVITE retransmission"
    CANCEL = "CANCEL"
    BYE = "BYE"
    ACK = "ACK"
    RING_TIMEOUT = "ring timeout"
    TIMER_G = "timer G"
    TIMER_H = "timer H"
    TIMER_I = "timer I"
    ROUTE = "route decided"  # the composition called redirect()
    ROUTE_DEADLINE = "route deadline"  # no decision in time: redirect to the fallback


@dataclass(slots=True)
class InviteTransaction:
    """One INVITE server transaction and the ring it stands for."""

    key: str
    request: SipRequest
    call_id: str
    remote: tuple[str, int]  # where responses go (RFC 3261 §18.2.2)
    to_tag: str
    started_at: float
    ring_deadline: float | None
    state: InviteState = InviteState.PROCEEDING
    last_response: bytes = b""
    timer_g_at: float | None = None
    timer_g_interval: float = T1
    timer_h_at: float | None = None
    timer_i_at: float | None = None
    ended: bool = False  # CallEnded already emitted
    cancel_reason: EndReason = EndReason.ABANDONED  # set from the CANCEL's Reason
    route_deadline: float | None = None  # ROUTING: when the fallback is taken
    fallback: str = ""  # ROUTING: the line's fallback target (a SIP URI)
    route_target: str = ""  # the target redirect() was given

    def next_timer(self) -> float | None:
        times = [
            t
            for t in (
                self.ring_deadline,
                self.route_deadline,
                self.timer_g_at,
                self.timer_h_at,
                self.timer_i_at,
            )
            if t is not None
        ]
        return min(times) if times else None


Outbox = list[tuple[bytes, tuple[str, int]]]


class InviteServer:
    """The INVITE server transactions of one endpoint and the calls they ring."""

    def __init__(
        self,
        *,
        contact: str,
        server: str,
        ring_timeout: float,
        max_ringing: int = 200,
        route_for: Callable[[CallerId], str | None] | None = None,
        route_deadline: float = 0.5,
    ) -> None:
        if max_ringing < 1:
            raise ValueError("max_ringing must be at least 1")
        if route_deadline <= 0:
            raise ValueError("route_deadline must be positive")
        # The fallback target (a SIP URI) of a routed line, None for any other call.
        self.route_for = route_for
        self.route_deadline = route_deadline
        self.contact = contact  # RFC 3261 §12.1.1: a 1xx that creates a dialog has Contact
        self.server = server
        self.ring_timeout = ring_timeout
        self.max_ringing = max_ringing  # calls ringing at once; beyond it, 486
        self.transactions: dict[str, InviteTransaction] = {}
        self.ringing: dict[str, InviteTransaction] = {}  # Call-ID -> ringing transaction
        self.outbox: Outbox = []
        self.events: list[Event] = []
        self.counters: dict[str, int] = {
            "retransmissions": 0,
            "protocol_errors": 0,
            "refused_busy": 0,  # INVITEs refused with 486 because max_ringing calls rang
            "redirects": 0,  # 302s sent on routed lines (decided or by the deadline)
            "redirect_deadline_fallbacks": 0,  # of those, no decision came in time
            "redirects_late": 0,  # decisions for calls no longer waiting for one
        }

    # -- requests ---------------------------------------------------------------------

    def invite(self, request: SipRequest, key: str, remote: tuple[str, int], now: float) -> None:
        """A new INVITE (its key is not in the table) or a retransmission (it is)."""
        existing = self.transactions.get(key)
        if existing is not None:
            self._dispatch(existing, _Input.RETRANSMISSION, now)
            return
        call_id = request.call_id
        if call_id in self.ringing:
            # RFC 3261 §8.2.2.2: the same call reached us over another branch (a forking
            # proxy looped, or we are registered twice). One ring per call.
            self._send(remote, build_response(request, 482, "Loop Detected", to_tag=new_tag()))
            return
        if len(self.ringing) >= self.max_ringing:
            self._refuse_busy(request, key, remote, now)
            return
        caller = extract_caller_id(request)
        fallback = self.route_for(caller) if self.route_for is not None else None
        if fallback is not None:
            check_target(fallback)  # before any state: a bad fallback is a bug, not a call
        tx = InviteTransaction(
            key=key,
            request=request,
            call_id=call_id,
            remote=remote,
            to_tag=new_tag(),
            started_at=now,
            ring_deadline=now + self.ring_timeout,
        )
        self.transactions[key] = tx
        self.ringing[call_id] = tx
        # RFC 3261 §8.2.6.1: 100 Trying stops the caller's INVITE retransmissions
        # (no To tag: it creates no dialog); 180 is the early dialog, same tag as the
        # final response that follows.
        trying = build_response(request, 100, "Trying", headers=self._common())
        self._send(remote, trying)
        if fallback is not None:
            # A routed line: no 180 (the PBX waits for our 302 before ringing anyone);
            # a retransmitted INVITE gets the 100 again.
            tx.state = InviteState.ROUTING
            tx.ring_deadline = None
            tx.route_deadline = now + self.route_deadline
            tx.fallback = fallback
            tx.last_response = trying
            self.events.append(
                CallRinging(
                    call_id=call_id, caller=caller, at=now, remote=remote, awaiting_route=True
                )
            )
            return
        tx.last_response = build_response(
            request,
            180,
            "Ringing",
            to_tag=tx.to_tag,
            headers=[("Contact", f"<{self.contact}>"), *self._common()],
        )
        self._send(remote, tx.last_response)
        self.events.append(CallRinging(call_id=call_id, caller=caller, at=now, remote=remote))

    def redirect(self, call_id: str, target: str, now: float) -> bool:
        """The decision for a routed call: 302 with ``target`` (a SIP URI) in Contact.

        False when the call is not waiting for one (not routed, already redirected by
        the deadline, cancelled, unknown): counted, nothing sent. ``ValueError`` for a
        target that is not a plain SIP URI (it goes into a header).
        """
        check_target(target)
        tx = self.ringing.get(call_id)
        if tx is None or tx.state is not InviteState.ROUTING:
            self.counters["redirects_late"] += 1
            return False
        tx.route_target = target
        self._dispatch(tx, _Input.ROUTE, now)
        return True

    def cancel(self, request: SipRequest, key: str, remote: tuple[str, int], now: float) -> bytes:
        """RFC 3261 §9.2: match the INVITE by branch; return the response to the CANCEL."""
        tx = self.transactions.get(key)
        if tx is None:
            return build_response(
                request, 481, "Call/Transaction Does Not Exist", headers=self._common()
            )
        if tx.state in (InviteState.PROCEEDING, InviteState.ROUTING):
            reason = (
                EndReason.ANSWERED_ELSEWHERE
                if _answered_elsewhere(request.headers.get_all("Reason"))
                else EndReason.ABANDONED
            )
            tx.cancel_reason = reason
        self._dispatch(tx, _Input.CANCEL, now)
        # RFC 3261 §9.2: the CANCEL's 200 carries the same To tag as the INVITE's responses.
        return build_response(request, 200, "OK", to_tag=tx.to_tag, headers=self._common())

    def bye(self, request: SipRequest, now: float) -> bytes:
        """A BYE for a ringing call (some PBXs end an early dialog so); 481 otherwise."""
        tx = self.ringing.get(request.call_id)
        if tx is None:
            tx = next((t for t in self.transactions.values() if t.call_id == request.call_id), None)
            if tx is None:
                return build_response(
                    request, 481, "Call/Transaction Does Not Exist", headers=self._common()
                )
            return build_response(request, 200, "OK", headers=self._common())
        self._dispatch(tx, _Input.BYE, now)
        return build_response(request, 200, "OK", headers=self._common())

    def ack(self, key: str, now: float) -> bool:
        """RFC 3261 §17.2.1: an ACK for a non-2xx final response belongs to the INVITE."""
        tx = self.transactions.get(key)
        if tx is None:
            return False
        self._dispatch(tx, _Input.ACK, now)
        return True

    # -- timers -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        times = [t for tx in self.transactions.values() if (t := tx.next_timer()) is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for tx in list(self.transactions.values()):
            if tx.route_deadline is not None and now >= tx.route_deadline:
                self._dispatch(tx, _Input.ROUTE_DEADLINE, now)
            if tx.ring_deadline is not None and now >= tx.ring_deadline:
                self._dispatch(tx, _Input.RING_TIMEOUT, now)
            if tx.timer_h_at is not None and now >= tx.timer_h_at:
                self._dispatch(tx, _Input.TIMER_H, now)
            elif tx.timer_g_at is not None and now >= tx.timer_g_at:
                self._dispatch(tx, _Input.TIMER_G, now)
            if tx.timer_i_at is not None and now >= tx.timer_i_at:
                self._dispatch(tx, _Input.TIMER_I, now)

    # -- state machine ----------------------------------------------------------------

    def _dispatch(self, tx: InviteTransaction, kind: _Input, now: float) -> None:
        handler = _TRANSITIONS.get((tx.state, kind))
        if handler is None:
            # h2 style: not a legal input in this state (e.g. an ACK while ringing, a
            # timer that outlived its state). Count it; the transaction stays as it is.
            self.counters["protocol_errors"] += 1
            if kind is _Input.RING_TIMEOUT:
                tx.ring_deadline = None
            elif kind is _Input.ROUTE_DEADLINE:
                tx.route_deadline = None
            return
        handler(self, tx, now)

    def _resend_last(self, tx: InviteTransaction, now: float) -> None:
        # RFC 3261 §17.2.1: a retransmitted INVITE gets the last response again.
        self.counters["retransmissions"] += 1
        self._send(tx.remote, tx.last_response)

    def _on_cancel(self, tx: InviteTransaction, now: float) -> None:
        # RFC 3261 §9.2: after 200 to the CANCEL, the INVITE gets 487.
        self._final(tx, 487, "Request Terminated", now, tx.cancel_reason)

    def _on_cancel_late(self, tx: InviteTransaction, now: float) -> None:
        # RFC 3261 §9.2: the final response was already sent; the CANCEL has no effect.
        return

    def _on_bye(self, tx: InviteTransaction, now: float) -> None:
        # RFC 3261 §15.1.2: a BYE before the final response; pending INVITE gets 487.
        self._final(tx, 487, "Request Terminated", now, EndReason.HANGUP)

    def _on_ring_timeout(self, tx: InviteTransaction, now: float) -> None:
        self._final(tx, 480, "Temporarily Unavailable", now, EndReason.TIMEOUT)

    def _on_route(self, tx: InviteTransaction, now: float) -> None:
        self._redirect(tx, tx.route_target, now, by_deadline=False)

    def _on_route_deadline(self, tx: InviteTransaction, now: float) -> None:
        # No decision in time (the database is slow, the composition stalled): the
        # line's fallback, at once. The PBX must never wait on callpop for a ring.
        self.counters["redirect_deadline_fallbacks"] += 1
        self._redirect(tx, tx.fallback, now, by_deadline=True)

    def _on_timer_g(self, tx: InviteTransaction, now: float) -> None:
        # RFC 3261 §17.2.1 Timer G: retransmit, doubling up to T2.
        self.counters["retransmissions"] += 1
        self._send(tx.remote, tx.last_response)
        tx.timer_g_interval = min(tx.timer_g_interval * 2, T2)
        tx.timer_g_at = now + tx.timer_g_interval

    def _on_ack(self, tx: InviteTransaction, now: float) -> None:
        tx.state = InviteState.CONFIRMED
        tx.timer_g_at = tx.timer_h_at = None
        tx.timer_i_at = now + TIMER_I

    def _absorb(self, tx: InviteTransaction, now: float) -> None:
        # RFC 3261 §17.2.1: in Confirmed, retransmissions are absorbed.
        self.counters["retransmissions"] += 1

    def _on_timer_h(self, tx: InviteTransaction, now: float) -> None:
        # RFC 3261 §17.2.1: no ACK within 64*T1; the transaction ends anyway.
        self.counters["protocol_errors"] += 1
        self._terminate(tx)

    def _on_timer_i(self, tx: InviteTransaction, now: float) -> None:
        self._terminate(tx)

    # -- steps --------------------------------------------------------------------------

    def _refuse_busy(
        self, request: SipRequest, key: str, remote: tuple[str, int], now: float
    ) -> None:
        """486 Busy Here + Retry-After, stateless (see the module docstring)."""
        self.counters["refused_busy"] += 1
        # A slot frees at the latest when the oldest ring times out (dicts keep insertion
        # order, so the first ringing call is the oldest); RFC 3261 §20.33: whole seconds.
        oldest = next(iter(self.ringing.values()), None)
        deadline = oldest.ring_deadline if oldest is not None else None
        wait = self.ring_timeout if deadline is None else deadline - now
        retry_after = max(1, math.ceil(wait))
        # The same To tag for a retransmission of this INVITE (RFC 3261 §8.2.6.2 asks only
        # that it be unique to this UA): the answer to it is the same 486.
        to_tag = hashlib.sha256(key.encode()).hexdigest()[:16]
        self._send(
            remote,
            build_response(
                request,
                486,
                "Busy Here",
                to_tag=to_tag,
                headers=[("Retry-After", str(retry_after)), *self._common()],
            ),
        )
        self.events.append(
            RequestRejected(
                remote=remote,
                reason=f"busy: {len(self.ringing)} calls ringing (sip.max_ringing), 486 sent",
                at=now,
            )
        )

    def _redirect(
        self, tx: InviteTransaction, target: str, now: float, *, by_deadline: bool
    ) -> None:
        # RFC 3261 §21.3.3 302 Moved Temporarily: the caller (the PBX's proxy) retries
        # at the Contact; RFC 3261 §8.3: Contact is the only place the new target goes.
        self.counters["redirects"] += 1
        event = CallRedirected(call_id=tx.call_id, target=target, by_deadline=by_deadline, at=now)
        self._complete(tx, 302, "Moved Temporarily", now, event, [("Contact", f"<{target}>")])

    def _final(
        self, tx: InviteTransaction, status: int, reason: str, now: float, end: EndReason
    ) -> None:
        self._complete(tx, status, reason, now, CallEnded(call_id=tx.call_id, reason=end, at=now))

    def _complete(
        self,
        tx: InviteTransaction,
        status: int,
        reason: str,
        now: float,
        event: CallEnded | CallRedirected,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Send the one final response and start Timer G/H (RFC 3261 §17.2.1)."""
        tx.state = InviteState.COMPLETED
        tx.ring_deadline = tx.route_deadline = None
        tx.last_response = build_response(
            tx.request,
            status,
            reason,
            to_tag=tx.to_tag,
            headers=[*(headers or ()), *self._common()],
        )
        self._send(tx.remote, tx.last_response)
        tx.timer_g_interval = T1
        tx.timer_g_at = now + T1
        tx.timer_h_at = now + TIMER_H
        self.ringing.pop(tx.call_id, None)
        if not tx.ended:
            tx.ended = True
            self.events.append(event)

    def _terminate(self, tx: InviteTransaction) -> None:
        tx.state = InviteState.TERMINATED
        tx.timer_g_at = tx.timer_h_at = tx.timer_i_at = tx.ring_deadline = None
        tx.route_deadline = None
        self.transactions.pop(tx.key, None)
        if self.ringing.get(tx.call_id) is tx:
            del self.ringing[tx.call_id]

    def _send(self, remote: tuple[str, int], data: bytes) -> None:
        self.outbox.append((data, remote))

    def _common(self) -> list[tuple[str, str]]:
        return [("Server", self.server)]


def check_target(target: str) -> None:
    """``target`` must be a ``sip:``/``sips:`` URI fit for a Contact header as it is."""
    if any(c in target for c in '<>"\r\n\t ') or not target.isascii():
        raise ValueError(f"not a plain SIP URI: {target!r}")
    try:
        uri = parse_uri(target)
    except SipParseError as exc:
        raise ValueError(f"not a SIP URI: {target!r} ({exc})") from None
    if not isinstance(uri, SipUri):
        raise ValueError(f"not a sip: or sips: URI: {target!r}")


def _answered_elsewhere(reasons: list[str]) -> bool:
    """RFC 3326: ``Reason: SIP;cause=200`` on a CANCEL means another phone answered."""
    for value in reasons:
        protocol, _, params = value.partition(";")
        if protocol.strip().upper() != "SIP":
            continue
        for param in params.split(";"):
            name, _, raw = param.partition("=")
            if name.strip().lower() == "cause" and raw.strip().strip('"') == "200":
                return True
    return False


_Handler = Callable[[InviteServer, InviteTransaction, float], None]
S = InviteServer
St = InviteState
In = _Input

# (state, input) -> handler; anything else is a protocol error (see _dispatch).
_TRANSITIONS: dict[tuple[InviteState, _Input], _Handler] = {
    (St.ROUTING, In.RETRANSMISSION): S._resend_last,
    (St.ROUTING, In.CANCEL): S._on_cancel,
    (St.ROUTING, In.BYE): S._on_bye,
    (St.ROUTING, In.ROUTE): S._on_route,
    (St.ROUTING, In.ROUTE_DEADLINE): S._on_route_deadline,
    (St.PROCEEDING, In.RETRANSMISSION): S._resend_last,
    (St.PROCEEDING, In.CANCEL): S._on_cancel,
    (St.PROCEEDING, In.BYE): S._on_bye,
    (St.PROCEEDING, In.RING_TIMEOUT): S._on_ring_timeout,
    (St.COMPLETED, In.RETRANSMISSION): S._resend_last,
    (St.COMPLETED, In.CANCEL): S._on_cancel_late,
    (St.COMPLETED, In.TIMER_G): S._on_timer_g,
    (St.COMPLETED, In.TIMER_H): S._on_timer_h,
    (St.COMPLETED, In.ACK): S._on_ack,
    (St.CONFIRMED, In.ACK): S._absorb,
    (St.CONFIRMED, In.CANCEL): S._on_cancel_late,
    (St.CONFIRMED, In.RETRANSMISSION): S._absorb,
    (St.CONFIRMED, In.TIMER_I): S._on_timer_i,
}
del S, St, In
