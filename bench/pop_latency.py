"""Ring → pop latency: from the INVITE leaving the caller to the WebSocket frame at each browser.

Starts the real service (``callpop serve --config FILE``) on a seeded database, logs in
``--clients`` WebSocket clients, places ``--calls`` real SIP calls at ``--rate`` per second
(INVITE, ring ~1 s, CANCEL, ACK the 487) and, for every client, times the arrival of the
``call.ringing`` message for each call. Sender and clients share one process and one clock
(``time.perf_counter``), so a latency is one subtraction.

    python bench/pop_latency.py --customers 100000 --clients 100 --rate 20 --calls 200

Writes ``bench/results/pop_latency-<customers>-<clients>-<rate>.json`` and ``.md``.
Everything it starts it stops by PID; every wait has a deadline.

With ``--dialogs`` the service runs in register mode at a small PBX played by the bench
(:class:`DialogPbx`: it accepts the REGISTER and the SUBSCRIBEs to ``--staff`` staff
extensions and sends dialog-event NOTIFYs), and the run has two phases on the same
service: **reference** (the rings alone, as above) and **dialogs** (the same rings while
each call is answered on a staff phone: ``early`` on that extension, ``confirmed`` with
the caller's number as callpop's leg is CANCELled with ``Reason: SIP;cause=200``, and
``terminated`` after a talk; so ``staff.presence``, ``call.answered``, ``call.ended`` and
``call.updated`` flow alongside the pops). Writes ``...-dialogs.json`` and ``.md`` with
both phases and dialogs / reference.

With ``--reference`` the bench runs the bare stack (``bench/bare_stack.py``: the least work
a pop can be with callpop's parts) and callpop side by side, each freshly started, with the
same clients and the same call schedule, for each value of ``--clients 1,100,500``, in
``--pairs`` interleaved (bare stack, callpop) pairs, and prints one table with the ratios
and each side's CPU per call (``/proc`` schedstat, ns). ``--first-pop`` adds the first
pop after start-up (fresh process, no warm-up, one call, ``--first-pop-runs`` times). With
``--db URL`` callpop runs on that database and the bare stack stays on the cached SQLite.
Writes ``bench/results/pop_latency-reference-<customers>-<rate>[-<db>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from telephony.dialer import DialError, UacCall
from telephony.message import (
    SipParseError,
    SipRequest,
    build_request,
    build_response,
    new_branch,
    new_tag,
    parse_message,
)
from telephony.transport import drive
from telephony.uri import parse_name_addr, parse_uri

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"

STAFF_LOGIN = "bench"
STAFF_PASSWORD = "bench-password-1"
# Clients per bench login: the server keeps at most 50 live sessions per staff member
# (db.sessions.MAX_LIVE_PER_STAFF) and ends the oldest beyond that.
CLIENTS_PER_LOGIN = 40
COOKIE_NAME = "callpop_session"
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.I | re.M)


# --- machine ------------------------------------------------------------------------------


def describe_machine() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    loadavg = None
    with contextlib.suppress(OSError):
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "os": os_name,
        "sqlite": sqlite3.sqlite_version,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": loadavg,
    }


def machine_cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat (proc(5))."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


# --- database -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    url: str
    known_numbers: list[str]  # numbers as a PBX would present them (national, digits only)
    customers: int
    logins: list[str] = field(default_factory=lambda: [STAFF_LOGIN])  # for the clients


def _seed_into(url: str, customers: int) -> None:
    from db.demo import seed_bulk
    from db.engine import make_engine, make_session_factory, migrate
    from db.staff import create_staff

    engine = make_engine(url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            seed_bulk(session, customers, seed=1)
            create_staff(
                session,
                login=STAFF_LOGIN,
                name="ベンチ 太郎",
                password=STAFF_PASSWORD,
                extension="299",
            )
            session.commit()
    finally:
        engine.dispose()


def _sample_numbers(url: str, count: int) -> list[str]:
    """A random sample of seeded customers' numbers, in national form (what a trunk sends)."""
    from sqlalchemy import func, select

    from db.engine import make_engine, make_session_factory
    from db.models import CustomerPhone
    from lookup.numbers import normalise

    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.scalars(
                select(CustomerPhone.e164).order_by(func.random()).limit(count)
            ).all()
    finally:
        engine.dispose()
    national = ["0" + number[3:] if number.startswith("+81") else number for number in rows]
    # Only numbers the service can normalise: a "known" call must be able to match.
    return [number for number in national if normalise(number).kind == "e164"]


def cached_sqlite(customers: int) -> Path:
    """``bench/.cache/customers-N.db``, seeded the first time it is asked for."""
    CACHE_DIR.mkdir(exist_ok=True)
    cached = CACHE_DIR / f"customers-{customers}.db"
    if not cached.exists():
        partial = cached.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        print(f"seeding {customers:,} customers into {cached} (once per size) ...", flush=True)
        started = time.perf_counter()
        _seed_into(f"sqlite:///{partial}", customers)
        # Fold the WAL into the file so one copy is the whole database.
        with contextlib.closing(sqlite3.connect(partial)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
        partial.rename(cached)
        print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
    return cached


def copy_database(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    # Flush the copy now: otherwise the kernel writes hundreds of MB back while the
    # service runs, and every fsync of the call log waits behind it.
    with target.open("rb+") as copied:
        os.fsync(copied.fileno())


def prepare_database(customers: int, db: str, workdir: Path, *, clients: int = 1) -> Seeded:
    """A database with ``customers`` customers and the bench staff login.

    SQLite: seeded once per size into ``bench/.cache/`` and copied for each run, so a run
    starts from the same rows and 1M customers are generated once. A URL: used as is,
    seeded only if it has no bench staff yet.
    """
    if db == "sqlite":
        target = workdir / "callpop.db"
        copy_database(cached_sqlite(customers), target)
        url = f"sqlite:///{target}"
    else:
        url = db
        from sqlalchemy import select

        from db.engine import make_engine, make_session_factory, migrate
        from db.models import Staff

        engine = make_engine(url)
        try:
            migrate(engine)
            with make_session_factory(engine)() as session:
                has_bench = session.scalar(select(Staff.id).where(Staff.login == STAFF_LOGIN))
        finally:
            engine.dispose()
        if has_bench is None:
            print(f"seeding {customers:,} customers into {url} ...", flush=True)
            _seed_into(url, customers)
    numbers = _sample_numbers(url, 2000)
    if not numbers:
        raise SystemExit("the seeded database has no customer phone numbers")
    logins = add_bench_logins(url, clients) if clients > CLIENTS_PER_LOGIN else [STAFF_LOGIN]
    return Seeded(url=url, known_numbers=numbers, customers=customers, logins=logins)


# --- the service under test -----------------------------------------------------------------


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    http_port: int
    sip_port: int
    log_path: Path
    ws_port: int | None = None  # the bare stack's WebSocket port; callpop's is http_port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port or self.http_port}/ws"

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far (proc(5))."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float | None:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


def start_service(
    url: str,
    workdir: Path,
    *,
    code: Path = REPO,
    ring_timeout: float = 60.0,
    registrar_port: int | None = None,
) -> Service:
    """``callpop serve`` from the checkout ``code`` (PYTHONPATH), trunk mode on loopback;
    register mode at ``127.0.0.1:registrar_port`` when given (:class:`DialogPbx`)."""
    http_port = free_port(socket.SOCK_STREAM)
    sip_port = free_port(socket.SOCK_DGRAM)
    config = workdir / "callpop.toml"
    if registrar_port is None:
        mode = ['mode = "trunk"']
    else:
        mode = [
            'mode = "register"',
            'registrar_host = "127.0.0.1"',
            f"registrar_port = {registrar_port}",
            'user = "callpop"',
        ]
    config.write_text(
        "\n".join(
            [
                "[sip]",
                *mode,
                'bind_host = "127.0.0.1"',
                f"bind_port = {sip_port}",
                'allowed_hosts = ["127.0.0.1"]',
                f"ring_timeout = {ring_timeout}",
                "",
                "[database]",
                f"url = {json.dumps(url)}",
                "",
                "[http]",
                'host = "127.0.0.1"',
                f"port = {http_port}",
                f'session_secret = "{os.urandom(24).hex()}"',
                "",
            ]
        )
    )
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        # CALLPOP_BENCH_PROFILE=FILE: the service runs under cProfile (stats to FILE at exit).
        profile = os.environ.get("CALLPOP_BENCH_PROFILE")
        profiler = ["-m", "cProfile", "-o", profile] if profile else []
        process = subprocess.Popen(
            [sys.executable, *profiler, "-m", "callpop.cli", "serve", "--config", str(config)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(code)},
        )
    service = Service(process=process, http_port=http_port, sip_port=sip_port, log_path=log_path)
    return _healthy(service)


def start_bare(db_file: Path, workdir: Path) -> Service:
    """``bench/bare_stack.py`` on ``db_file`` (read-only): the reference (``--reference``)."""
    http_port, ws_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    sip_port = free_port(socket.SOCK_DGRAM)
    log_path = workdir / "bare.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(BENCH_DIR / "bare_stack.py"),
                *("--db", str(db_file), "--http-port", str(http_port)),
                *("--ws-port", str(ws_port), "--sip-port", str(sip_port)),
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = Service(
        process=process, http_port=http_port, sip_port=sip_port, log_path=log_path, ws_port=ws_port
    )
    return _healthy(service)


def _healthy(service: Service) -> Service:
    """``service`` once it answers ``/healthz``; it is stopped and the bench exits if not."""
    process = service.process
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode}:\n{service.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{service.base_url}/healthz", timeout=2).status_code == 200:
                return service
        time.sleep(0.2)
    service.stop()
    raise SystemExit(f"the service did not answer /healthz within 90 s:\n{service.log_tail()}")


# --- the PBX's dialog events (--dialogs) -----------------------------------------------------


def add_phone_staff(url: str, count: int) -> list[str]:
    """``count`` staff members on extensions 201, 202, …: the phones calls are answered on."""
    from db.engine import make_engine, make_session_factory
    from db.staff import create_staff

    extensions = [str(201 + i) for i in range(count)]
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            for extension in extensions:
                create_staff(
                    session,
                    login=f"phone{extension}",
                    name=f"内線 {extension}",
                    password=STAFF_PASSWORD,
                    extension=extension,
                )
            session.commit()
    finally:
        engine.dispose()
    return extensions


@dataclass
class _Watcher:
    """One SUBSCRIBE dialog the PBX holds for callpop (RFC 6665)."""

    extension: str
    call_id: str
    their_tag: str  # callpop's From tag
    our_tag: str  # our To tag
    addr: tuple[str, int]  # where callpop's SUBSCRIBE came from (rport)
    cseq: int = 0
    version: int = 0


class DialogPbx:
    """A registrar and RFC 4235 notifier on one loopback UDP socket, in a thread.

    Accepts callpop's REGISTER and SUBSCRIBEs (no authentication), sends each new
    subscription a full, empty dialog-info document (idle), and :meth:`notify` sends one
    extension's dialog as the phone would report it. Thread-safe: the bench's event loop
    calls :meth:`notify` while the thread answers requests.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.watchers: dict[str, _Watcher] = {}  # extension -> its subscription
        self.registered = False
        self.notifies_sent = 0
        self.notify_failures = 0  # NOTIFYs callpop answered other than 200
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dialog-pbx", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                message = parse_message(data)
            except SipParseError:
                continue
            if not isinstance(message, SipRequest):
                if message.cseq[1].upper() == "NOTIFY" and message.status != 200:
                    self.notify_failures += 1
                continue
            if message.method == "REGISTER":
                expires = message.headers.get("Expires") or "300"
                headers = [("Expires", expires), ("Contact", message.headers.get("Contact") or "")]
                self.sock.sendto(
                    build_response(message, 200, to_tag=new_tag(), headers=headers), addr
                )
                self.registered = expires.strip() != "0"
            elif message.method == "SUBSCRIBE":
                self._subscribe(message, (str(addr[0]), int(addr[1])))
            else:
                self.sock.sendto(build_response(message, 200, to_tag=new_tag()), addr)

    def _subscribe(self, request: SipRequest, addr: tuple[str, int]) -> None:
        expires = (request.headers.get("Expires") or "600").strip()
        to = parse_name_addr(request.headers.get("To") or "")
        if to.tag is not None:  # a refresh or the Expires: 0 of a subscription we hold
            response = build_response(request, 200, headers=[("Expires", expires)])
            self.sock.sendto(response, addr)
            return
        uri = parse_uri(request.uri)
        extension = str(getattr(uri, "user", "") or "")
        watcher = _Watcher(
            extension=extension,
            call_id=request.call_id,
            their_tag=parse_name_addr(request.headers.get("From") or "").tag or "",
            our_tag=new_tag(),
            addr=addr,
        )
        contact = f"<sip:pbx@127.0.0.1:{self.port}>"
        response = build_response(
            request, 200, to_tag=watcher.our_tag, headers=[("Expires", "600"), ("Contact", contact)]
        )
        self.sock.sendto(response, addr)
        with self._lock:
            self.watchers[extension] = watcher
        self.notify(extension, None)  # RFC 6665 §4.1.2.2: the state at once (idle)

    def notify(self, extension: str, dialog: tuple[str, str, str] | None) -> float | None:
        """Send ``extension``'s dialog (id, state, caller's number), or none (idle);
        the ``time.perf_counter()`` of the sendto, None if it is not subscribed."""
        with self._lock:
            watcher = self.watchers.get(extension)
            if watcher is None:
                return None
            watcher.cseq += 1
            watcher.version += 1
            cseq, version = watcher.cseq, watcher.version
        entity = f"sip:{extension}@127.0.0.1"
        inner = ""
        if dialog is not None:
            dialog_id, state, number = dialog
            inner = (
                f'<dialog id="{dialog_id}" direction="recipient"><state>{state}</state>'
                f"<local><identity>{entity}</identity></local>"
                f"<remote><identity>sip:{number}@127.0.0.1</identity></remote></dialog>"
            )
        body = (
            '<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
            f'version="{version}" state="full" entity="{entity}">{inner}</dialog-info>'
        ).encode()
        request = build_request(
            "NOTIFY",
            f"sip:callpop@{watcher.addr[0]}:{watcher.addr[1]}",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={new_branch()}"),
                ("Max-Forwards", "70"),
                ("From", f"<{entity}>;tag={watcher.our_tag}"),
                ("To", f"<sip:callpop@127.0.0.1>;tag={watcher.their_tag}"),
                ("Call-ID", watcher.call_id),
                ("CSeq", f"{cseq} NOTIFY"),
                ("Contact", f"<sip:pbx@127.0.0.1:{self.port}>"),
                ("Event", "dialog"),
                ("Subscription-State", "active;expires=600"),
                ("Content-Type", "application/dialog-info+xml"),
            ],
            body,
        )
        sent_at = time.perf_counter()
        self.sock.sendto(request, watcher.addr)
        self.notifies_sent += 1
        return sent_at


@dataclass
class DialogScript:
    """Each call of the dialogs phase answered on a free staff phone, then hung up."""

    pbx: DialogPbx
    free: list[str]  # extensions not on a call now
    talk_seconds: float = 1.0
    early_after: float = 0.2  # the phone starts ringing this long after the INVITE
    confirmed_at: dict[str, float] = field(default_factory=dict)  # call id -> NOTIFY sendto
    no_phone: int = 0  # calls that found every phone busy (not answered)

    async def answer(self, call_id: str, number: str, ring_seconds: float) -> None:
        if not self.free:
            self.no_phone += 1
            return
        extension = self.free.pop(0)
        dialog_id = os.urandom(6).hex()
        try:
            await asyncio.sleep(self.early_after)
            self.pbx.notify(extension, (dialog_id, "early", number))
            # confirmed as callpop's leg is CANCELled (the UAC rings ring_seconds)
            await asyncio.sleep(max(0.0, ring_seconds - self.early_after))
            sent = self.pbx.notify(extension, (dialog_id, "confirmed", number))
            if sent is not None:
                self.confirmed_at[call_id] = sent
            await asyncio.sleep(self.talk_seconds)
            self.pbx.notify(extension, (dialog_id, "terminated", number))
        finally:
            self.free.append(extension)


# --- clients and calls -----------------------------------------------------------------------


@dataclass
class Pops:
    """What the clients saw: (client, sip_call_id) → arrival time, and card statuses."""

    arrivals: dict[tuple[int, str], float] = field(default_factory=dict)
    answered: dict[tuple[int, str], float] = field(default_factory=dict)  # call.answered
    types: Counter[str] = field(default_factory=Counter)  # every message, by type
    statuses: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    closed: list[str] = field(default_factory=list)


def add_bench_logins(url: str, clients: int) -> list[str]:
    """The logins the clients use, ``CLIENTS_PER_LOGIN`` each: ``bench`` (seeded), then
    ``bench-2``, ``bench-3``, … added here when missing."""
    from sqlalchemy import select

    from db.engine import make_engine, make_session_factory
    from db.models import Staff
    from db.staff import create_staff

    count = max(1, -(-clients // CLIENTS_PER_LOGIN))
    logins = [STAFF_LOGIN, *(f"{STAFF_LOGIN}-{i}" for i in range(2, count + 1))]
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            have = set(session.scalars(select(Staff.login).where(Staff.login.in_(logins))))
            for name in logins:
                if name not in have:
                    create_staff(session, login=name, name="ベンチ 太郎", password=STAFF_PASSWORD)
            session.commit()
    finally:
        engine.dispose()
    return logins


async def login(client: httpx.AsyncClient, name: str = STAFF_LOGIN) -> str:
    response = await client.post("/api/session", json={"login": name, "password": STAFF_PASSWORD})
    response.raise_for_status()
    cookie = response.cookies.get(COOKIE_NAME)
    if not cookie:
        raise SystemExit(f"POST /api/session set no {COOKIE_NAME} cookie")
    return cookie


async def listen(index: int, ws: ClientConnection, pops: Pops) -> None:
    try:
        async for frame in ws:
            arrived = time.perf_counter()  # before parsing: the frame is here
            message = json.loads(frame)
            kind = message.get("type")
            pops.types[kind] += 1
            if kind == "call.answered":
                pops.answered.setdefault((index, message["call"]["sip_call_id"]), arrived)
            if kind != "call.ringing":
                continue
            call_id = message["call"]["sip_call_id"]
            key = (index, call_id)
            if key in pops.arrivals:
                pops.duplicates += 1
                continue
            pops.arrivals[key] = arrived
            card = message.get("card") or {}
            pops.statuses.setdefault(call_id, str(card.get("status")))
    except Exception as exc:  # a dropped client is a result, not a crash of the bench
        pops.closed.append(f"client {index}: {exc!r}")


class CallRouter(asyncio.DatagramProtocol):
    """One UDP socket for every call; responses go to the call with their Call-ID."""

    def __init__(self) -> None:
        self.inboxes: dict[str, asyncio.Queue[bytes]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        match = _CALL_ID.search(data)
        if match:
            inbox = self.inboxes.get(match.group(1).strip().decode("ascii", "replace"))
            if inbox is not None:
                inbox.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        pass


@dataclass
class CallOutcome:
    call_id: str
    number: str
    known: bool
    sent_at: float | None = None
    responses: tuple[int, ...] = ()
    error: str | None = None


async def one_call(
    router: CallRouter,
    outcome: CallOutcome,
    *,
    target: tuple[str, int],
    local_port: int,
    ring_seconds: float,
    script: DialogScript | None = None,
) -> None:
    assert router.transport is not None
    transport = router.transport
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    router.inboxes[outcome.call_id] = inbox

    def send(data: bytes) -> None:
        if outcome.sent_at is None and data.startswith(b"INVITE "):
            outcome.sent_at = time.perf_counter()
        transport.sendto(data, target)

    call = UacCall(
        outcome.number,
        target=target,
        local=("127.0.0.1", local_port),
        ring_seconds=ring_seconds,
        timeout=8.0,
        call_id=outcome.call_id,
        # Answered on a staff phone: the PBX cancels callpop's leg as answered elsewhere.
        answered_elsewhere=script is not None,
    )
    answering = None
    if script is not None:
        answering = asyncio.ensure_future(
            script.answer(outcome.call_id, outcome.number, ring_seconds)
        )
    try:
        result = await drive(call, send, inbox, time.perf_counter)
        outcome.responses = result.responses
    except DialError as exc:
        outcome.error = str(exc)
    finally:
        router.inboxes.pop(outcome.call_id, None)
        if answering is not None:
            await answering


def unknown_number(rng: random.Random) -> str:
    # 050 (IP phone) numbers are valid, and db.demo.seed_bulk gives customers 090 mobiles
    # and 03 landlines only: a real caller that is nobody's customer.
    return f"050{rng.randrange(1, 10)}{rng.randrange(10**7):07d}"  # 0500 is unassigned


# --- statistics ---------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (no interpolation): a latency some pop actually had."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarise(latencies_ms: list[float]) -> dict[str, float | None]:
    values = sorted(latencies_ms)
    return {
        "p50_ms": _r(percentile(values, 50)),
        "p95_ms": _r(percentile(values, 95)),
        "p99_ms": _r(percentile(values, 99)),
        "max_ms": _r(values[-1] if values else None),
        "mean_ms": _r(sum(values) / len(values) if values else None),
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    customers: int
    clients: int
    rate: float
    calls: int
    db: str
    unknown_share: float
    ring_seconds: float
    warmup_calls: int
    dialogs: bool = False
    staff: int = 60
    talk_seconds: float = 1.0


async def measure(
    options: Options, service: Service, seeded: Seeded, *, script: DialogScript | None = None
) -> dict[str, Any]:
    """One phase (the rings), or with ``script`` two: reference, then dialogs."""
    rng = random.Random(1)
    pops = Pops()
    loop = asyncio.get_running_loop()

    # 1. Log the clients in and open their WebSockets.
    print(f"logging in {options.clients} clients ...", flush=True)
    origin = Origin(service.base_url)
    sockets: list[ClientConnection] = []
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        limit = asyncio.Semaphore(4)

        async def login_one(index: int) -> str:
            async with limit:
                return await login(http, seeded.logins[index // CLIENTS_PER_LOGIN])

        cookies = await asyncio.gather(*(login_one(i) for i in range(options.clients)))
    for cookie in cookies:
        sockets.append(
            await connect(
                service.ws_url,
                origin=origin,
                additional_headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
                open_timeout=30,
                max_size=None,
            )
        )
    listeners = [asyncio.create_task(listen(index, ws, pops)) for index, ws in enumerate(sockets)]

    transport, router = await loop.create_datagram_endpoint(CallRouter, local_addr=("127.0.0.1", 0))
    router.transport = transport
    local_port = int(transport.get_extra_info("sockname")[1])
    target = ("127.0.0.1", service.sip_port)
    try:
        # 2. Warm up: a few calls, not measured (first queries, first JSON, first frames).
        warm = [
            CallOutcome(call_id=f"warmup-{i}-{os.urandom(6).hex()}", number=n, known=True)
            for i, n in enumerate(rng.sample(seeded.known_numbers, options.warmup_calls))
        ]
        await asyncio.gather(
            *(
                one_call(router, o, target=target, local_port=local_port, ring_seconds=0.3)
                for o in warm
            )
        )
        if errors := [o.error for o in warm if o.error]:
            raise SystemExit(f"warm-up calls failed: {errors[0]}\n{service.log_tail()}")
        # Each known number calls once in the run while numbers last: a number that called
        # minutes ago could otherwise be the call a phone's answer is matched to.
        fresh = [n for n in seeded.known_numbers if n not in {o.number for o in warm}]
        rng.shuffle(fresh)

        async def phase(name: str, with_script: DialogScript | None) -> dict[str, Any]:
            return await run_phase(
                name,
                options,
                service,
                seeded,
                rng,
                pops,
                router,
                fresh,
                target=target,
                local_port=local_port,
                script=with_script,
            )

        if script is None:
            return await phase("calls", None)
        return {
            "reference": await phase("reference", None),
            "dialogs": await phase("dialogs", script),
        }
    finally:
        transport.close()
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)


async def run_phase(
    name: str,
    options: Options,
    service: Service,
    seeded: Seeded,
    rng: random.Random,
    pops: Pops,
    router: CallRouter,
    fresh: list[str],
    *,
    target: tuple[str, int],
    local_port: int,
    script: DialogScript | None,
) -> dict[str, Any]:
    """``options.calls`` measured calls at ``options.rate``; the results of this phase."""
    # 3. The measured calls, paced at an absolute schedule so the rate does not drift.
    outcomes: list[CallOutcome] = []
    for i in range(options.calls):
        known = rng.random() >= options.unknown_share
        if known:
            number = fresh.pop() if fresh else rng.choice(seeded.known_numbers)
        else:
            number = unknown_number(rng)
        call_id = f"bench-{name}-{i}-{os.urandom(8).hex()}@127.0.0.1"
        outcomes.append(CallOutcome(call_id=call_id, number=number, known=known))
    print(
        f"{name}: placing {options.calls} calls at {options.rate:g}/s to {options.clients} "
        f"clients{' answered on staff phones (dialog events)' if script else ''} ...",
        flush=True,
    )
    types_before = Counter(pops.types)
    cpu_before, wall_before = service.cpu_seconds(), time.perf_counter()
    machine_before = machine_cpu_times()
    bench_cpu_before = time.process_time()
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i, outcome in enumerate(outcomes):
        delay = start + i / options.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            asyncio.create_task(
                one_call(
                    router,
                    outcome,
                    target=target,
                    local_port=local_port,
                    ring_seconds=options.ring_seconds,
                    script=script,
                )
            )
        )
    send_span = time.perf_counter() - start
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=options.ring_seconds + 30)

    # 4. Pops still in flight: wait for the rest, bounded.
    expected = {(c, o.call_id) for o in outcomes for c in range(options.clients)}
    deadline = time.perf_counter() + 5.0
    while time.perf_counter() < deadline and not expected <= pops.arrivals.keys():
        await asyncio.sleep(0.05)
    cpu_after, wall_after = service.cpu_seconds(), time.perf_counter()
    machine_after = machine_cpu_times()
    bench_cpu = time.process_time() - bench_cpu_before

    # 5. Latencies: arrival at each client − INVITE sendto, same clock.
    sent = {o.call_id: o.sent_at for o in outcomes if o.sent_at is not None}
    known_ids = {o.call_id for o in outcomes if o.known}
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {"known": [], "unknown": []}
    for (_client, call_id), arrived in pops.arrivals.items():
        if call_id in sent:
            ms = (arrived - sent[call_id]) * 1000
            latencies.append(ms)
            by_kind["known" if call_id in known_ids else "unknown"].append(ms)
    received = len(expected & pops.arrivals.keys())
    wall = wall_after - wall_before
    # Calls most clients got late (median over the clients > 50 ms): when in the phase
    # (seconds after its first INVITE) — a stall of the whole service, or of the machine.
    per_call: dict[str, list[float]] = {}
    for (_client, call_id), arrived in pops.arrivals.items():
        if call_id in sent:
            per_call.setdefault(call_id, []).append((arrived - sent[call_id]) * 1000)
    slow_calls = []
    for o in outcomes:
        values = sorted(per_call.get(o.call_id, []))
        if o.sent_at is not None and values and values[len(values) // 2] > 50:
            slow_calls.append([round(o.sent_at - start, 2), round(values[len(values) // 2], 1)])
    statuses = Counter(pops.statuses.get(o.call_id, "none") for o in outcomes)
    sip_failures = [o.error for o in outcomes if o.error]
    result: dict[str, Any] = {
        "pops_expected": len(expected),
        "pops_received": received,
        "pops_lost": len(expected) - received,
        "duplicates": pops.duplicates,
        "clients_dropped": len(pops.closed),
        "client_errors": pops.closed[:5],
        **summarise(latencies),
        "known_numbers": summarise(by_kind["known"]),
        "unknown_numbers": summarise(by_kind["unknown"]),
        "card_status": dict(statuses),
        "sip_calls_ok": sum(1 for o in outcomes if o.responses and o.responses[-1] == 487),
        "sip_failures": len(sip_failures),
        "sip_failure_examples": sip_failures[:3],
        # Intervals between INVITEs, not INVITEs, span the send phase.
        "achieved_rate": round((options.calls - 1) / send_span, 2) if send_span > 0 else None,
        "server_cpu_percent": round((cpu_after - cpu_before) / wall * 100, 1),
        "bench_cpu_percent": round(bench_cpu / wall * 100, 1),
        "server_peak_rss_mib": service.peak_rss_mib(),
        # Everything on the machine (other work included): near 100 % means the service
        # was waiting for a CPU, and the latencies show the machine, not just callpop.
        "machine_cpu_busy_percent": round(
            (machine_after[0] - machine_before[0])
            / max(1, machine_after[1] - machine_before[1])
            * 100,
            1,
        ),
        "measured_seconds": round(wall, 2),
        "slow_calls": slow_calls[:50],  # [seconds into the phase, median latency ms]
        # Every message each client got in this phase, by type (all clients together).
        "messages_per_client": {
            kind: round(count / options.clients, 1)
            for kind, count in sorted((pops.types - types_before).items())
            if kind is not None
        },
    }
    if script is not None:
        # confirmed NOTIFY sendto → call.answered frame at each client, same clock.
        answered = [
            (arrived - script.confirmed_at[call_id]) * 1000
            for (_client, call_id), arrived in pops.answered.items()
            if call_id in script.confirmed_at and call_id in sent
        ]
        result["answered"] = {
            "calls_answered_expected": sum(1 for o in outcomes if o.call_id in script.confirmed_at),
            "answered_received": len(answered),
            "answered_expected": len([o for o in outcomes if o.call_id in script.confirmed_at])
            * options.clients,
            **summarise(answered),
        }
        result["calls_without_a_free_phone"] = script.no_phone
        result["notifies_sent"] = script.pbx.notifies_sent
        result["notify_failures"] = script.pbx.notify_failures
    return result


def markdown(report: dict[str, Any]) -> str:
    o, r, m = report["options"], report["results"], report["machine"]
    rows = [
        ("customers", f"{o['customers']:,}"),
        ("clients (WebSockets)", o["clients"]),
        ("rate (calls/s)", f"{o['rate']:g} (achieved {r['achieved_rate']})"),
        ("calls", o["calls"]),
        (
            "pops expected / received / lost",
            f"{r['pops_expected']} / {r['pops_received']} / {r['pops_lost']}",
        ),
        (
            "p50 / p95 / p99 / max (ms)",
            f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} / {r['max_ms']}",
        ),
        (
            "known numbers p50 / p99 (ms)",
            f"{r['known_numbers']['p50_ms']} / {r['known_numbers']['p99_ms']}",
        ),
        (
            "unknown numbers p50 / p99 (ms)",
            f"{r['unknown_numbers']['p50_ms']} / {r['unknown_numbers']['p99_ms']}",
        ),
        (
            "card status per call",
            ", ".join(f"{k} {v}" for k, v in sorted(r["card_status"].items())),
        ),
        ("SIP calls ended with 487", f"{r['sip_calls_ok']} of {o['calls']}"),
        ("server CPU (100 % = one core)", f"{r['server_cpu_percent']} %"),
        ("bench process CPU (clients + caller)", f"{r['bench_cpu_percent']} %"),
        ("server peak RSS", f"{r['server_peak_rss_mib']} MiB"),
        ("whole machine CPU busy (all cores)", f"{r['machine_cpu_busy_percent']} %"),
    ]
    lines = [
        f"# Ring → pop latency: {o['customers']:,} customers, {o['clients']} clients, "
        f"{o['rate']:g} calls/s",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']}; "
        f"Python {m['python']}; SQLite {m['sqlite']}; database {o['db_kind']}; "
        f"load average at start {' '.join(m['loadavg_at_start'] or [])}; {m['date']}.",
        "",
        "Latency = `time.perf_counter()` at the WebSocket frame's arrival in the client − the same "
        "clock at the INVITE's `sendto`; the caller, the clients and the service share this "
        "machine (see bench/README.md).",
        "",
    ]
    return "\n".join(lines)


def print_table(report: dict[str, Any]) -> None:
    o, r = report["options"], report["results"]
    header = (
        f"{'customers':>10} {'clients':>7} {'rate':>5} {'calls':>5} {'expected':>8} "
        f"{'received':>8} {'lost':>5} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'srv CPU':>8}"
    )
    print(header)
    print(
        f"{o['customers']:>10} {o['clients']:>7} {o['rate']:>5g} {o['calls']:>5} "
        f"{r['pops_expected']:>8} {r['pops_received']:>8} {r['pops_lost']:>5} "
        f"{r['p50_ms']!s:>7} {r['p95_ms']!s:>7} {r['p99_ms']!s:>7} {r['max_ms']!s:>7} "
        f"{r['server_cpu_percent']:>7}%"
    )
    print("(latencies in ms; server CPU: 100 % = one core)")


def _client_counts(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma list") from None


def parse_args(argv: list[str] | None = None) -> Options:
    return _parse(argv)[0]


def _parse(argv: list[str] | None) -> tuple[Options, Reference | None]:
    """The options of one run, and the side-by-side plan when ``--reference`` is given
    (then ``Options.clients`` is the largest of the ``--clients`` list)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument(
        "--clients",
        type=_client_counts,
        default=[100],
        help="WebSocket clients; a comma list (1,100,500) with --reference",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--db", default="sqlite", help='"sqlite" (cached, copied) or a URL')
    parser.add_argument("--unknown-share", type=float, default=0.2, help="share of unknown numbers")
    parser.add_argument("--ring-seconds", type=float, default=1.0, help="ring before CANCEL")
    parser.add_argument("--warmup-calls", type=int, default=5)
    parser.add_argument(
        "--dialogs",
        action="store_true",
        help="register mode at the bench's PBX; a reference phase, then every call answered"
        " on a staff phone (dialog events: presence, answered, ended)",
    )
    parser.add_argument("--staff", type=int, default=60, help="staff phones (--dialogs)")
    parser.add_argument("--talk-seconds", type=float, default=1.0, help="talk (--dialogs)")
    parser.add_argument(
        "--reference",
        action="store_true",
        help="the bare stack (bench/bare_stack.py) and callpop side by side, same clients and"
        " calls, for each --clients value",
    )
    parser.add_argument(
        "--pairs", type=int, default=1, help="(bare stack, callpop) runs per --clients value"
    )
    parser.add_argument(
        "--first-pop",
        action="store_true",
        help="with --reference: also the first call's pop on a freshly started service (and"
        " bare stack), no warm-up, one client",
    )
    parser.add_argument("--first-pop-runs", type=int, default=3, help="fresh starts (--first-pop)")
    args = parser.parse_args(argv)
    clients: list[int] = args.clients
    if not (
        0 < args.calls <= 100_000 and all(0 < c <= 2000 for c in clients) and 0 < args.rate <= 1000
    ):
        parser.error("--calls, --clients and --rate must be positive and bounded")
    if not 1 <= args.staff <= 400:
        parser.error("--staff must be 1-400 (callpop watches at most 500 extensions)")
    reference = None
    if args.reference:
        if args.dialogs:
            parser.error("--reference and --dialogs are separate runs")
        if not (1 <= args.pairs <= 20 and 1 <= args.first_pop_runs <= 20):
            parser.error("--pairs and --first-pop-runs must be 1-20")
        reference = Reference(
            clients=tuple(clients),
            pairs=args.pairs,
            first_pop=args.first_pop,
            first_pop_runs=args.first_pop_runs,
        )
    elif len(clients) != 1 or args.first_pop:
        parser.error("a list of --clients and --first-pop need --reference")
    options = Options(
        customers=args.customers,
        clients=max(clients),
        rate=args.rate,
        calls=args.calls,
        db=args.db,
        unknown_share=args.unknown_share,
        ring_seconds=args.ring_seconds,
        warmup_calls=args.warmup_calls,
        dialogs=args.dialogs,
        staff=args.staff,
        talk_seconds=args.talk_seconds,
    )
    return options, reference


def main(argv: list[str] | None = None) -> int:
    options, reference = _parse(argv)
    if reference is not None:
        return main_reference(options, reference)
    if options.dialogs:
        return main_dialogs(options)
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="callpop-bench-") as tmp:
        workdir = Path(tmp)
        seeded = prepare_database(options.customers, options.db, workdir, clients=options.clients)
        service = start_service(seeded.url, workdir)
        try:
            results = asyncio.run(
                asyncio.wait_for(
                    measure(options, service, seeded),
                    timeout=120 + options.calls / options.rate + options.clients,
                )
            )
        except BaseException:
            print(f"--- server log (tail)\n{service.log_tail()}", file=sys.stderr)
            raise
        finally:
            service.stop()
    report = {
        "benchmark": "pop_latency",
        "options": _options_report(options),
        "machine": machine,
        "results": results,
    }
    print_table(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = f"pop_latency-{options.customers}-{options.clients}-{options.rate:g}"
    (RESULTS_DIR / f"{stem}.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    )
    (RESULTS_DIR / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {RESULTS_DIR / stem}.json and .md")
    return 0 if results["pops_lost"] == 0 and results["sip_failures"] == 0 else 1


def _options_report(options: Options) -> dict[str, Any]:
    return {
        **asdict(options),
        "db_kind": "sqlite" if options.db == "sqlite" else options.db.split(":", 1)[0],
        "db": None,
    }


def main_dialogs(options: Options) -> int:
    """--dialogs: register mode at :class:`DialogPbx`, reference then dialogs phase."""
    machine = describe_machine()
    pbx = DialogPbx()
    try:
        with tempfile.TemporaryDirectory(prefix="callpop-bench-") as tmp:
            workdir = Path(tmp)
            seeded = prepare_database(
                options.customers, options.db, workdir, clients=options.clients
            )
            print(f"adding {options.staff} staff phones (extensions from 201) ...", flush=True)
            extensions = add_phone_staff(seeded.url, options.staff)
            service = start_service(seeded.url, workdir, registrar_port=pbx.port)
            try:
                deadline = time.monotonic() + 60
                while not set(extensions) <= pbx.watchers.keys():
                    if time.monotonic() > deadline:
                        raise SystemExit(
                            f"callpop subscribed to {len(pbx.watchers)} of {len(extensions)}"
                            f" extensions within 60 s:\n{service.log_tail()}"
                        )
                    time.sleep(0.1)
                script = DialogScript(
                    pbx=pbx, free=list(extensions), talk_seconds=options.talk_seconds
                )
                results = asyncio.run(
                    asyncio.wait_for(
                        measure(options, service, seeded, script=script),
                        timeout=240 + 2 * options.calls / options.rate + options.clients,
                    )
                )
            except BaseException:
                print(f"--- server log (tail)\n{service.log_tail()}", file=sys.stderr)
                raise
            finally:
                service.stop()
    finally:
        pbx.close()
    reference, loaded = results["reference"], results["dialogs"]
    ratio = {
        key: round(loaded[key] / reference[key], 2) if reference[key] else None
        for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu_percent")
    }
    report = {
        "benchmark": "pop_latency_dialogs",
        "options": _options_report(options),
        "machine": machine,
        "results": results,
        "dialogs_over_reference": ratio,
    }
    for phase_name, phase in results.items():
        print(phase_name)
        print_table({"options": report["options"], "results": phase})
    print(f"dialogs / reference: {ratio}")
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = f"pop_latency-{options.customers}-{options.clients}-{options.rate:g}-dialogs"
    (RESULTS_DIR / f"{stem}.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    )
    (RESULTS_DIR / f"{stem}.md").write_text(markdown_dialogs(report))
    print(f"wrote {RESULTS_DIR / stem}.json and .md")
    ok = all(r["pops_lost"] == 0 and r["sip_failures"] == 0 for r in results.values())
    return (
        0
        if ok and loaded["answered"]["answered_received"] == loaded["answered"]["answered_expected"]
        else 1
    )


def markdown_dialogs(report: dict[str, Any]) -> str:
    o, m = report["options"], report["machine"]
    ref, dia, ratio = (
        report["results"]["reference"],
        report["results"]["dialogs"],
        report["dialogs_over_reference"],
    )

    def both(label: str, value: Any) -> str:
        return f"| {label} | {value(ref)} | {value(dia)} |"

    answered = dia["answered"]
    rows = [
        both(
            "pops expected / received / lost",
            lambda r: f"{r['pops_expected']} / {r['pops_received']} / {r['pops_lost']}",
        ),
        both(
            "pop p50 / p95 / p99 / max (ms)",
            lambda r: f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} / {r['max_ms']}",
        ),
        both(
            "messages per client, by type",
            lambda r: ", ".join(f"{k} {v:g}" for k, v in r["messages_per_client"].items()),
        ),
        both("SIP calls ended with 487", lambda r: f"{r['sip_calls_ok']} of {o['calls']}"),
        both("server CPU (100 % = one core)", lambda r: f"{r['server_cpu_percent']} %"),
        both("bench process CPU", lambda r: f"{r['bench_cpu_percent']} %"),
        both("whole machine CPU busy", lambda r: f"{r['machine_cpu_busy_percent']} %"),
        both("server peak RSS", lambda r: f"{r['server_peak_rss_mib']} MiB"),
    ]
    return "\n".join(
        [
            f"# Ring → pop latency with dialog events: {o['customers']:,} customers, "
            f"{o['clients']} clients, {o['rate']:g} calls/s, {o['staff']} staff phones",
            "",
            "| | reference (rings only) | dialogs (every call answered on a staff phone) |",
            "|---|---|---|",
            *rows,
            "",
            f"dialogs / reference: p50 {ratio['p50_ms']}×, p95 {ratio['p95_ms']}×, "
            f"p99 {ratio['p99_ms']}×, max {ratio['max_ms']}×, server CPU "
            f"{ratio['server_cpu_percent']}×.",
            "",
            f"Who answered (dialogs phase): confirmed NOTIFY → `call.answered` at each client: "
            f"{answered['answered_received']} of {answered['answered_expected']} received, "
            f"p50 {answered['p50_ms']} / p99 {answered['p99_ms']} / max {answered['max_ms']} ms; "
            f"{dia['notifies_sent']} NOTIFYs sent in all, {dia['notify_failures']} answered other "
            f"than 200; {dia['calls_without_a_free_phone']} calls found no free phone.",
            "",
            f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']}; "
            f"Python {m['python']}; SQLite {m['sqlite']}; database {o['db_kind']}; "
            f"load average at start {' '.join(m['loadavg_at_start'] or [])}; {m['date']}.",
            "",
            "Latency = `time.perf_counter()` at the WebSocket frame's arrival in the client − the "
            "same clock at the INVITE's (or the confirmed NOTIFY's) `sendto`; the caller, the PBX, "
            "the clients and the service share this machine (see bench/README.md).",
            "",
        ]
    )


# --- side by side with the bare stack (--reference) -----------------------------------------


@dataclass(frozen=True)
class Reference:
    """The plan of ``--reference``: for each client count, ``pairs`` × (bare stack, callpop)."""

    clients: tuple[int, ...]
    pairs: int
    first_pop: bool
    first_pop_runs: int


class MeteredService(Service):
    """A :class:`Service` whose CPU is read in nanoseconds: the sum over its threads of
    ``/proc/PID/task/TID/schedstat`` (time on a CPU), not ``stat``'s 10 ms ticks, which
    are too coarse for the bare stack's fraction of a millisecond per call. A thread that
    ends inside the window takes its time with it (the services keep theirs)."""

    readings: list[float]

    def cpu_seconds(self) -> float:
        total = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
        self.readings.append(total / 1e9)
        return total / 1e9


def _metered(service: Service) -> MeteredService:
    metered = MeteredService(
        process=service.process,
        http_port=service.http_port,
        sip_port=service.sip_port,
        log_path=service.log_path,
        ws_port=service.ws_port,
    )
    metered.readings = []
    return metered


def run_side(
    side: str,
    options: Options,
    seeded: Seeded,
    workdir: Path,
    bare_db: Path,
    callpop_db: Path | None,
) -> dict[str, Any]:
    """One run of :func:`measure` on a freshly started ``side`` ("bare" or "callpop"); for
    SQLite callpop gets a fresh copy of the run's database, so its call log starts empty."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=workdir))
    if side == "bare":
        service = start_bare(bare_db, run_dir)
    else:
        url = seeded.url
        if callpop_db is not None:
            copy_database(callpop_db, run_dir / "callpop.db")
            url = f"sqlite:///{run_dir / 'callpop.db'}"
        service = start_service(url, run_dir)
    metered = _metered(service)
    try:
        result = asyncio.run(
            asyncio.wait_for(
                measure(options, metered, seeded),
                timeout=120 + options.calls / options.rate + options.clients,
            )
        )
        # run_phase read the CPU twice, before and after the measured calls.
        cpu = metered.readings[-1] - metered.readings[-2]
        result["server_cpu_seconds"] = round(cpu, 4)
        result["server_cpu_percent"] = round(cpu / result["measured_seconds"] * 100, 1)
        return result
    except BaseException:
        print(f"--- {side} log (tail)\n{service.log_tail()}", file=sys.stderr)
        raise
    finally:
        service.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _cpu_ms_per_call(result: dict[str, Any], calls: int) -> float:
    """Server CPU seconds in the measured phase ÷ calls, in ms."""
    return round(float(result["server_cpu_seconds"]) / calls * 1000, 3)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def reference_row(
    clients: int, pair: int, bare: dict[str, Any], callpop: dict[str, Any], calls: int
) -> dict[str, Any]:
    return {
        "clients": clients,
        "pair": pair,
        "callpop": {k: callpop[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")},
        "bare": {k: bare[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")},
        "ratio_p50": _ratio(callpop["p50_ms"], bare["p50_ms"]),
        "ratio_p99": _ratio(callpop["p99_ms"], bare["p99_ms"]),
        "server_cpu_percent": {
            "callpop": callpop["server_cpu_percent"],
            "bare": bare["server_cpu_percent"],
        },
        "server_cpu_ms_per_call": {
            "callpop": _cpu_ms_per_call(callpop, calls),
            "bare": _cpu_ms_per_call(bare, calls),
        },
        "pops_lost": {"callpop": callpop["pops_lost"], "bare": bare["pops_lost"]},
        "pops_expected": callpop["pops_expected"],
        "machine_cpu_busy_percent": {
            "callpop": callpop["machine_cpu_busy_percent"],
            "bare": bare["machine_cpu_busy_percent"],
        },
    }


def main_reference(options: Options, plan: Reference) -> int:
    """--reference: bare stack and callpop, fresh each run, interleaved, one table."""
    machine = describe_machine()
    runs: list[dict[str, Any]] = []  # every run's full result, in the order they ran
    rows: list[dict[str, Any]] = []
    first_pops: dict[str, list[dict[str, Any]]] = {"bare": [], "callpop": []}
    with tempfile.TemporaryDirectory(prefix="callpop-bench-") as tmp:
        workdir = Path(tmp)
        # One database for the whole run: the same numbers, the same schedule on both sides.
        seeded = prepare_database(options.customers, options.db, workdir, clients=options.clients)
        bare_db = cached_sqlite(options.customers)  # SQLite for the bare stack, whatever --db
        callpop_db = workdir / "callpop.db" if options.db == "sqlite" else None
        if plan.first_pop:
            # A known number: the first lookup that finds a customer and builds its card.
            first = replace(options, clients=1, calls=1, warmup_calls=0, unknown_share=0.0)
            for run in range(1, plan.first_pop_runs + 1):
                for side in ("bare", "callpop"):
                    print(
                        f"first pop, fresh {side} ({run} of {plan.first_pop_runs}) ...", flush=True
                    )
                    result = run_side(side, first, seeded, workdir, bare_db, callpop_db)
                    first_pops[side].append(
                        {
                            "run": run,
                            "latency_ms": result["max_ms"],
                            "pops_lost": result["pops_lost"],
                        }
                    )
                    runs.append({"side": side, "first_pop": run, "results": result})
        for clients in plan.clients:
            sized = replace(options, clients=clients)
            for pair in range(1, plan.pairs + 1):
                pair_results: dict[str, dict[str, Any]] = {}
                for side in ("bare", "callpop"):
                    print(
                        f"{side}, {clients} clients (pair {pair} of {plan.pairs}) ...", flush=True
                    )
                    pair_results[side] = run_side(side, sized, seeded, workdir, bare_db, callpop_db)
                    runs.append(
                        {
                            "side": side,
                            "clients": clients,
                            "pair": pair,
                            "results": pair_results[side],
                        }
                    )
                rows.append(
                    reference_row(
                        clients, pair, pair_results["bare"], pair_results["callpop"], options.calls
                    )
                )
    report: dict[str, Any] = {
        "benchmark": "pop_latency_reference",
        "options": {
            **_options_report(options),
            "clients": list(plan.clients),
            "pairs": plan.pairs,
            "first_pop_runs": plan.first_pop_runs if plan.first_pop else 0,
        },
        "machine": machine,
        "bare_stack_db": "sqlite",
        "rows": rows,
        "first_pop": first_pops if plan.first_pop else None,
        "runs": runs,
    }
    text = markdown_reference(report)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    db_kind = report["options"]["db_kind"]
    stem = f"pop_latency-reference-{options.customers}-{options.rate:g}"
    stem += "" if db_kind == "sqlite" else f"-{db_kind.split('+')[0]}"
    (RESULTS_DIR / f"{stem}.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    )
    (RESULTS_DIR / f"{stem}.md").write_text(text)
    print(f"wrote {RESULTS_DIR / stem}.json and .md")
    ok = all(r["results"]["pops_lost"] == 0 and r["results"]["sip_failures"] == 0 for r in runs)
    return 0 if ok else 1


def _triple(r: dict[str, Any]) -> str:
    return f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']}"


def markdown_reference(report: dict[str, Any]) -> str:
    o, m = report["options"], report["machine"]
    lines = [
        f"# Ring → pop latency, callpop beside the bare stack: {o['customers']:,} customers, "
        f"{o['rate']:g} calls/s, {o['calls']} calls, {o['unknown_share']:.0%} unknown numbers",
        "",
        "| browsers | pair | callpop p50 / p95 / p99 (ms) | bare p50 / p95 / p99 (ms) "
        "| ratio p50 / p99 | server CPU % callpop / bare | CPU ms per call callpop / bare "
        "| pops lost callpop / bare | machine busy % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        cpu, per_call = row["server_cpu_percent"], row["server_cpu_ms_per_call"]
        lost, busy = row["pops_lost"], row["machine_cpu_busy_percent"]
        lines.append(
            f"| {row['clients']} | {row['pair']} | {_triple(row['callpop'])} | "
            f"{_triple(row['bare'])} | {row['ratio_p50']}× / {row['ratio_p99']}× | "
            f"{cpu['callpop']} / {cpu['bare']} | {per_call['callpop']} / {per_call['bare']} | "
            f"{lost['callpop']} / {lost['bare']} of {row['pops_expected']} | "
            f"{busy['callpop']} / {busy['bare']} |"
        )
    first = report["first_pop"]
    if first:
        warm = {
            side: [
                row[side]["p99_ms"] for row in report["rows"] if row["clients"] == min(o["clients"])
            ]
            for side in ("callpop", "bare")
        }
        lines += [
            "",
            f"First pop after start-up (fresh process, one client, no warm-up, one call from a "
            f"customer's number; fresh starts: {o['first_pop_runs']}) beside the warm p99 at "
            f"{min(o['clients'])} browsers above:",
            "",
            "| | first pop, each fresh start (ms) | warm p99 (ms) |",
            "|---|---|---|",
        ]
        for side in ("callpop", "bare"):
            values = ", ".join(str(f["latency_ms"]) for f in first[side])
            lines.append(f"| {side} | {values} | {', '.join(str(v) for v in warm[side])} |")
    lines += [
        "",
        "Each run starts its side fresh (callpop on a fresh copy of the database for SQLite), "
        "logs in the same clients and places the same calls on the same schedule; the bare "
        "stack runs right before callpop in each pair. Server CPU: 100 % = one core, over the "
        "measured calls (the service's threads' schedstat); CPU ms per call = server CPU "
        "seconds ÷ calls. The bare stack "
        "(bench/bare_stack.py) reads SQLite "
        + (
            "(the same seeded file)"
            if o["db_kind"] == "sqlite"
            else f"while callpop ran on {o['db_kind']} (whose server's CPU is not in callpop's)"
        )
        + "; it sends a smaller card and skips sessions, Origin, snapshot, call log and"
        " lookup deadline.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']}; "
        f"Python {m['python']}; SQLite {m['sqlite']}; database {o['db_kind']}; "
        f"load average at start {' '.join(m['loadavg_at_start'] or [])}; {m['date']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
