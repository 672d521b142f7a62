"""Serving HTTP on a port strangers can reach: bounded connections, bounded waits.

uvicorn closes a kept-alive connection that goes idle, but not one that never sends a
request, nor one that sends its request a byte at a time: each holds a file handle for
ever, and once the process runs out of them nothing else can open a file or a socket.
This module owns what callpop adds to uvicorn's h11 protocol:

- a request deadline: a new connection, or a kept-alive one that starts its next
  request, must deliver the whole request (request line, headers, body) within
  ``http.request_timeout`` seconds, or it is closed ("idle" if it sent nothing,
  "slow" if it sent part);
- a connection cap: beyond ``http.max_connections`` open connections (HTTP and
  WebSocket), a new one is answered 503 and closed at once, freeing its handle; the
  default cap is computed below the process's open-file limit, which start-up raises
  as far as the system allows (:func:`raise_file_limit`).

Each closed or refused connection is counted (``/healthz`` ``http``) and logged, at
most once a minute per client address and kind. The web app is not this module's
business, nor is the event loop: it only gives uvicorn a protocol class.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from callpop.logs import Throttle
from callpop.settings import HttpSettings

log = logging.getLogger("callpop.http")

# Raise the soft open-file limit this far at most (above it, select()-based code in
# libraries misbehaves, and no office needs more).
FILE_LIMIT_TARGET = 65536
# Handles kept out of the cap for everything else: the database, SIP, logs, threads.
RESERVED_FILES_MIN = 64
# The automatic cap: a small office has tens of browsers, each with a WebSocket and a
# few HTTP connections.
AUTO_MAX_CONNECTIONS = 1024

_REFUSAL_BODY = b"callpop: too many connections, try again shortly\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"retry-after: 5\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)

CloseKind = Literal["idle", "slow", "over_cap"]


def raise_file_limit(target: int = FILE_LIMIT_TARGET) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards the hard limit (at most ``target``).

    Returns the (soft, hard) limits in force afterwards. Never lowers the soft limit;
    a system that refuses keeps what it had.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def connection_ceiling(file_limit: int) -> int:
    """The most connections that leave enough handles for the rest of the process."""
    reserve = max(RESERVED_FILES_MIN, file_limit // 4)
    return max(1, file_limit - reserve)


def current_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FILE_LIMIT_TARGET if soft == resource.RLIM_INFINITY else soft


@dataclass(slots=True)
class ConnectionGuard:
    """The bounds one server applies, and what they did (for /healthz and the log)."""

    request_timeout: float
    keep_alive_timeout: int
    max_connections: int
    file_limit: int
    closed_idle: int = 0
    closed_slow: int = 0
    refused_over_cap: int = 0
    peak_connections: int = 0
    _throttle: Throttle = field(default_factory=Throttle)
    _connections: set[Any] | None = None  # uvicorn's set of open connections

    @classmethod
    def from_settings(cls, http: HttpSettings, *, file_limit: int | None = None) -> ConnectionGuard:
        """The ``[http]`` bounds; a cap above what the open-file limit allows is lowered
        to it (with a warning), and 0 means: computed from that limit."""
        limit = current_file_limit() if file_limit is None else file_limit
        ceiling = connection_ceiling(limit)
        if http.max_connections <= 0:
            cap = min(AUTO_MAX_CONNECTIONS, ceiling)
        elif http.max_connections > ceiling:
            log.warning(
                "http.max_connections = %d is more than the open-file limit (%d) allows; using %d",
                http.max_connections,
                limit,
                ceiling,
            )
            cap = ceiling
        else:
            cap = http.max_connections
        return cls(
            request_timeout=http.request_timeout,
            keep_alive_timeout=http.keep_alive_timeout,
            max_connections=cap,
            file_limit=limit,
        )

    @property
    def open_connections(self) -> int:
        return 0 if self._connections is None else len(self._connections)

    def admit(self, connections: set[Any]) -> bool:
        """Whether a connection just added to ``connections`` may stay."""
        self._connections = connections
        if len(connections) > self.max_connections:
            return False
        self.peak_connections = max(self.peak_connections, len(connections))
        return True

    def closed(self, kind: CloseKind, client: tuple[str, int] | None) -> None:
        """Count a connection closed or refused by a bound; log it, throttled."""
        if kind == "idle":
            self.closed_idle += 1
        elif kind == "slow":
            self.closed_slow += 1
        else:
            self.refused_over_cap += 1
        host = client[0] if client else "?"
        held_back = self._throttle.allow(f"{host}|{kind}")
        if held_back is None:
            return
        more = f" ({held_back} more since the last line)" if held_back else ""
        if kind == "over_cap":
            log.warning(
                "refused a connection from %s: %d connections open, the limit "
                "(http.max_connections)%s",
                host,
                self.open_connections,
                more,
            )
        else:
            what = "sent nothing" if kind == "idle" else "sent only part of a request"
            # An idle connection is also what browsers open speculatively: not alarming.
            level = logging.INFO if kind == "idle" else logging.WARNING
            log.log(
                level,
                "closed a connection from %s that %s within %g s (http.request_timeout)%s",
                host,
                what,
                self.request_timeout,
                more,
            )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request deadline and a connection cap.

    Not used directly: :func:`protocol_for` binds a :class:`ConnectionGuard` to a
    subclass, since uvicorn builds protocols from a class and its own arguments.
    """

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._got_bytes = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self.connections):
            # Answer and close now: the handle is free again at once, and a browser
            # shows why instead of hanging.
            self.guard.closed("over_cap", self.client)
            transport.write(REFUSAL)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            # A kept-alive connection starts its next request: the clock starts again.
            self._arm()
        self._got_bytes = True
        super().data_received(data)
        if self._deadline is not None and self.conn.their_state not in (
            h11.IDLE,
            h11.SEND_BODY,
        ):
            # The whole request is in (or it upgraded to a WebSocket, or was refused).
            self._disarm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm()  # the WebSocket has its own pings; this timer must not close it
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._got_bytes = False
        self._deadline = self.loop.call_later(self.guard.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.guard.closed("slow" if self._got_bytes else "idle", self.client)
        self.transport.close()


def protocol_for(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A protocol class for uvicorn's ``Config(http=…)`` that applies ``guard``."""
    return type("CallpopH11Protocol", (GuardedH11Protocol,), {"guard": guard})
