"""A small office on loopback for the browser tier: a PBX, callpop, desk phones, callers.

* Kamailio with ``tests/peers/kamailio/office.cfg``: registrar, proxy, RFC 4235 dialog
  presence, and the ring group ``100`` (the office number) that rings callpop and
  佐藤's desk phone (203) at once.
* ``callpop serve`` as a subprocess in register mode on a seeded SQLite file (the demo
  data: 佐藤 健 ext 203, 鈴木 美咲 ext 204, 高橋 誠 ext 201, their customers), watching
  every staff extension. It can be stopped and started again on the same ports and file.
* Desk phones 203 and 204: SIPp registers each from a port of its own; for each call a
  SIPp UAS on that port rings and answers (``uas_ring_answer.xml``) or rings until the
  call is cancelled (``uas_ring_cancelled.xml``).
* Outside callers: SIPp UACs with a chosen number that talk, or ring, until the test tells
  them to hang up (an INFO on their call, see ``uac_call_until_told.xml``).

Every process is started here and ended by its PID; SIPp's and Kamailio's logs are kept
in the work directory and printed when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Service
from tests.peers.conftest import (
    KAMAILIO_PASSWORD,
    KAMAILIO_USER,
    PEERS_DIR,
    SIPP_DIR,
    Kamailio,
    require,
    sipp_report,
    start_presence_kamailio,
)
from tests.processes import (
    callpop_command,
    free_tcp_port,
    free_udp_port,
    stop_process,
    wait_until_serving,
)

OFFICE_CFG = PEERS_DIR / "kamailio" / "office.cfg"
RING_GROUP = "100"  # office.cfg: rings callpop and 203 at once
START_DEADLINE = 45.0  # seconds for callpop to answer /healthz on a busy 2-core box
SIPP_DEADLINE = 120.0  # seconds any one SIPp may run (its own -timeout ends it first)


@dataclass(slots=True)
class Sipp:
    """One SIPp running in the background, with its logs in ``workdir``."""

    name: str
    workdir: Path
    process: subprocess.Popen[bytes]

    def finish(self, timeout: float = 60.0) -> None:
        """Wait for SIPp to end by itself; fail with its logs unless every call passed."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.process)
            pytest.fail(f"SIPp {self.name} did not finish within {timeout} s\n{self.report()}")
        if self.process.returncode != 0:
            pytest.fail(f"SIPp {self.name} exited {self.process.returncode}\n{self.report()}")

    def stop(self) -> None:
        stop_process(self.process)

    def report(self) -> str:
        return sipp_report(self.workdir)


@dataclass(slots=True)
class Caller(Sipp):
    """An outside caller whose SIP Call-ID and port the test knows, to tell it things."""

    call_id: str = ""
    port: int = 0
    told: int = 0

    def tell(self) -> None:
        """Say "hang up now" (or "give up now"): an INFO on its call, from loopback.

        The scenario waits for it after the answer (or while ringing); one that comes
        too early is ignored there, so ``Office`` repeats it until the effect shows.
        """
        self.told += 1
        branch = secrets.token_hex(8)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            local = sock.getsockname()[1]
            request = (
                f"INFO sip:caller@127.0.0.1:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{branch}\r\n"
                f"From: <sip:test@127.0.0.1>;tag={branch}\r\n"
                "To: <sip:caller@127.0.0.1>\r\n"
                f"Call-ID: {self.call_id}\r\n"
                f"CSeq: {self.told} INFO\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            sock.sendto(request.encode(), ("127.0.0.1", self.port))


@dataclass(slots=True)
class Office:
    """Kamailio, callpop and the phones of one office; see the module docstring."""

    workdir: Path
    kamailio: Kamailio
    login: str
    password: str
    db_path: Path
    http_port: int = field(default_factory=free_tcp_port)
    sip_port: int = field(default_factory=free_udp_port)
    phones: dict[str, int] = field(default_factory=dict)  # extension -> its SIPp port
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    sipps: list[Sipp] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def log_path(self) -> Path:
        return self.workdir / "callpop.log"

    @property
    def service(self) -> Service:
        """The running callpop as the browser tier's helpers (``log_in``) know a service."""
        return Service(
            url=self.url,
            http_port=self.http_port,
            sip_port=self.sip_port,
            login=self.login,
            password=self.password,
            log_path=self.log_path,
            data_dir=self.workdir,
        )

    # --- callpop --------------------------------------------------------------------------

    def start(self) -> None:
        """``callpop serve`` in register mode (again, on the same ports and file)."""
        config = self.workdir / "callpop.toml"
        config.write_text(
            f"""
[sip]
mode = "register"
bind_host = "127.0.0.1"
bind_port = {self.sip_port}
registrar_host = "{self.kamailio.host}"
registrar_port = {self.kamailio.port}
user = "{KAMAILIO_USER}"
password = "{KAMAILIO_PASSWORD}"
expires = 60
ring_timeout = 60.0
subscription_expires = 120

[database]
url = "sqlite:///{self.db_path}"
lookup_timeout_ms = 2000

[http]
host = "127.0.0.1"
port = {self.http_port}
""",
            encoding="utf-8",
        )
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== start {self.starts} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*callpop_command(), "serve", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        problem = wait_until_serving(self.process, self.url, START_DEADLINE)
        if problem is not None:
            pytest.fail(f"{problem}\n--- callpop log ---\n{self.log()}")

    def stop(self) -> None:
        """End callpop by its PID (SIGINT, as Ctrl+C would)."""
        if self.process is not None:
            stop_process(self.process)

    def log(self, chars: int = 8000) -> str:
        if not self.log_path.exists():
            return "(no callpop log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows from the database file, opened read-only."""
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    # --- phones and callers -----------------------------------------------------------------

    def _sipp(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        workdir = self.workdir / "sipp" / name
        workdir.mkdir(parents=True, exist_ok=True)
        command = [
            require("sipp", "sip-tester"),
            *args,
            "-i",
            "127.0.0.1",
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            f"{SIPP_DEADLINE - 20:.0f}s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
            str(workdir / "sipp_errors.log"),
            "-trace_msg",
            "-message_file",
            str(workdir / "sipp_messages.log"),
            "-trace_screen",
            "-screen_file",
            str(workdir / "sipp_screen.log"),
        ]
        with (workdir / "sipp_output.log").open("wb") as output:
            return subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT)

    def _name(self, what: str) -> str:
        return f"{len(self.sipps):02d}-{what}"

    def register_phone(self, extension: str) -> None:
        """The desk phone ``extension`` registers from a port of its own (no auth)."""
        port = free_udp_port()
        name = self._name(f"register-{extension}")
        process = self._sipp(
            name,
            [
                f"{self.kamailio.host}:{self.kamailio.port}",
                "-sf",
                str(SIPP_DIR / "register_phone.xml"),
                "-s",
                extension,
                "-p",
                str(port),
            ],
        )
        sipp = Sipp(name, self.workdir / "sipp" / name, process)
        self.sipps.append(sipp)
        sipp.finish(timeout=SIPP_DEADLINE)
        self.phones[extension] = port

    def phone(self, extension: str, *, answer_after_ms: int | None) -> Sipp:
        """The desk phone ``extension`` takes one call: rings ``answer_after_ms`` and
        answers (staying on until the caller hangs up), or, with None, rings until the
        call is cancelled."""
        scenario = "uas_ring_cancelled.xml" if answer_after_ms is None else "uas_ring_answer.xml"
        name = self._name(f"phone-{extension}")
        args = ["-sf", str(SIPP_DIR / scenario), "-s", extension]
        args += ["-p", str(self.phones[extension])]
        if answer_after_ms is not None:
            args += ["-d", str(answer_after_ms)]
        sipp = Sipp(name, self.workdir / "sipp" / name, self._sipp(name, args))
        self.sipps.append(sipp)
        # Listening before any call comes: the phone's port is taken once SIPp bound it.
        deadline = time.monotonic() + 20
        while not _udp_port_taken(self.phones[extension]):
            if sipp.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"SIPp {name} is not listening\n{sipp.report()}")
            time.sleep(0.02)
        return sipp

    def call(self, number: str, to: str = RING_GROUP, *, answered: bool) -> Caller:
        """An outside caller rings ``to`` from ``number`` (digits only, as the
        carrier sends them) and talks (``answered``) or rings until told."""
        scenario = "uac_call_until_told.xml" if answered else "uac_ring_until_told.xml"
        name = self._name(f"caller-{to}")
        port = free_udp_port()
        token = secrets.token_hex(6)
        args = [
            f"{self.kamailio.host}:{self.kamailio.port}",
            "-sf",
            str(SIPP_DIR / scenario),
            "-s",
            to,
            "-key",
            "caller",
            number,
            "-p",
            str(port),
            "-cid_str",
            f"office-{token}-%u@%s",
            # Forked 180s and an early "hang up now" are not errors (see the scenarios).
            "-default_behaviors",
            "all,-abortunexp",
        ]
        caller = Caller(
            name,
            self.workdir / "sipp" / name,
            self._sipp(name, args),
            call_id=f"office-{token}-1@127.0.0.1",
            port=port,
        )
        self.sipps.append(caller)
        return caller

    def stop_sipps(self) -> None:
        """End every SIPp still running (a failed test's phones and callers)."""
        for sipp in self.sipps:
            sipp.stop()

    def close(self) -> None:
        self.stop_sipps()
        self.stop()

    def report(self) -> str:
        parts = [f"--- callpop log ---\n{self.log()}", self.kamailio.logs()]
        for sipp in self.sipps[-6:]:
            parts.append(f"=== SIPp {sipp.name}\n{sipp.report()}")
        return "\n".join(parts)


def _udp_port_taken(port: int) -> bool:
    """Some socket is bound to UDP ``port`` (read from /proc: binding to probe would race)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as rows:
            for row in rows:
                fields = row.split()
                if len(fields) > 1 and fields[1].endswith(wanted):
                    return True
    return False


def start_office_kamailio(
    workdir: Path, host: str = "127.0.0.1", config: Path = OFFICE_CFG
) -> Kamailio:
    """Kamailio with office.cfg (or ``config`` derived from it): its own port in
    SELF_URI, pua's dbtext copy in workdir."""
    return start_presence_kamailio(workdir, host, config)


@contextlib.contextmanager
def running_office(workdir: Path, config: Path = OFFICE_CFG) -> Iterator[Office]:
    """The whole office, up: Kamailio (office.cfg, or ``config``), callpop registered and
    watching, 203 and 204 registered. Everything is ended by its PID on the way out."""
    from tests.web.conftest import seed

    db_path = workdir / "callpop.db"
    demo = seed(f"sqlite:///{db_path}")
    kamailio = start_office_kamailio(workdir / "kamailio", config=config)
    office = Office(
        workdir=workdir,
        kamailio=kamailio,
        login=demo.login,
        password=demo.password,
        db_path=db_path,
    )
    try:
        office.start()
        for extension in ("203", "204"):
            office.register_phone(extension)
        yield office
    finally:
        office.close()
        kamailio.stop()
