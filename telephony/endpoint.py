"""The sans-I/O SIP endpoint: datagrams and ``now`` in, datagrams, events and timers out.

Theory of operation. :class:`SipEndpoint` is what the transport drives (the way h11 sits
under an HTTP server, or aioquic's connection under its protocol). Each datagram goes
through the same gate, in this order:

0. **Bugs stay bugs, datagrams keep flowing** — ``parse_message`` raises ``SipParseError``
   only for bad input; any other exception while a datagram is parsed or handled is a
   bug. The core lets it propagate (so tests and fuzzers see it) up to here, where the
   datagram is dropped, counted as ``internal_errors`` and logged with its traceback
   once per kind (exception type and where it was raised; at most
   :data:`INTERNAL_ERROR_KINDS` kinds remembered), so one bug hit by a flood of
   datagrams cannot flood the log, and the next good datagram is still answered.
1. **Host filter** — a source IP that is not allowed is dropped without any reply, so a
   scanner's OPTIONS flood learns nothing (counted, reported at most once per host per
   :data:`REJECT_EVENT_INTERVAL`).
2. **Framing** — CRLF keep-alives (RFC 5626 §4.4.1) are ignored; unparseable bytes are
   counted and, when Via/From/To/Call-ID/CSeq survived, answered ``400``.
3. **Validation** — version (``505``), CSeq method (``400``), Request-URI scheme
   (``416``), Max-Forwards (``483``), Require (``420``), in-dialog requests for dialogs
   we never made (``481``).
4. **Dispatch** — INVITE/ACK/CANCEL/BYE to the INVITE server (``calls.py``), responses to
   the registration client (``registration.py``), responses to SUBSCRIBE and in-dialog
   NOTIFYs to the subscription client of the watched extension (``subscription.py``,
   matched by Call-ID, then by tags inside the client), OPTIONS answered here, every
   other method ``405``. Non-INVITE responses are cached for Timer J so a retransmitted
   request gets the same answer without a second event (RFC 3261 §17.2.2).

In register mode the endpoint also watches extensions (RFC 4235 dialog events): one
:class:`~telephony.subscription.SubscriptionClient` per extension, started (staggered by
:data:`SUBSCRIBE_SPACING`) after the first successful registration and restarted each
time the registration is re-established after a failure, since a PBX that lost our
binding has lost our subscriptions too.

The one call decision taken outside a datagram: the composition answers a routed line's
call with :meth:`SipEndpoint.redirect` (a 302; ``calls.py``, "Routed lines").

It owns no socket and no clock: time is the ``now`` argument, timers are reported by
:meth:`SipEndpoint.get_timer` and run by :meth:`SipEndpoint.handle_timer`. It knows
nothing of customers, browsers or asyncio.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from telephony.calls import InviteServer
from telephony.events import (
    CallerId,
    Event,
    RegistrationChanged,
    RegistrationState,
    RequestRejected,
    SubscriptionChanged,
    SubscriptionState,
)
from telephony.message import SipParseError, SipRequest, SipResponse, build_response, parse_message
from telephony.registration import RegistrationClient, RegistrationParams
from telephony.subscription import SubscriptionClient, SubscriptionParams, check_extension
from telephony.timers import TIMER_J
from telephony.uri import AbsoluteUri, hostport, parse_name_addr, parse_uri, parse_via

logger = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY"
REJECT_EVENT_INTERVAL = 10.0  # at most one RequestRejected per rejected host per 10 s
_REJECT_MEMORY = 4096  # hosts remembered for that rate limit
INTERNAL_ERROR_KINDS = 64  # kinds of internal error remembered (each logged once)
_MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7
MAX_WATCHED = 500  # extensions watched at most (one subscription, one dialog each)
# Seconds between the first SUBSCRIBEs of consecutive extensions: 500 extensions reach
# the PBX over 10 s, not in one burst (their refreshes keep the spacing).
SUBSCRIBE_SPACING = 0.02


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointConfig:
    """How the endpoint presents itself and whom it listens to."""

    mode: Literal["register", "trunk"]
    local_host: str  # for Via / Contact
    local_port: int  # the transport fills the real bound port
    allowed_hosts: frozenset[str] = frozenset()  # trunk: only these; register: + registrar
    registrar_host: str = ""
    registrar_port: int = 5060
    domain: str = ""  # the AOR's domain; empty means registrar_host
    user: str = "callpop"
    auth_user: str = ""
    password: str = ""
    expires: int = 300
    ring_timeout: float = 60.0
    max_ringing: int = 200  # calls ringing at once; beyond it INVITEs get 486 (calls.py)
    user_agent: str = "callpop/0.1"
    retry_base: float = 2.0  # registration back-off: retry_base * 2^n ...
    retry_max: float = 60.0  # ... capped here
    # Extensions whose calls are watched (RFC 4235 SUBSCRIBE, register mode only).
    watch_extensions: tuple[str, ...] = ()
    subscription_expires: int = 600  # Expires asked for in SUBSCRIBE
    # Known-customer routing: the fallback target (SIP URI) of an INVITE's dialled line
    # when that line is routed, else None (calls.py, "Routed lines"); and how long the
    # composition has to call redirect() before the fallback is taken.
    route_for: Callable[[CallerId], str | None] | None = None
    route_deadline: float = 0.5
    # Extensions watched at once at most, at start and through watch() later.
    max_watched: int = MAX_WATCHED

    def __post_init__(self) -> None:
        if not 1 <= self.max_watched <= MAX_WATCHED:
            raise ValueError(f"max_watched must be 1-{MAX_WATCHED}")
        if len(set(self.watch_extensions)) > self.max_watched:
            raise ValueError(
                f"{len(set(self.watch_extensions))} extensions to watch; at most {self.max_watched}"
            )
        for extension in self.watch_extensions:
            check_extension(extension)
        if self.subscription_expires < 1:
            raise ValueError("subscription_expires must be at least 1 s")


def _uri_host(host: str) -> str:
    """``host`` as the host of a SIP URI: RFC 3261 §25.1 brackets an IPv6 address."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _normalise_ip(host: str) -> str:
    """Canonical text of an IP (``::ffff:1.2.3.4`` -> ``1.2.3.4``); names unchanged."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class _Reject(Exception):
    """A request that gets an error response; raised inside validation."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


class SipEndpoint:
    """One SIP user agent: the listener's whole protocol side, without I/O."""

    def __init__(
        self, config: EndpointConfig, *, registrar_addr: tuple[str, int] | None = None
    ) -> None:
        self.config = config
        self._contact = f"sip:{config.user}@{hostport(config.local_host, config.local_port)}"
        self._invites = InviteServer(
            contact=self._contact,
            server=config.user_agent,
            ring_timeout=config.ring_timeout,
            max_ringing=config.max_ringing,
            route_for=config.route_for,
            route_deadline=config.route_deadline,
        )
        self._allowed = {_normalise_ip(h) for h in config.allowed_hosts}
        self._registration: RegistrationClient | None = None
        self._registrar = registrar_addr or (config.registrar_host, config.registrar_port)
        if config.mode == "register":
            if not config.registrar_host or not self._registrar[0]:
                raise ValueError("register mode needs registrar_host")
            # The registrar relays the office's calls: its INVITEs are always wanted, by
            # the name it was configured with and by the address it resolved to.
            self._allowed.add(_normalise_ip(config.registrar_host))
            self._allowed.add(_normalise_ip(self._registrar[0]))
            self._registration = RegistrationClient(
                RegistrationParams(
                    registrar=self._registrar,
                    # RFC 3261 §10.2: the AOR is sip:user@domain; without a domain of its
                    # own, callpop is an extension of the registrar's.
                    domain=config.domain or _uri_host(config.registrar_host),
                    user=config.user,
                    auth_user=config.auth_user,
                    password=config.password,
                    expires=config.expires,
                    local=(config.local_host, config.local_port),
                    user_agent=config.user_agent,
                    retry_base=config.retry_base,
                    retry_max=config.retry_max,
                )
            )
        # Watched extensions, in the order given; only in register mode (the SUBSCRIBEs
        # go where the REGISTERs go; a trunk has no such target).
        self._watching: dict[str, SubscriptionClient] = {}
        if self._registration is not None:
            for extension in dict.fromkeys(config.watch_extensions):
                self._watching[extension] = self._subscription_for(extension)
        # Clients of unwatched extensions until their Expires: 0 is answered (or times
        # out), so that the answer and the notifier's final NOTIFY still find them;
        # at most max_watched, the oldest forgotten first.
        self._leaving: deque[SubscriptionClient] = deque()
        # Call-IDs of subscriptions ended that way: the notifier's final NOTIFY may come
        # after the 200 to Expires: 0 and still earns a 200 (the most recent remembered).
        self._unsubscribed: deque[str] = deque(maxlen=config.max_watched)
        # Counters of clients gone for good, so the totals in stats never go down.
        self._retired: dict[str, int] = dict.fromkeys(
            ("subscribes_sent", "subscription_failures", "notifies_received", "strays"), 0
        )
        # Clients fed since the last _collect: only their output is gathered, and the
        # earliest of all their timers is recomputed only then, so 500 watched
        # extensions cost nothing per unrelated datagram (the transport asks get_timer
        # after every one).
        self._touched: dict[str, SubscriptionClient] = {}
        self._subscription_timer: float | None = None
        self._registered = False  # the last registration event said REGISTERED
        self._subscribed = False  # the subscriptions were started once
        self._outbox: list[tuple[bytes, tuple[str, int]]] = []
        self._events: deque[Event] = deque()
        # (transaction key, method) -> (response, destination, expiry): Timer J cache.
        self._answered: OrderedDict[tuple[str, str], tuple[bytes, tuple[str, int], float]] = (
            OrderedDict()
        )
        self._reject_reported: dict[str, float] = {}
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "received",
                "keepalives",
                "parse_errors",
                "rejected_host",
                "bad_requests",
                "invites",
                "acks",
                "cancels",
                "byes",
                "options",
                "notifies",
                "notifies_received",
                "notifies_unmatched",
                "not_allowed",
                "stray_responses",
                "retransmissions",
                "responses_sent",
                "requests_sent",
                "internal_errors",
                "watches_added",
                "watches_removed",
                "watches_refused",
                "unsubscribes_confirmed",  # Expires: 0 of an unwatch answered 2xx
            ),
            0,
        )
        # Kinds of internal error already logged: (type name, file:line where raised).
        self._internal_kinds: set[tuple[str, str]] = set()

    # -- public API ---------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self._registration is not None:
            self._registration.start(now)
        self._collect()

    def stop(self, now: float) -> None:
        for client in self._watching.values():
            client.stop(now)
            self._touched[client.extension] = client
        if self._registration is not None:
            self._registration.stop(now)
        self._collect()

    def watch(self, extension: str, now: float) -> bool:
        """Watch one more extension from now on (register mode); True if it is watched.

        Subscribes at once when the subscriptions are running, else with the others
        after the next registration. False (counted as ``watches_refused``) in trunk
        mode or when ``max_watched`` extensions are watched already; ValueError for an
        extension that cannot be one (``check_extension``).
        """
        check_extension(extension)
        if extension in self._watching:
            return True
        if self._registration is None or len(self._watching) >= self.config.max_watched:
            self._stats["watches_refused"] += 1
            return False
        client = self._subscription_for(extension)
        self._watching[extension] = client
        self._stats["watches_added"] += 1
        if self._registered:
            # Registered: subscribe now (the first of all when none was watched at the
            # registration). Not registered: with the others once it is (again).
            client.start(now)
            self._subscribed = True
        self._touched[extension] = client
        self._collect()
        return True

    def unwatch(self, extension: str, now: float) -> bool:
        """Stop watching ``extension``: RFC 6665 §4.1.2.3 ``Expires: 0`` if subscribed.

        Its later NOTIFYs are answered but no longer handed up; a
        :class:`SubscriptionChanged` ``terminated`` ("no longer watched") says it is
        over. False when it was not watched.
        """
        client = self._watching.pop(extension, None)
        if client is None:
            return False
        self._stats["watches_removed"] += 1
        self._touched.pop(extension, None)
        client.stop(now)
        client.events()  # what it says from now on is not news to anyone
        if not client.stopped:
            if len(self._leaving) >= self.config.max_watched:
                self._retire(self._leaving.popleft())
            self._leaving.append(client)
        else:
            self._retire(client)
        for data in client.datagrams_to_send():
            self._stats["requests_sent"] += 1
            self._outbox.append((data, self._registrar))
        self._events.append(
            SubscriptionChanged(
                extension=extension,
                state=SubscriptionState.TERMINATED,
                detail="no longer watched",
                at=now,
            )
        )
        self._recompute_subscription_timer()
        return True

    @property
    def watched(self) -> tuple[str, ...]:
        """The extensions watched now, in the order they were added."""
        return tuple(self._watching)

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self._stats["received"] += 1
        host = _normalise_ip(addr[0])
        if host not in self._allowed:
            self._stats["rejected_host"] += 1
            self._report_rejected_host(host, addr, now)
            return
        self._expire_answered(now)
        if not data.strip(b"\r\n"):
            # RFC 5626 §4.4.1: CRLF keep-alive; nothing to answer.
            self._stats["keepalives"] += 1
            return
        try:
            self._handle(data, addr, now)
        except Exception as exc:
            # A bug, not bad input (that is SipParseError, handled in _handle): drop the
            # datagram and keep serving the next one.
            self._on_internal_error(exc, addr)
        self._collect()

    def redirect(self, call_id: str, target: str, now: float) -> bool:
        """Answer the routed call ``call_id`` with 302 to ``target`` (a SIP URI).

        False when it no longer waits for a decision (see ``InviteServer.redirect``).
        """
        sent = self._invites.redirect(call_id, target, now)
        self._collect()
        return sent

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [self._invites.get_timer()]
        if self._registration is not None:
            times.append(self._registration.get_timer())
        times.append(self._subscription_timer)
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        self._invites.handle_timer(now)
        if self._registration is not None:
            self._registration.handle_timer(now)
        if self._subscription_timer is not None and now >= self._subscription_timer:
            for client in self._watching.values():
                due = client.get_timer()
                if due is not None and now >= due:
                    client.handle_timer(now)
                    self._touched[client.extension] = client
            for client in self._leaving:
                due = client.get_timer()
                if due is not None and now >= due:
                    client.handle_timer(now)  # Timer E/F of the Expires: 0
        self._expire_answered(now)
        self._collect()

    @property
    def registration_state(self) -> RegistrationState:
        if self._registration is None:
            return RegistrationState.DISABLED
        return self._registration.state

    @property
    def registration_expires_at(self) -> float | None:
        """When the current binding lapses (``now`` scale), or ``None`` if not registered."""
        return None if self._registration is None else self._registration.expires_at

    @property
    def stats(self) -> dict[str, int]:
        stats = dict(self._stats)
        for name, value in self._invites.counters.items():
            stats[name] = stats.get(name, 0) + value
        if self._registration is not None:
            stats["registrations"] = self._registration.attempts
            stats["bindings_confirmed"] = self._registration.bindings
            stats["stray_responses"] += self._registration.strays
        clients = [*self._watching.values(), *self._leaving]
        retired = self._retired
        stats["subscriptions_watched"] = len(self._watching)
        stats["subscriptions_active"] = sum(c.active for c in self._watching.values())
        stats["subscribes_sent"] = retired["subscribes_sent"] + sum(c.attempts for c in clients)
        stats["subscription_failures"] = retired["subscription_failures"] + sum(
            c.failed for c in clients
        )
        stats["notifies_received"] += retired["notifies_received"] + sum(
            c.notifies for c in clients
        )
        stats["notifies_too_large"] = sum(client.too_large for client in clients)
        stats["notifies_unmatched"] += sum(client.unmatched for client in clients)
        stats["stray_responses"] += retired["strays"] + sum(c.strays for c in clients)
        return stats

    @property
    def subscription_states(self) -> dict[str, SubscriptionState]:
        """Each watched extension's subscription state (empty when none is watched)."""
        return {extension: client.state for extension, client in self._watching.items()}

    @property
    def active_calls(self) -> int:
        return len(self._invites.ringing)

    # -- inbound ------------------------------------------------------------------------

    def _handle(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self._on_parse_error(exc, data, addr, now)
            return
        if isinstance(message, SipResponse):
            self._on_response(message, now)
        else:
            self._on_request(message, addr, now)

    def _on_internal_error(self, exc: Exception, addr: tuple[str, int]) -> None:
        self._stats["internal_errors"] += 1
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"
        kind = (type(exc).__name__, where)
        if kind in self._internal_kinds:
            return  # logged once already; counted above
        if len(self._internal_kinds) >= INTERNAL_ERROR_KINDS:
            return  # bounded memory: beyond this many kinds, errors are only counted
        self._internal_kinds.add(kind)
        logger.error(
            "internal error handling a datagram from %s (dropped; further %s at %s are "
            "only counted in stats internal_errors)",
            hostport(*addr),
            kind[0],
            where,
            exc_info=exc,
        )

    def _on_response(self, response: SipResponse, now: float) -> None:
        try:
            method = response.cseq[1].upper()
        except SipParseError:
            method = ""
        if method == "REGISTER" and self._registration is not None:
            if self._registration.receive_response(response, now):
                return
        if method == "SUBSCRIBE":
            for client in self._watching.values():
                if client.receive_response(response, now):
                    self._touched[client.extension] = client
                    return
            for client in self._leaving:
                if client.receive_response(response, now):
                    return  # the answer to an unwatch's Expires: 0 (_collect sweeps it)
        # RFC 3261 §18.1.2: a response matching no client transaction is discarded.
        self._stats["stray_responses"] += 1

    def _on_request(self, request: SipRequest, addr: tuple[str, int], now: float) -> None:
        try:
            destination = self._response_address(request, addr)
            key = self._transaction_key(request)
        except (SipParseError, ValueError) as exc:
            # A Via we cannot read: answer where the datagram came from (RFC 3261 §18.2.2
            # has no better address) so the sender learns why.
            self._reply_bad(request, addr, now, 400, "Bad Via", str(exc))
            return
        method = request.method.upper()
        cached = self._answered.get((key, method))
        if cached is not None and method != "ACK":
            # RFC 3261 §17.2.2: a retransmitted non-INVITE request gets the same response.
            self._stats["retransmissions"] += 1
            self._send(cached[0], cached[1])
            return
        try:
            self._validate(request, method)
        except _Reject as rej:
            if method == "ACK":
                return  # RFC 3261 §17: an ACK is never answered.
            if rej.status == 400:
                self._reply_bad(request, destination, now, 400, rej.reason, str(rej))
            else:
                self._reply(
                    request, key, method, destination, now, rej.status, rej.reason, rej.headers
                )
            return
        if method == "INVITE":
            self._stats["invites"] += 1
            self._invites.invite(request, key, destination, now)
        elif method == "ACK":
            self._stats["acks"] += 1
            # An ACK matching no transaction (e.g. after Timer H) is absorbed.
            self._invites.ack(key, now)
        elif method == "CANCEL":
            self._stats["cancels"] += 1
            response = self._invites.cancel(request, key, destination, now)
            self._remember(key, method, response, destination, now)
        elif method == "BYE":
            self._stats["byes"] += 1
            self._remember(key, method, self._invites.bye(request, now), destination, now)
        elif method == "OPTIONS":
            self._stats["options"] += 1
            self._reply(
                request,
                key,
                method,
                destination,
                now,
                200,
                "OK",
                (("Allow", ALLOW), ("Accept", "application/sdp")),
            )
        elif method == "NOTIFY":
            self._stats["notifies"] += 1
            status, reason = self._notify(request, now)
            self._reply(request, key, method, destination, now, status, reason)
        else:
            # RFC 3261 §8.2.1: a method we do not serve gets 405 with Allow.
            self._stats["not_allowed"] += 1
            self._reply(
                request,
                key,
                method,
                destination,
                now,
                405,
                "Method Not Allowed",
                (("Allow", ALLOW),),
            )

    def _notify(self, request: SipRequest, now: float) -> tuple[int, str]:
        """The answer to a NOTIFY; one in a subscription's dialog goes to its client."""
        try:
            to_tag = parse_name_addr(request.headers.get("To") or "").tag
        except (SipParseError, ValueError):
            return 400, "Bad To Header"
        if to_tag is None:
            # Out of any dialog: an "unsolicited" NOTIFY (Asterisk's message-summary,
            # a check-sync). We subscribed to nothing it could belong to; it is
            # acknowledged as before so the PBX does not retry or log an error.
            return 200, "OK"
        call_id = request.call_id
        for client in self._watching.values():
            if client.call_id == call_id:
                self._touched[client.extension] = client
                return client.receive_notify(request, now)
        for client in self._leaving:
            if client.call_id == call_id:
                # RFC 6665 §4.1.2.3: the NOTIFY that follows Expires: 0 is answered 200.
                return client.receive_notify(request, now)
        if call_id in self._unsubscribed:
            state = (request.headers.get("Subscription-State") or "").split(";", 1)[0]
            if state.strip().lower() == "terminated":
                return 200, "OK"  # the same final NOTIFY, after the 200 to Expires: 0
        # RFC 6665 §4.1.3: a NOTIFY that matches no subscription gets 481, which also
        # tells the notifier to drop a subscription we no longer hold (one made before
        # a restart of callpop, or one we replaced).
        self._stats["notifies_unmatched"] += 1
        return 481, "Subscription Does Not Exist"

    def _validate(self, request: SipRequest, method: str) -> None:
        if request.version != "SIP/2.0":
            raise _Reject(505, "Version Not Supported")  # RFC 3261 §8.2.2 / RFC 4475 badvers
        cseq_method = request.cseq[1]
        if cseq_method.upper() != method:
            raise _Reject(400, "CSeq Method Mismatch")  # RFC 4475 §3.1.2.18 mismatch01
        if method in ("ACK", "CANCEL"):
            return
        if isinstance(parse_uri(request.uri), AbsoluteUri):
            # RFC 3261 §8.2.2.1: a Request-URI scheme we do not understand gets 416
            # (RFC 4475 §3.3.2 unkscm). sip:, sips: and tel: are ours.
            raise _Reject(416, "Unsupported URI Scheme")
        if method == "INVITE":
            max_forwards = request.headers.get("Max-Forwards")
            if max_forwards is not None:
                # RFC 3261 §25.1: Max-Forwards = 1*DIGIT. Judged on the text: only zero
                # matters to a UAS, and int() refuses thousands of digits.
                text = max_forwards.strip()
                if not text.isascii() or not text.isdigit():
                    raise _Reject(400, "Bad Max-Forwards")
                if not text.strip("0"):
                    raise _Reject(483, "Too Many Hops")  # RFC 3261 §16.3 step 3
            to_header = request.headers.get("To") or ""
            try:
                tagged = parse_name_addr(to_header).tag is not None
            except (SipParseError, ValueError):
                raise _Reject(400, "Bad To Header") from None
            if tagged:
                # RFC 3261 §12.2.2: a re-INVITE for a dialog we never established.
                raise _Reject(481, "Call/Transaction Does Not Exist")
        required = [r.strip() for r in request.headers.get_all("Require") if r.strip()]
        if required:
            # RFC 3261 §8.2.2.3: we support no extension that may be required.
            raise _Reject(420, "Bad Extension", (("Unsupported", ", ".join(required)),))

    def _on_parse_error(
        self, exc: SipParseError, data: bytes, addr: tuple[str, int], now: float
    ) -> None:
        self._stats["parse_errors"] += 1
        self._events.append(RequestRejected(remote=addr, reason=f"unparseable: {exc}", at=now))
        partial = exc.partial if exc.partial is not None else _salvage(data)
        if not isinstance(partial, SipRequest) or partial.method.upper() == "ACK":
            return  # a response, an ACK or no start line: nothing may be answered
        if partial.headers.get("Via") is None:
            return  # RFC 3261 §18.2.2: no Via, no address to answer
        try:
            destination = self._response_address(partial, addr)
        except (SipParseError, ValueError):
            destination = addr
        self._send(
            build_response(
                partial,
                400,
                "Bad Request",
                headers=[("Warning", _warning(str(exc))), *self._common()],
            ),
            destination,
        )

    # -- outbound ------------------------------------------------------------------------

    def _reply(
        self,
        request: SipRequest,
        key: str,
        method: str,
        destination: tuple[str, int],
        now: float,
        status: int,
        reason: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        to_tag = None if status == 100 else _tag_for(key)
        response = build_response(
            request, status, reason, to_tag=to_tag, headers=[*headers, *self._common()]
        )
        if method == "INVITE":
            # An INVITE refused up front has no transaction to retransmit it; the caller's
            # retransmission earns the same answer again, which is what Timer G would do.
            self._send(response, destination)
            return
        self._remember(key, method, response, destination, now)

    def _reply_bad(
        self,
        request: SipRequest,
        destination: tuple[str, int],
        now: float,
        status: int,
        reason: str,
        detail: str,
    ) -> None:
        self._stats["bad_requests"] += 1
        self._events.append(RequestRejected(remote=destination, reason=detail, at=now))
        self._send(
            build_response(
                request, status, reason, headers=[("Warning", _warning(detail)), *self._common()]
            ),
            destination,
        )

    def _remember(
        self, key: str, method: str, response: bytes, destination: tuple[str, int], now: float
    ) -> None:
        self._answered[(key, method)] = (response, destination, now + TIMER_J)
        self._send(response, destination)

    def _send(self, data: bytes, destination: tuple[str, int]) -> None:
        self._stats["responses_sent"] += 1
        self._outbox.append((data, destination))

    def _collect(self) -> None:
        """Move what the INVITE server, registration and fed subscription clients produced
        to our queues."""
        for data, destination in self._invites.outbox:
            self._send(data, destination)
        self._invites.outbox.clear()
        self._events.extend(self._invites.events)
        self._invites.events.clear()
        if self._registration is not None:
            for data in self._registration.datagrams_to_send():
                self._stats["requests_sent"] += 1
                self._outbox.append((data, self._registrar))
            for event in self._registration.events():
                self._events.append(event)
                self._follow_registration(event)
        if not self._touched and not self._leaving:
            return
        for client in self._touched.values():
            for data in client.datagrams_to_send():
                self._stats["requests_sent"] += 1
                self._outbox.append((data, self._registrar))
            self._events.extend(client.events())
        self._touched.clear()
        if self._leaving:
            for client in self._leaving:
                for data in client.datagrams_to_send():
                    self._stats["requests_sent"] += 1
                    self._outbox.append((data, self._registrar))
                client.events()  # no longer watched: nothing to hand up
            for client in [c for c in self._leaving if c.stopped]:
                self._leaving.remove(client)
                self._retire(client)
        self._recompute_subscription_timer()

    def _recompute_subscription_timer(self) -> None:
        clients = [*self._watching.values(), *self._leaving]
        timers = [t for t in (c.get_timer() for c in clients) if t is not None]
        self._subscription_timer = min(timers) if timers else None

    def _subscription_for(self, extension: str) -> SubscriptionClient:
        config, registration = self.config, self._registration
        assert registration is not None  # watching is register mode only
        return SubscriptionClient(
            SubscriptionParams(
                extension=extension,
                registrar=self._registrar,
                domain=registration.params.domain,
                user=config.user,
                auth_user=config.auth_user,
                password=config.password,
                expires=config.subscription_expires,
                local=(config.local_host, config.local_port),
                user_agent=config.user_agent,
                retry_base=config.retry_base,
                retry_max=config.retry_max,
            )
        )

    def _retire(self, client: SubscriptionClient) -> None:
        self._unsubscribed.append(client.call_id)
        self._stats["unsubscribes_confirmed"] += client.unsubscribed
        retired = self._retired
        retired["subscribes_sent"] += client.attempts
        retired["subscription_failures"] += client.failed
        retired["notifies_received"] += client.notifies
        retired["strays"] += client.strays

    def _follow_registration(self, event: RegistrationChanged) -> None:
        """Start the subscriptions on the first registration, restart them on the next.

        A registration re-established after a failure usually means the PBX restarted
        (or lost us for long): the subscriptions it held are gone with our binding.
        """
        registered = event.state is RegistrationState.REGISTERED
        was_registered, self._registered = self._registered, registered
        if not registered or was_registered or not self._watching:
            return
        for index, client in enumerate(self._watching.values()):
            delay = index * SUBSCRIBE_SPACING
            if self._subscribed:
                client.restart(event.at, delay=delay)
            else:
                client.start(event.at, delay=delay)
            self._touched[client.extension] = client
        self._subscribed = True

    def _common(self) -> list[tuple[str, str]]:
        return [("Server", self.config.user_agent)]

    # -- bookkeeping ---------------------------------------------------------------------

    def _expire_answered(self, now: float) -> None:
        # Entries are inserted in time order, so the oldest are first.
        while self._answered:
            first = next(iter(self._answered.values()))
            if first[2] > now:
                break
            self._answered.popitem(last=False)

    def _report_rejected_host(self, host: str, addr: tuple[str, int], now: float) -> None:
        last = self._reject_reported.get(host)
        if last is not None and now - last < REJECT_EVENT_INTERVAL:
            return
        if len(self._reject_reported) >= _REJECT_MEMORY:
            # Forget hosts not heard of within the interval so a spoofed flood cannot
            # grow this table without bound.
            self._reject_reported = {
                h: t for h, t in self._reject_reported.items() if now - t < REJECT_EVENT_INTERVAL
            }
        self._reject_reported[host] = now
        self._events.append(RequestRejected(remote=addr, reason="host not allowed", at=now))

    @staticmethod
    def _response_address(request: SipRequest, source: tuple[str, int]) -> tuple[str, int]:
        """RFC 3261 §18.2.2 + RFC 3581: answer the source IP; its port if ``rport``."""
        via_text = request.headers.get("Via")
        if via_text is None:
            raise ValueError("no Via")
        via = parse_via(via_text)
        if "rport" in via.params:
            return source
        return (source[0], via.port or 5060)

    @staticmethod
    def _transaction_key(request: SipRequest) -> str:
        """RFC 3261 §17.2.3: branch + sent-by; the RFC 2543 fallback without a cookie."""
        via_text = request.headers.get("Via")
        if via_text is None:
            raise ValueError("no Via")
        via = parse_via(via_text)
        branch = via.branch or ""
        if branch.startswith(_MAGIC_COOKIE):
            return f"{branch}|{via.host}:{via.port}"
        from_tag = parse_name_addr(request.headers.get("From") or "").tag
        number = request.cseq[0]
        # RFC 3261 §17.2.3: Request-URI, tags, Call-ID, CSeq number and top Via. The
        # Request-URI is left out: ACK/CANCEL carry the INVITE's, so it adds nothing.
        return f"2543|{request.call_id}|{number}|{from_tag}|{via_text}"


def _salvage(data: bytes) -> SipRequest | None:
    """Recover the request of a datagram whose framing is broken (Content-Length lies).

    RFC 3261 §18.3: a UDP message with a bad Content-Length "SHOULD" get 400; to address
    that 400 the header block is read again without its Content-Length lines.
    """
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, _ = data.partition(separator)
        if found:
            break
    else:
        return None
    lines = [
        line
        for line in head.split(b"\n")
        if line.split(b":", 1)[0].strip().lower() not in (b"content-length", b"l")
    ]
    message: SipRequest | SipResponse | None
    try:
        message = parse_message(b"\n".join(lines) + b"\n\n")
    except SipParseError as exc:
        message = exc.partial
    return message if isinstance(message, SipRequest) else None


def _tag_for(key: str) -> str:
    # A stable To tag per transaction, so a retransmitted request is answered the same
    # way (RFC 3261 §8.2.6.2 only asks that the tag be unique to this UA).
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _warning(detail: str) -> str:
    # RFC 3261 §20.43: Warning: 399 <agent> "<text>" (miscellaneous warning).
    text = detail.replace("\\", "").replace('"', "'")[:200]
    return f'399 callpop "{text}"'
