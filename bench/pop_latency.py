"""Ring → pop latency: from the INVITE leaving the caller to the WebSocket frame at each browser.

Starts the real service (``callpop serve --config FILE``) on a seeded database, logs in
``--clients`` WebSocket clients, places ``--calls`` real SIP calls at ``--rate`` per second
(INVITE, ring ~1 s, CANCEL, ACK the 487) and, for every client, times the arrival of the
``call.ringing`` message for each call. Sender and clients share one process and one clock
(``time.perf_counter``), so a latency is one subtraction.

    python bench/pop_latency.py --customers 100000 --clients 100 --rate 20 --calls 200

Writes ``bench/results/pop_latency-<customers>-<clients>-<rate>.json`` and ``.md``.
Everything it starts it stops by PID; every wait has a deadline.
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
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from telephony.dialer import DialError, UacCall
from telephony.transport import drive

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"

STAFF_LOGIN = "bench"
STAFF_PASSWORD = "bench-password-1"
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


def prepare_database(customers: int, db: str, workdir: Path) -> Seeded:
    """A database with ``customers`` customers and the bench staff login.

    SQLite: seeded once per size into ``bench/.cache/`` and copied for each run, so a run
    starts from the same rows and 1M customers are generated once. A URL: used as is,
    seeded only if it has no bench staff yet.
    """
    if db == "sqlite":
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
        target = workdir / "callpop.db"
        shutil.copyfile(cached, target)
        # Flush the copy now: otherwise the kernel writes hundreds of MB back while the
        # service runs, and every fsync of the call log waits behind it.
        with target.open("rb+") as copied:
            os.fsync(copied.fileno())
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
    return Seeded(url=url, known_numbers=numbers, customers=customers)


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

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

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
    url: str, workdir: Path, *, code: Path = REPO, ring_timeout: float = 60.0
) -> Service:
    """``callpop serve`` from the checkout ``code`` (PYTHONPATH), trunk mode on loopback."""
    http_port = free_port(socket.SOCK_STREAM)
    sip_port = free_port(socket.SOCK_DGRAM)
    config = workdir / "callpop.toml"
    config.write_text(
        "\n".join(
            [
                "[sip]",
                'mode = "trunk"',
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
        process = subprocess.Popen(
            [sys.executable, "-m", "callpop.cli", "serve", "--config", str(config)],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(code)},
        )
    service = Service(process=process, http_port=http_port, sip_port=sip_port, log_path=log_path)
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


# --- clients and calls -----------------------------------------------------------------------


@dataclass
class Pops:
    """What the clients saw: (client, sip_call_id) → arrival time, and card statuses."""

    arrivals: dict[tuple[int, str], float] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    closed: list[str] = field(default_factory=list)


async def login(client: httpx.AsyncClient) -> str:
    response = await client.post(
        "/api/session", json={"login": STAFF_LOGIN, "password": STAFF_PASSWORD}
    )
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
            if message.get("type") != "call.ringing":
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
    )
    try:
        result = await drive(call, send, inbox, time.perf_counter)
        outcome.responses = result.responses
    except DialError as exc:
        outcome.error = str(exc)
    finally:
        router.inboxes.pop(outcome.call_id, None)


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


async def measure(options: Options, service: Service, seeded: Seeded) -> dict[str, Any]:
    rng = random.Random(1)
    pops = Pops()
    loop = asyncio.get_running_loop()

    # 1. Log the clients in and open their WebSockets.
    print(f"logging in {options.clients} clients ...", flush=True)
    origin = Origin(service.base_url)
    sockets: list[ClientConnection] = []
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        limit = asyncio.Semaphore(4)

        async def login_one() -> str:
            async with limit:
                return await login(http)

        cookies = await asyncio.gather(*(login_one() for _ in range(options.clients)))
    for cookie in cookies:
        sockets.append(
            await connect(
                f"ws://127.0.0.1:{service.http_port}/ws",
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

        # 3. The measured calls, paced at an absolute schedule so the rate does not drift.
        outcomes: list[CallOutcome] = []
        for i in range(options.calls):
            known = rng.random() >= options.unknown_share
            number = rng.choice(seeded.known_numbers) if known else unknown_number(rng)
            call_id = f"bench-{i}-{os.urandom(8).hex()}@127.0.0.1"
            outcomes.append(CallOutcome(call_id=call_id, number=number, known=known))
        print(
            f"placing {options.calls} calls at {options.rate:g}/s to {options.clients} clients ...",
            flush=True,
        )
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
    finally:
        transport.close()
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)

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
    statuses = Counter(pops.statuses.get(o.call_id, "none") for o in outcomes)
    sip_failures = [o.error for o in outcomes if o.error]
    return {
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
    }


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


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=100, help="WebSocket clients")
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--db", default="sqlite", help='"sqlite" (cached, copied) or a URL')
    parser.add_argument("--unknown-share", type=float, default=0.2, help="share of unknown numbers")
    parser.add_argument("--ring-seconds", type=float, default=1.0, help="ring before CANCEL")
    parser.add_argument("--warmup-calls", type=int, default=5)
    args = parser.parse_args(argv)
    if not (0 < args.calls <= 100_000 and 0 < args.clients <= 2000 and 0 < args.rate <= 1000):
        parser.error("--calls, --clients and --rate must be positive and bounded")
    return Options(
        customers=args.customers,
        clients=args.clients,
        rate=args.rate,
        calls=args.calls,
        db=args.db,
        unknown_share=args.unknown_share,
        ring_seconds=args.ring_seconds,
        warmup_calls=args.warmup_calls,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="callpop-bench-") as tmp:
        workdir = Path(tmp)
        seeded = prepare_database(options.customers, options.db, workdir)
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
        "options": {
            **asdict(options),
            "db_kind": "sqlite" if options.db == "sqlite" else options.db.split(":", 1)[0],
            "db": None,
        },
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


if __name__ == "__main__":
    raise SystemExit(main())
