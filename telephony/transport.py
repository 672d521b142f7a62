"""The asyncio side of telephony: sockets and the clock, nothing else.

This is the only module of ``telephony/`` that imports asyncio or socket. It holds:

* :class:`SipTransport`, the UDP listener under :class:`~telephony.endpoint.SipEndpoint`:
  it feeds every datagram in with ``loop.time()`` as ``now``, sends what the endpoint
  wants sent, hands events to the ``on_event`` callback, and re-arms one
  ``loop.call_at`` on the endpoint's next timer (the shape of aioquic's
  ``asyncio/protocol.py``);
* :func:`advertised_host`, the address the listener puts in Via/Contact, found by
  asking the OS for its route to the registrar;
* :func:`place_call` and :func:`drive`, which run the sans-I/O test caller
  :class:`~telephony.dialer.UacCall` over one UDP socket.

SIP decisions are never made here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from telephony.dialer import CallResult, DialError, UacCall
from telephony.endpoint import EndpointConfig, SipEndpoint
from telephony.events import Event, RegistrationState

__all__ = ["UNREGISTER_WAIT", "SipTransport", "advertised_host", "drive", "place_call"]

logger = logging.getLogger(__name__)

UNREGISTER_WAIT = 2.0  # seconds close() waits for the un-REGISTER to be answered

# Bind addresses that name no interface: the OS picks the source address per route.
_ANY_ADDRESS = ("", "0.0.0.0", "::")


def advertised_host(
    *, public_host: str, bind_host: str, mode: str, registrar_host: str, registrar_port: int
) -> str:
    """The address to put in Via and Contact (RFC 3261 §18.1.1, §10.2.1).

    ``public_host`` when configured (NAT, a name); else ``bind_host`` unless it is a
    wildcard; else, in register mode, the local address the OS routes to the registrar
    from, which is the address the PBX will see. Falls back to ``bind_host``.
    Blocking: the registrar's name may be resolved (run it in a thread from a loop).
    """
    if public_host:
        return public_host
    if bind_host not in _ANY_ADDRESS or not (mode == "register" and registrar_host):
        return bind_host
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            # A UDP connect sends nothing; it only makes the kernel pick the route and
            # with it the source address.
            probe.connect((registrar_host, registrar_port))
            host: str = probe.getsockname()[0]
            return host
    except OSError:
        return bind_host


class SipTransport(asyncio.DatagramProtocol):
    """A bound UDP socket driving one :class:`SipEndpoint`."""

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        self._unregistered: asyncio.Event | None = None
        self.endpoint: SipEndpoint
        self.local_address: tuple[str, int] = ("", 0)

    @classmethod
    async def start(
        cls,
        config: EndpointConfig,
        on_event: Callable[[Event], None],
        *,
        bind_host: str,
        bind_port: int,
    ) -> SipTransport:
        """Bind, build the endpoint with the real bound port, and (register mode) REGISTER."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        registrar: tuple[str, int] | None = None
        if config.mode == "register":
            # Resolved before binding: no await may come between the bind and the
            # endpoint's creation, or a datagram could arrive with nobody to take it.
            registrar = await _resolve(config.registrar_host, config.registrar_port, family)
        protocol = cls(on_event)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: protocol, local_addr=(bind_host, bind_port), family=family
        )
        protocol._transport = transport
        sockname = transport.get_extra_info("sockname")
        protocol.local_address = (sockname[0], sockname[1])
        # Via / Contact carry the port we really got (bind_port may be 0).
        config = dataclasses.replace(config, local_port=protocol.local_address[1])
        protocol.endpoint = SipEndpoint(config, registrar_addr=registrar)
        protocol.endpoint.start(loop.time())
        protocol._flush()
        return protocol

    @property
    def registration_state(self) -> RegistrationState:
        return self.endpoint.registration_state

    @property
    def stats(self) -> dict[str, int]:
        return self.endpoint.stats

    def watch(self, extension: str) -> bool:
        """:meth:`SipEndpoint.watch` now, and send what it takes."""
        watched = self.endpoint.watch(extension, self._loop.time())
        self._flush()
        return watched

    def unwatch(self, extension: str) -> bool:
        """:meth:`SipEndpoint.unwatch` now, and send what it takes."""
        unwatched = self.endpoint.unwatch(extension, self._loop.time())
        self._flush()
        return unwatched

    def redirect(self, call_id: str, target: str) -> bool:
        """Answer a routed call 302 to ``target`` now (``SipEndpoint.redirect``)."""
        if self._closed:
            return False
        sent = self.endpoint.redirect(call_id, target, self._loop.time())
        self._flush()
        return sent

    async def close(self) -> None:
        """Unregister (best effort, bounded wait), then close the socket."""
        if self._closed:
            return
        if self.endpoint.registration_state is not RegistrationState.DISABLED:
            self._unregistered = asyncio.Event()
            self.endpoint.stop(self._loop.time())
            self._flush()
            try:
                await asyncio.wait_for(self._unregistered.wait(), UNREGISTER_WAIT)
            except TimeoutError:
                logger.info("registrar did not confirm the un-REGISTER; closing anyway")
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- asyncio.DatagramProtocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self._closed:
            return
        self.endpoint.receive_datagram(data, (str(addr[0]), int(addr[1])), self._loop.time())
        self._flush()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a registrar that is down: the client transaction's
        # timers already handle the silence, so this is only worth a debug line.
        logger.debug("UDP error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- plumbing ------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self.endpoint.handle_timer(self._loop.time())
        self._flush()

    def _flush(self) -> None:
        transport = self._transport
        for data, destination in self.endpoint.datagrams_to_send():
            if transport is not None:
                transport.sendto(data, destination)
        while (event := self.endpoint.next_event()) is not None:
            try:
                self._on_event(event)
            except Exception:
                # A failing consumer must not stop the SIP side from answering.
                logger.exception("on_event failed for %r", event)
        if (
            self._unregistered is not None
            and self.endpoint.registration_state is RegistrationState.DISABLED
        ):
            self._unregistered.set()
        at = self.endpoint.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and not self._closed:
            self._timer = self._loop.call_at(at, self._on_timer)


async def _resolve(host: str, port: int, family: int) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve registrar {host!r}")
    address = infos[0][4]
    return (str(address[0]), int(address[1]))


# --- the test caller's runner -----------------------------------------------------------


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.inbox.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port-unreachable on an unconnected socket: keep waiting, the timeout
        # message says what to check.
        pass


async def drive(
    call: UacCall,
    send: Callable[[bytes], None],
    inbox: asyncio.Queue[bytes],
    clock: Callable[[], float],
) -> CallResult:
    """Run ``call`` to its end: send what it produces, feed it ``inbox``, fire its timers.

    ``send`` and ``inbox`` let one socket carry many calls (the latency benchmark
    routes datagrams by Call-ID); ``clock`` is any monotonic clock in seconds.
    """
    call.start(clock())
    while True:
        for datagram in call.datagrams_to_send():
            send(datagram)
        if call.done:
            return call.result()
        due = call.get_timer()
        if not inbox.empty():
            call.receive(inbox.get_nowait(), clock())
            continue
        wait = None if due is None else max(due - clock(), 0.0)
        try:
            data = await asyncio.wait_for(inbox.get(), wait)
        except TimeoutError:
            call.handle_timer(clock())
        else:
            call.receive(data, clock())


async def place_call(
    number: str,
    *,
    to: tuple[str, int],
    name: str | None = None,
    ring_seconds: float = 3.0,
    answered_elsewhere: bool = False,
    withheld: str | None = None,
    local_host: str = "127.0.0.1",
    timeout: float = 8.0,
    p_asserted_identity: str | None = None,
    line: str | None = None,
) -> CallResult:
    """Place one test call to ``to`` and return what it saw; raise DialError otherwise.

    ``line`` is the office number dialled (Request-URI and To user); None dials
    ``office``.
    """
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            _Receiver, local_addr=(local_host, 0)
        )
    except OSError as exc:
        raise DialError(f"cannot send from {local_host}: {exc.strerror or exc}") from exc
    try:
        sockname = transport.get_extra_info("sockname")
        call = UacCall(
            number,
            target=to,
            local=(local_host, int(sockname[1])),
            name=name,
            ring_seconds=ring_seconds,
            answered_elsewhere=answered_elsewhere,
            withheld=withheld,
            p_asserted_identity=p_asserted_identity,
            timeout=timeout,
            line=line,
        )
        return await drive(call, lambda data: transport.sendto(data, to), protocol.inbox, loop.time)
    finally:
        transport.close()
