"""A burst of INVITEs from the PBX: do the browsers stay connected and get the real call?

Starts the real service (``callpop serve --config FILE``, trunk mode, only 127.0.0.1
allowed, ``ring_timeout`` short so the burst's rings all time out together) on the
seeded database of ``bench/pop_latency.py``, connects ``--clients`` WebSocket clients
that read every frame, spending ``--client-ms`` on each (as a browser draws it: they
keep reading, only not as fast as a burst is written), and runs two phases in one
command:

1. **reference** — ``--real-calls`` real calls (ring ~1 s, CANCEL), one at a time: the
   pop latency of a real call on a quiet service.
2. **burst** — ``--invites`` INVITEs in ``--seconds`` seconds from one UDP socket, each
   ringing until the service ends it with 480 at ``ring_timeout`` (or refuses it); then,
   while those ring timeouts are being published, the same real calls again.

For every phase: browsers dropped (a client whose WebSocket was closed), pops received /
expected (a ``call.ringing`` for every call the service rang, at every client still
expected to be connected), the real calls' pop latency, INVITEs refused busy (486), and
the burst / reference latency ratio.

    python bench/invite_burst.py                           # 1000 INVITEs in 0.5 s, 10 clients
    python bench/invite_burst.py --invites 300 --clients 3
    python bench/invite_burst.py --code /tmp/before-burst --label before   # another checkout

``--code DIR`` runs the service from another checkout (``git worktree add``), so a change
is measured before and after with the same bench. Writes
``bench/results/invite_burst-<invites>-<seconds>-<clients>[-<label>].json`` and ``.md``.
Everything it starts it stops by PID; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pop_latency import (
    COOKIE_NAME,
    RESULTS_DIR,
    CallRouter,
    Seeded,
    Service,
    describe_machine,
    login,
    percentile,
    prepare_database,
    start_service,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from telephony.dialer import DialError, UacCall
from telephony.transport import drive

REPO = Path(__file__).resolve().parent.parent
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


# --- the service ----------------------------------------------------------------------------


# --- clients and calls ----------------------------------------------------------------------


@dataclass
class Clients:
    """What the clients saw: (client, sip_call_id) → arrival of its call.ringing."""

    arrivals: dict[tuple[int, str], float] = field(default_factory=dict)
    closed_at: dict[int, float] = field(default_factory=dict)  # client → when it was closed
    close_codes: dict[int, str] = field(default_factory=dict)
    frames: dict[int, int] = field(default_factory=dict)


async def listen(index: int, ws: ClientConnection, clients: Clients, work: float) -> None:
    clients.frames[index] = 0
    try:
        async for frame in ws:
            arrived = time.perf_counter()
            clients.frames[index] += 1
            message = json.loads(frame)
            if message.get("type") == "call.ringing":
                clients.arrivals.setdefault((index, message["call"]["sip_call_id"]), arrived)
            if work:
                # A browser draws what it got before it reads the next frame: a reader
                # that keeps reading, only not as fast as a burst is written.
                await asyncio.sleep(work)
    except Exception as exc:  # a dropped client is a result, not a crash of the bench
        clients.close_codes[index] = repr(exc)[:120]
    clients.closed_at[index] = time.perf_counter()


class StatusRouter(CallRouter):
    """The latency bench's router, remembering which calls heard 180 and which 486."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[str, set[int]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        status = _STATUS.match(data)
        call_id = _call_id(data)
        if status and call_id:
            self.statuses.setdefault(call_id, set()).add(int(status.group(1)))
        super().datagram_received(data, addr)


def _call_id(data: bytes) -> str | None:
    match = re.search(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", data, re.I | re.M)
    return match.group(1).strip().decode("ascii", "replace") if match else None


@dataclass
class Placed:
    call_id: str
    sent_at: float | None = None
    error: str | None = None


async def place(
    router: StatusRouter,
    placed: Placed,
    number: str,
    *,
    target: tuple[str, int],
    local_port: int,
    ring_seconds: float,
) -> None:
    assert router.transport is not None
    transport = router.transport
    inbox: asyncio.Queue[bytes] = asyncio.Queue()
    router.inboxes[placed.call_id] = inbox

    def send(data: bytes) -> None:
        if placed.sent_at is None and data.startswith(b"INVITE "):
            placed.sent_at = time.perf_counter()
        transport.sendto(data, target)

    call = UacCall(
        number,
        target=target,
        local=("127.0.0.1", local_port),
        ring_seconds=ring_seconds,
        timeout=20.0,
        call_id=placed.call_id,
    )
    try:
        await drive(call, send, inbox, time.perf_counter)
    except DialError as exc:  # 480 (ring timeout) and 486 (busy) end a burst call so
        placed.error = str(exc)
    finally:
        router.inboxes.pop(placed.call_id, None)


async def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return bool(condition())


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    invites: int
    seconds: float
    clients: int
    real_calls: int
    customers: int
    ring_timeout: float
    client_ms: float
    code: str
    label: str


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


async def measure(options: Options, service: Service, seeded: Seeded) -> dict[str, Any]:
    rng = random.Random(1)
    loop = asyncio.get_running_loop()
    clients = Clients()
    origin = Origin(service.base_url)
    sockets: list[ClientConnection] = []
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as http:
        cookies = [await login(http) for _ in range(options.clients)]
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
    work = options.client_ms / 1000
    listeners = [asyncio.create_task(listen(i, ws, clients, work)) for i, ws in enumerate(sockets)]
    transport, router = await loop.create_datagram_endpoint(
        StatusRouter, local_addr=("127.0.0.1", 0)
    )
    router.transport = transport
    local_port = int(transport.get_extra_info("sockname")[1])
    target = ("127.0.0.1", service.sip_port)

    async def real_calls(phase: str) -> list[Placed]:
        """One real call at a time, each ringing 1 s then cancelled."""
        done = []
        for i in range(options.real_calls):
            placed = Placed(call_id=f"{phase}-real-{i}-{os.urandom(6).hex()}@127.0.0.1")
            await place(
                router,
                placed,
                rng.choice(seeded.known_numbers),
                target=target,
                local_port=local_port,
                ring_seconds=1.0,
            )
            done.append(placed)
        return done

    def latencies(calls: list[Placed], connected: set[int]) -> list[float]:
        out = []
        for placed in calls:
            for client in connected:
                arrived = clients.arrivals.get((client, placed.call_id))
                if arrived is not None and placed.sent_at is not None:
                    out.append(arrived - placed.sent_at)
        return sorted(out)

    def received(call_ids: list[str], wanted: set[int]) -> int:
        return sum(1 for c in wanted for cid in call_ids if (c, cid) in clients.arrivals)

    everyone = set(range(options.clients))
    try:
        # Warm-up, not measured: the first lookups, the first frames.
        await real_calls("warmup")

        # 1. Reference: real calls on a quiet service.
        print(f"reference: {options.real_calls} real calls, {options.clients} clients", flush=True)
        reference = await real_calls("reference")
        ref_ids = [p.call_id for p in reference]
        await wait_until(lambda: received(ref_ids, everyone) == len(ref_ids) * len(everyone), 10)
        ref_lat = latencies(reference, everyone)
        ref_result = {
            "browsers_dropped": len(clients.closed_at),
            "pops_expected": len(ref_ids) * options.clients,
            "pops_received": received(ref_ids, everyone),
            "real_call_pops_received": received(ref_ids, everyone),
            "real_call_pops_expected": len(ref_ids) * options.clients,
            "real_p50_ms": _ms(percentile(ref_lat, 50)),
            "real_max_ms": _ms(ref_lat[-1] if ref_lat else None),
            "refused_busy": 0,
        }

        # 2. The burst: INVITEs that ring until the service's ring timeout ends them.
        print(
            f"burst: {options.invites} INVITEs in {options.seconds:g} s, "
            f"ring_timeout {options.ring_timeout:g} s",
            flush=True,
        )
        dropped_before = set(clients.closed_at)
        burst = [
            Placed(call_id=f"burst-{i}-{os.urandom(6).hex()}@127.0.0.1")
            for i in range(options.invites)
        ]
        start = time.perf_counter() + 0.05
        tasks = []
        for i, placed in enumerate(burst):
            delay = start + i * options.seconds / options.invites - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(
                    place(
                        router,
                        placed,
                        rng.choice(seeded.known_numbers),
                        target=target,
                        local_port=local_port,
                        # Longer than ring_timeout: the service ends every ring (480).
                        ring_seconds=options.ring_timeout + 30,
                    )
                )
            )
        send_span = time.perf_counter() - start
        # The real calls go in as the burst's rings time out together (every end
        # published at once), which is when browsers were dropped before.
        await asyncio.sleep(max(0.0, start + options.ring_timeout + 0.2 - time.perf_counter()))
        after = await real_calls("burst")
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=options.ring_timeout + 120)
        rang = [p.call_id for p in burst if 180 in router.statuses.get(p.call_id, set())]
        busy = [p.call_id for p in burst if 486 in router.statuses.get(p.call_id, set())]
        other = sum(1 for p in burst if p.call_id not in rang and p.call_id not in busy)
        after_ids = [p.call_id for p in after]
        expected_ids = rang + [p.call_id for p in after]
        await wait_until(
            lambda: (
                received(expected_ids, everyone - set(clients.closed_at))
                == len(expected_ids) * len(everyone - set(clients.closed_at))
            ),
            15,
        )
        still = everyone - set(clients.closed_at)
        burst_lat = latencies(after, still)
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
            health = (await http.get("/healthz")).json()
        burst_result = {
            "browsers_dropped": len(set(clients.closed_at) - dropped_before),
            "close_reasons": sorted(set(clients.close_codes.values()))[:3],
            "invites_sent": options.invites,
            "achieved_seconds": round(send_span, 3),
            "invites_rang": len(rang),
            "invites_refused_busy": len(busy),
            "invites_other_outcome": other,
            # Every ring (burst and real) at every client: a dropped client misses its rest.
            "pops_expected": len(expected_ids) * options.clients,
            "pops_received": received(expected_ids, everyone),
            "real_call_pops_expected": len(after_ids) * options.clients,
            "real_call_pops_received": received(after_ids, everyone),
            "real_p50_ms": _ms(percentile(burst_lat, 50)),
            "real_max_ms": _ms(burst_lat[-1] if burst_lat else None),
            "refused_busy": len(busy),
            "healthz_refused_busy": health.get("sip", {}).get("stats", {}).get("refused_busy"),
            "healthz_dropped_subscribers": health.get("hub", {}).get("dropped_subscribers"),
            "server_peak_rss_mib": service.peak_rss_mib(),
        }
    finally:
        transport.close()
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)

    ratio = None
    if burst_result["real_p50_ms"] and ref_result["real_p50_ms"]:
        ratio = round(burst_result["real_p50_ms"] / ref_result["real_p50_ms"], 2)
    return {"reference": ref_result, "burst": burst_result, "real_p50_ratio": ratio}


# --- report -----------------------------------------------------------------------------------

ROWS = [
    ("browsers dropped", "browsers_dropped"),
    ("pops received / expected", None),
    ("real calls' pops received / expected", None),
    ("real call pop p50 (ms)", "real_p50_ms"),
    ("real call pop max (ms)", "real_max_ms"),
    ("INVITEs refused busy (486)", "refused_busy"),
]


def table(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    ref, burst = results["reference"], results["burst"]
    rows = []
    for title, key in ROWS:
        if title.startswith("pops"):
            cells = [f"{r['pops_received']} / {r['pops_expected']}" for r in (ref, burst)]
        elif title.startswith("real calls'"):
            cells = [
                f"{r['real_call_pops_received']} / {r['real_call_pops_expected']}"
                for r in (ref, burst)
            ]
        else:
            assert key is not None
            cells = [str(ref[key]), str(burst[key])]
        rows.append((title, cells[0], cells[1]))
    rows.append(("burst / reference, real call p50", "", str(results["real_p50_ratio"])))
    return rows


def print_table(report: dict[str, Any]) -> None:
    rows = table(report["results"])
    print(f"{'':40} {'reference':>12} {'burst':>12}")
    for title, ref, burst in rows:
        print(f"{title:40} {ref:>12} {burst:>12}")
    b = report["results"]["burst"]
    print(
        f"(burst: {b['invites_sent']} INVITEs sent in {b['achieved_seconds']} s; "
        f"{b['invites_rang']} rang, {b['invites_refused_busy']} refused busy, "
        f"{b['invites_other_outcome']} other)"
    )


def markdown(report: dict[str, Any]) -> str:
    o, m, b = report["options"], report["machine"], report["results"]["burst"]
    lines = [
        f"# INVITE burst: {o['invites']} INVITEs in {o['seconds']:g} s, {o['clients']} clients"
        + (f" ({o['label']})" if o["label"] else ""),
        "",
        "| | reference | burst |",
        "|---|---|---|",
        *(f"| {t} | {r} | {x} |" for t, r, x in table(report["results"])),
        "",
        f"Burst: {b['invites_sent']} INVITEs sent in {b['achieved_seconds']} s; "
        f"{b['invites_rang']} rang, {b['invites_refused_busy']} refused busy (486), "
        f"{b['invites_other_outcome']} other. /healthz after: refused_busy "
        f"{b['healthz_refused_busy']}, dropped_subscribers {b['healthz_dropped_subscribers']}. "
        f"Close reasons: {', '.join(b['close_reasons']) or 'none'}. "
        f"Server peak RSS {b['server_peak_rss_mib']} MiB.",
        "",
        f"{o['real_calls']} real calls per phase, one at a time (ring 1 s, CANCEL); "
        f"ring_timeout {o['ring_timeout']:g} s; each client spends {o['client_ms']:g} ms on "
        f"every frame; {o['customers']:,} customers; "
        f"service code: {o['code']}.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']}; "
        f"Python {m['python']}; SQLite {m['sqlite']}; "
        f"load average at start {' '.join(m['loadavg_at_start'] or [])}; {m['date']}.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--invites", type=int, default=1000, help="INVITEs in the burst")
    parser.add_argument("--seconds", type=float, default=0.5, help="the burst's duration")
    parser.add_argument("--clients", type=int, default=10, help="WebSocket clients reading")
    parser.add_argument("--real-calls", type=int, default=5, help="real calls per phase")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--ring-timeout", type=float, default=8.0, help="the service's")
    parser.add_argument(
        "--client-ms", type=float, default=2.0, help="each client's work per frame (ms)"
    )
    parser.add_argument("--code", default=str(REPO), help="checkout the service runs from")
    parser.add_argument("--label", default="", help="suffix of the result files")
    args = parser.parse_args(argv)
    if not (0 < args.invites <= 20_000 and 0 < args.clients <= 500 and 0 < args.seconds <= 60):
        parser.error("--invites, --clients and --seconds must be positive and bounded")
    if not (0 < args.real_calls <= 50 and 1 <= args.ring_timeout <= 120):
        parser.error("--real-calls and --ring-timeout out of range")
    if not 0 <= args.client_ms <= 1000:
        parser.error("--client-ms out of range")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{0,40}", args.label):
        parser.error("--label: letters, digits, _ . - only")
    return Options(
        invites=args.invites,
        seconds=args.seconds,
        clients=args.clients,
        real_calls=args.real_calls,
        customers=args.customers,
        ring_timeout=args.ring_timeout,
        client_ms=args.client_ms,
        code=str(Path(args.code).resolve()),
        label=args.label,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="callpop-burst-") as tmp:
        workdir = Path(tmp)
        seeded = prepare_database(options.customers, "sqlite", workdir)
        service = start_service(
            seeded.url, workdir, code=Path(options.code), ring_timeout=options.ring_timeout
        )
        try:
            results = asyncio.run(
                asyncio.wait_for(
                    measure(options, service, seeded),
                    timeout=300 + options.ring_timeout + options.invites / 10,
                )
            )
        except BaseException:
            print(f"--- server log (tail)\n{service.log_tail()}", file=sys.stderr)
            raise
        finally:
            service.stop()
    report = {
        "benchmark": "invite_burst",
        "options": asdict(options),
        "machine": machine,
        "results": results,
    }
    print_table(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = f"invite_burst-{options.invites}-{options.seconds:g}-{options.clients}"
    if options.label:
        stem += f"-{options.label}"
    (RESULTS_DIR / f"{stem}.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    )
    (RESULTS_DIR / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {RESULTS_DIR / stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
