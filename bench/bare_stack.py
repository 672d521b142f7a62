"""The bare-stack reference for ``bench/pop_latency.py --reference``: bench-only code.

This is not callpop and not product code: it is the least work a pop can be with the
parts callpop is built from, the "speed of light" for this machine and these libraries.
One asyncio UDP socket; the From header split by hand; one indexed SQLite read (the
caller's number through ``ix_customer_phones_e164_live``, joined to the customer by its
primary key) in the same seeded database the bench gives callpop; one JSON text sent to
every connection with ``websockets.broadcast``.

It speaks just enough for the bench's load generator and clients, and skips the rest:

- HTTP (its own small asyncio server, ``--http-port``): ``GET /healthz`` and
  ``POST /api/session``, which accepts any login and password and sets one fixed
  ``callpop_session`` cookie; anything else is a 404. No sessions, no password check.
- WebSocket (``websockets`` server, ``--ws-port``, a second port because that server
  answers GET only): the fixed cookie is the whole login check; no Origin check, no
  snapshot, no ``seq``, no replay, no slow-browser dropping.
- SIP (``--sip-port``): an INVITE gets its pop, then ``180 Ringing`` (no ``100``); a
  CANCEL gets ``200`` and the INVITE its ``487``; the ACK is dropped. No transaction
  layer beyond one pop per Call-ID (a retransmitted INVITE gets its 180 again: without
  that, a loaded bench retransmits and the pops multiply), no allowed-hosts check, no call
  log, no lookup deadline, no ``call.ended``.
- The number: a national ``0…`` number becomes ``+81…`` by hand (no phonenumbers), the
  card is the customer's id, name, furigana and company (callpop's card carries much
  more: transactions, notes, openers).

    python bench/bare_stack.py --db bench/.cache/customers-100000.db \\
        --http-port 8001 --ws-port 8002 --sip-port 5070
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
from typing import Any, cast

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

COOKIE = "callpop_session=bare-stack"
LOOKUP = (
    "SELECT c.id, c.name, c.furigana, c.company FROM customer_phones p"
    " JOIN customers c ON c.id = p.customer_id"
    " WHERE p.e164 = ? AND p.deleted_at IS NULL LIMIT 1"
)


class Sip(asyncio.DatagramProtocol):
    def __init__(self, db: sqlite3.Connection, browsers: set[ServerConnection]) -> None:
        self.db, self.browsers = db, browsers
        self.invites: dict[bytes, list[bytes]] = {}  # Call-ID -> the INVITE's headers
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        fields, keep = {}, []  # every header by name; the ones a response copies
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            fields[name] = value.strip()
            if name in (b"via", b"from", b"to", b"call-id", b"cseq"):
                keep.append(line)
        call_id = fields.get(b"call-id", b"")
        if head[0].startswith(b"INVITE "):
            # A retransmission (the 180 was late) gets the 180 again, not a second pop.
            if call_id not in self.invites:
                self.invites[call_id] = keep
                self.pop(call_id, fields.get(b"from", b""))
            self.reply(b"180 Ringing", keep, addr)
        elif head[0].startswith(b"CANCEL "):
            self.reply(b"200 OK", keep, addr)
            invite = self.invites.pop(call_id, None)
            if invite is not None:
                self.reply(b"487 Request Terminated", invite, addr)

    def pop(self, call_id: bytes, from_header: bytes) -> None:
        # "Name" <sip:0312345678@host>;tag=x -> 0312345678 -> +81312345678
        raw = from_header.split(b"sip:", 1)[-1].split(b"@", 1)[0].decode()
        e164 = "+81" + raw[1:] if raw.startswith("0") else raw
        row = self.db.execute(LOOKUP, (e164,)).fetchone()
        customers = (
            [dict(zip(("id", "name", "furigana", "company"), row, strict=True))] if row else []
        )
        message = {
            "type": "call.ringing",
            "call": {"sip_call_id": call_id.decode(), "caller": {"number": e164, "raw": raw}},
            "card": {"status": "matched" if row else "unknown", "customers": customers},
        }
        broadcast(self.browsers, json.dumps(message, ensure_ascii=False))

    def reply(self, status: bytes, headers: list[bytes], addr: tuple[str | Any, int]) -> None:
        lines = [h + b";tag=bare" if h[:3].lower() == b"to:" else h for h in headers]
        assert self.transport is not None
        self.transport.sendto(
            b"\r\n".join([b"SIP/2.0 " + status, *lines, b"Content-Length: 0", b"", b""]), addr
        )


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """GET /healthz and POST /api/session (any login), on one keep-alive connection."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            extra = b""
            if head.startswith(b"POST /api/session "):
                extra = b"Set-Cookie: " + COOKIE.encode() + b"; Path=/; HttpOnly\r\n"
            elif not head.startswith(b"GET /healthz "):
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            writer.write(b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: 2\r\n\r\n{}")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    browsers: set[ServerConnection] = set()

    def check_cookie(connection: ServerConnection, request: Request) -> Response | None:
        if COOKIE not in request.headers.get("Cookie", ""):
            return connection.respond(403, "no session\n")
        return None

    async def browser(connection: ServerConnection) -> None:
        browsers.add(connection)
        try:
            await connection.wait_closed()
        finally:
            browsers.discard(connection)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Sip(db, browsers), local_addr=("127.0.0.1", args.sip_port)
    )
    async with serve(
        browser, "127.0.0.1", args.ws_port, process_request=check_cookie, compression=None
    ):
        server = await asyncio.start_server(http, "127.0.0.1", args.http_port)
        async with server:
            await stop
    transport.close()
    db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", required=True, help="the seeded SQLite file (opened read-only)")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--ws-port", type=int, required=True)
    parser.add_argument("--sip-port", type=int, required=True)
    asyncio.run(main(parser.parse_args()))
