"""Pops under a login flood: what unauthenticated password hashing costs the screen pops.

Starts the real service (``callpop serve``) on a seeded database, opens ``--clients``
WebSocket clients and places calls at ``--rate`` per second for two phases in the same
run: a **reference** phase (calls only) and a **flood** phase (the same calls while
``--flood`` workers post logins with random names and passwords as fast as the server
answers, each worker from its own loopback source address, 127.0.0.2 …, as a botnet
would). In both phases a real user logs in every two seconds. Prints pop p50/p99, the
server's RSS, the real user's login time and the flood/reference ratios.

    python bench/login_flood.py --label after
    PYTHONPATH=/tmp/before-auth python bench/login_flood.py --label before   # older code

The service runs from the tree the ``db`` package is imported from (so ``PYTHONPATH``
picks the code under test). Writes ``bench/results/login_flood-<label>.json`` and ``.md``.
Everything it starts it stops by PID; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import string
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pop_latency
from pop_latency import (
    COOKIE_NAME,
    STAFF_LOGIN,
    STAFF_PASSWORD,
    CallOutcome,
    CallRouter,
    Pops,
    Service,
    describe_machine,
    listen,
    one_call,
    summarise,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Loopback source addresses for the flood: one per worker, never 127.0.0.1 (the real user's).
_FLOOD_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 255)]


@dataclass(frozen=True)
class Options:
    customers: int
    clients: int
    rate: float
    phase_seconds: float
    flood: int
    label: str


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    outcomes: list[CallOutcome] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    real_login_ms: list[float] = field(default_factory=list)
    real_login_statuses: Counter[int] = field(default_factory=Counter)
    flood_statuses: Counter[str] = field(default_factory=Counter)
    flood_ms: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)


def server_tree() -> Path:
    """The source tree the service runs from: where this process imports ``db`` from."""
    import db

    return Path(db.__file__).resolve().parent.parent


def rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


async def sample_rss(service: Service, phase: Phase, stop: asyncio.Event) -> None:
    while not stop.is_set():
        value = rss_mib(service.process.pid)
        if value is not None:
            phase.rss_mib.append(value)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def real_user(base_url: str, phase: Phase, stop: asyncio.Event) -> None:
    """Log in every 2 s as a person would; a 503/429 is retried after its Retry-After
    (at most 1 s), and the time counts until the login succeeds (bounded at 30 s)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30, trust_env=False) as http:
        while not stop.is_set():
            started = time.perf_counter()
            while time.perf_counter() - started < 30:
                response = await http.post(
                    "/api/session", json={"login": STAFF_LOGIN, "password": STAFF_PASSWORD}
                )
                phase.real_login_statuses[response.status_code] += 1
                if response.status_code == 200:
                    phase.real_login_ms.append((time.perf_counter() - started) * 1000)
                    break
                wait = min(1.0, float(response.headers.get("retry-after", "1") or 1))
                await asyncio.sleep(wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)


async def flood_worker(base_url: str, address: str, phase: Phase, stop: asyncio.Event) -> None:
    rng = random.Random(address)
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, trust_env=False, transport=transport
    ) as http:
        while not stop.is_set():
            login = "".join(rng.choices(string.ascii_lowercase, k=10))
            password = "".join(rng.choices(string.ascii_letters, k=16))
            started = time.perf_counter()
            try:
                response = await http.post(
                    "/api/session", json={"login": login, "password": password}
                )
                phase.flood_statuses[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                phase.flood_statuses[type(exc).__name__] += 1
            phase.flood_ms.append((time.perf_counter() - started) * 1000)


async def place_calls(
    options: Options,
    phase: Phase,
    router: CallRouter,
    numbers: list[str],
    target: tuple[str, int],
    local_port: int,
    rng: random.Random,
) -> None:
    count = max(1, int(options.phase_seconds * options.rate))
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i in range(count):
        outcome = CallOutcome(
            call_id=f"{phase.name}-{i}-{os.urandom(8).hex()}@127.0.0.1",
            number=rng.choice(numbers),
            known=True,
        )
        phase.outcomes.append(outcome)
        delay = start + i / options.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            asyncio.create_task(
                one_call(router, outcome, target=target, local_port=local_port, ring_seconds=0.5)
            )
        )
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)


async def run_phase(
    options: Options,
    name: str,
    service: Service,
    router: CallRouter,
    numbers: list[str],
    target: tuple[str, int],
    local_port: int,
) -> Phase:
    phase = Phase(name)
    stop = asyncio.Event()
    background = [
        asyncio.create_task(sample_rss(service, phase, stop)),
        asyncio.create_task(real_user(service.base_url, phase, stop)),
    ]
    if name == "flood":
        background += [
            asyncio.create_task(
                flood_worker(service.base_url, _FLOOD_ADDRESSES[i % 253], phase, stop)
            )
            for i in range(options.flood)
        ]
        await asyncio.sleep(1.0)  # let the flood reach its steady state before the calls
    print(f"{name}: {int(options.phase_seconds * options.rate)} calls ...", flush=True)
    server_before, bench_before = service.cpu_seconds(), time.process_time()
    wall_before = time.perf_counter()
    try:
        await place_calls(options, phase, router, numbers, target, local_port, random.Random(name))
        await asyncio.sleep(1.0)  # the last pops in flight
        wall = time.perf_counter() - wall_before
        phase.cpu = {
            "server": round((service.cpu_seconds() - server_before) / wall * 100, 1),
            "bench": round((time.process_time() - bench_before) / wall * 100, 1),
        }
    finally:
        stop.set()
        done, pending = await asyncio.wait(background, timeout=60)
        for task in pending:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    return phase


def phase_results(phase: Phase, pops: Pops, clients: int) -> dict[str, Any]:
    sent = {o.call_id: o.sent_at for o in phase.outcomes if o.sent_at is not None}
    latencies = [
        (arrived - sent[call_id]) * 1000
        for (_client, call_id), arrived in pops.arrivals.items()
        if call_id in sent
    ]
    expected = len(phase.outcomes) * clients
    logins = sorted(phase.real_login_ms)
    return {
        "calls": len(phase.outcomes),
        "pops_expected": expected,
        "pops_lost": expected - len(latencies),
        "pops": summarise(latencies),
        "server_rss_mib_max": max(phase.rss_mib, default=None),
        "server_rss_mib_end": phase.rss_mib[-1] if phase.rss_mib else None,
        "real_login": {**summarise(logins), "count": len(logins)},
        "real_login_statuses": {str(k): v for k, v in sorted(phase.real_login_statuses.items())},
        "flood_attempts": sum(phase.flood_statuses.values()),
        "flood_statuses": dict(sorted(phase.flood_statuses.items())),
        "flood_response": summarise(phase.flood_ms),
        "cpu_percent": phase.cpu,
    }


async def measure(options: Options, service: Service, numbers: list[str]) -> dict[str, Any]:
    pops = Pops()
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30, trust_env=False) as http:
        cookie = await pop_latency.login(http)
    sockets: list[ClientConnection] = [
        await connect(
            f"ws://127.0.0.1:{service.http_port}/ws",
            origin=Origin(service.base_url),
            additional_headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
            open_timeout=30,
            max_size=None,
        )
        for _ in range(options.clients)
    ]
    listeners = [asyncio.create_task(listen(i, ws, pops)) for i, ws in enumerate(sockets)]
    transport, router = await loop.create_datagram_endpoint(CallRouter, local_addr=("127.0.0.1", 0))
    router.transport = transport
    local_port = int(transport.get_extra_info("sockname")[1])
    target = ("127.0.0.1", service.sip_port)
    try:
        warm = [CallOutcome(call_id=f"warm-{i}-{os.urandom(6).hex()}", number=n, known=True)
                for i, n in enumerate(numbers[:5])]  # fmt: skip
        await asyncio.gather(
            *(
                one_call(router, o, target=target, local_port=local_port, ring_seconds=0.3)
                for o in warm
            )  # fmt: skip
        )
        args = (service, router, numbers, target, local_port)
        reference = await run_phase(options, "reference", *args)
        flood = await run_phase(options, "flood", *args)
    finally:
        transport.close()
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    results = {
        "reference": phase_results(reference, pops, options.clients),
        "flood": phase_results(flood, pops, options.clients),
        "clients_dropped": len(pops.closed),
        "client_errors": pops.closed[:5],
    }
    results["ratio"] = ratios(results["reference"], results["flood"])
    return results


def ratios(reference: dict[str, Any], flood: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(b / a, 2) if a and b is not None else None

    return {
        "pop_p50": ratio(reference["pops"]["p50_ms"], flood["pops"]["p50_ms"]),
        "pop_p99": ratio(reference["pops"]["p99_ms"], flood["pops"]["p99_ms"]),
        "server_rss_max": ratio(reference["server_rss_mib_max"], flood["server_rss_mib_max"]),
        "real_login_p50": ratio(reference["real_login"]["p50_ms"], flood["real_login"]["p50_ms"]),
    }


ROWS = [
    ("pop p50 (ms)", lambda p: p["pops"]["p50_ms"], "pop_p50"),
    ("pop p99 (ms)", lambda p: p["pops"]["p99_ms"], "pop_p99"),
    ("pops lost", lambda p: f"{p['pops_lost']} of {p['pops_expected']}", None),
    ("server RSS max (MiB)", lambda p: p["server_rss_mib_max"], "server_rss_max"),
    ("real login p50 (ms)", lambda p: p["real_login"]["p50_ms"], "real_login_p50"),
    ("real login max (ms)", lambda p: p["real_login"]["max_ms"], None),
    (
        "real login answers",
        lambda p: " ".join(f"{k}×{v}" for k, v in p["real_login_statuses"].items()),
        None,
    ),
    ("flood attempts", lambda p: p["flood_attempts"], None),
    (
        "flood answers",
        lambda p: " ".join(f"{k}×{v}" for k, v in p["flood_statuses"].items()) or "-",
        None,
    ),
    ("flood answer p50 (ms)", lambda p: p["flood_response"]["p50_ms"], None),
    ("server CPU (100 % = one core)", lambda p: p["cpu_percent"].get("server"), None),
    ("bench CPU (clients, caller, flood)", lambda p: p["cpu_percent"].get("bench"), None),
]


def table(results: dict[str, Any]) -> list[str]:
    lines = ["| | reference | flood | flood / reference |", "|---|---|---|---|"]
    for label, get, ratio_key in ROWS:
        ratio = results["ratio"].get(ratio_key) if ratio_key else None
        shown = f"{ratio}×" if ratio is not None else ""
        reference, flood = get(results["reference"]), get(results["flood"])
        lines.append(f"| {label} | {reference} | {flood} | {shown} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    o, m = report["options"], report["machine"]
    return "\n".join(
        [
            f"# Pops under a login flood ({o['label']}): {o['flood']} concurrent random logins, "
            f"{o['clients']} clients, {o['rate']:g} calls/s",
            "",
            *table(report["results"]),
            "",
            f"Each phase {o['phase_seconds']:g} s; {o['customers']:,} customers; the flood from "
            f"{min(o['flood'], 253)} loopback source addresses; the real user logs in every 2 s "
            "from 127.0.0.1 and retries a 429/503 after its Retry-After (≤ 1 s).",
            "",
            f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']}; "
            f"Python {m['python']}; SQLite {m['sqlite']}; "
            f"load average at start {' '.join(m['loadavg_at_start'] or [])}; {m['date']}.",
            "",
        ]
    )


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20, help="WebSocket clients")
    parser.add_argument("--rate", type=float, default=10.0, help="calls per second")
    parser.add_argument("--phase-seconds", type=float, default=20.0)
    parser.add_argument("--flood", type=int, default=40, help="concurrent flood workers")
    parser.add_argument("--label", default="run", help="names the results file")
    args = parser.parse_args(argv)
    if not (
        0 < args.clients <= 500
        and 0 < args.rate <= 200
        and 0 < args.phase_seconds <= 300
        and 0 < args.flood <= 1000
        and 0 < args.customers <= 1_000_000
    ):
        parser.error("--clients, --rate, --phase-seconds, --flood, --customers out of bounds")
    if not args.label.replace("-", "").isalnum():
        parser.error("--label: letters, digits and dashes")
    return Options(
        customers=args.customers,
        clients=args.clients,
        rate=args.rate,
        phase_seconds=args.phase_seconds,
        flood=args.flood,
        label=args.label,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    machine = describe_machine()
    tree = server_tree()
    with tempfile.TemporaryDirectory(prefix="callpop-flood-") as tmp:
        workdir = Path(tmp)
        # Seeded afresh each run (no cache): the before and after trees may differ in schema.
        url = f"sqlite:///{workdir / 'callpop.db'}"
        print(f"seeding {options.customers:,} customers with {tree} ...", flush=True)
        pop_latency._seed_into(url, options.customers)
        numbers = pop_latency._sample_numbers(url, 500)
        # pop_latency.start_service runs the service from pop_latency.REPO: the tree under test.
        pop_latency.REPO = tree
        service = pop_latency.start_service(url, workdir)
        try:
            results = asyncio.run(
                asyncio.wait_for(
                    measure(options, service, numbers), timeout=180 + 4 * options.phase_seconds
                )
            )
        except BaseException:
            print(f"--- server log (tail)\n{service.log_tail()}", file=sys.stderr)
            raise
        finally:
            service.stop()
    report = {
        "benchmark": "login_flood",
        "options": asdict(options),
        "server_tree": "before" if tree != Path(__file__).resolve().parents[1] else "this tree",
        "machine": machine,
        "results": results,
    }
    print("\n".join(table(results)))
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / f"login_flood-{options.label}"
    stem.with_suffix(".json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
