"""The asyncio UDP transport under the SIP endpoint: the socket and the clock, nothing else.

It feeds every datagram into :class:`~telephony.endpoint.SipEndpoint` with
``loop.time()`` as ``now``, sends what the endpoint wants sent, hands events to the
``on_event`` callback, and re-arms one ``loop.call_at`` on the endpoint's next timer
(the shape of aioquic's ``asyncio/protocol.py``). SIP decisions are never made here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from telephony.endpoint import EndpointConfig, SipEndpoint
from telephony.events import Event, RegistrationState

logger = logging.getLogger(__name__)

UNREGISTER_WAIT = 2.0  # seconds close() waits for the un-REGISTER to be answered


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
