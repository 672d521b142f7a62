"""Real SIP peers on loopback: SIPp as a caller, Kamailio as registrar and proxy.

Reusable pieces for any test that needs a real peer:

* :func:`run_sipp` — run SIPp in the foreground (``-nostdin``) with its logs in a work
  directory; on a non-zero exit it prints SIPp's screen, error and message logs so a
  failing test shows the SIP trace.
* :func:`call_ring_group` — SIPp calls Kamailio's ring group, which rings callpop.
* :func:`start_kamailio` / the ``kamailio`` fixture — Kamailio 5.6 with
  ``kamailio/registrar.cfg`` on ``127.0.0.1:<free port>``, stopped by its PID.
* :func:`start_presence_kamailio` / the ``presence_kamailio`` fixture — the same with
  ``kamailio/presence.cfg``: registrar, proxy and RFC 4235 dialog-event presence server.

A peer that is not installed fails the test with a clear message; it never skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import free_udp_port

PEERS_DIR = Path(__file__).parent
SIPP_DIR = PEERS_DIR / "sipp"
KAMAILIO_CFG = PEERS_DIR / "kamailio" / "registrar.cfg"
PRESENCE_CFG = PEERS_DIR / "kamailio" / "presence.cfg"
# pua binds a database even in memory mode; it gets a writable copy of this (lab notes).
KAMAILIO_DBTEXT = Path("/usr/share/kamailio/dbtext/kamailio")
# What registrar.cfg accepts (see its header).
KAMAILIO_USER = "callpop"
KAMAILIO_PASSWORD = "callpop-secret"
KAMAILIO_RING_GROUP = "100"


def require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed (Debian package {package}); this test needs it")
    return path


def sipp_report(workdir: Path) -> str:
    """SIPp's own logs from ``workdir``, tails only."""
    parts = []
    for path in sorted(workdir.glob("sipp*")):
        if path.is_file():
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-8000:]}")
    return "\n".join(parts) or f"(no SIPp logs in {workdir})"


def run_sipp(
    args: Sequence[str],
    timeout: float,
    *,
    workdir: Path,
    expect_returncode: int | None = 0,
) -> subprocess.CompletedProcess[str]:
    """Run ``sipp ARGS`` to completion; print its logs if the exit code is unexpected.

    ``args`` are SIPp's own (target, ``-sf``, ``-m`` ...). Added here: ``-nostdin``,
    ``-trace_err``/``-trace_msg``/``-trace_screen`` with the files in ``workdir``.
    ``timeout`` bounds the process (it is killed after it); pair it with SIPp's own
    ``-timeout Ns -timeout_error`` so SIPp ends first and says why.
    """
    sipp = require("sipp", "sip-tester")
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        sipp,
        *args,
        "-nostdin",
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
    try:
        result = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        print(f"SIPp did not finish within {timeout} s: {' '.join(command)}")
        print(sipp_report(workdir))
        raise AssertionError(f"SIPp timed out after {timeout} s") from exc
    if expect_returncode is not None and result.returncode != expect_returncode:
        print(f"SIPp exited {result.returncode}: {' '.join(command)}")
        print(f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
        print(sipp_report(workdir))
    return result


def call_ring_group(kamailio: Kamailio, workdir: Path) -> None:
    """One SIPp call to ``sip:100@kamailio`` that rings 300 ms, then is cancelled with
    ``Reason: SIP;cause=200`` (callers.csv row 1: 山田 太郎, PAI ``tel:+81312345678``).
    Blocking: run it in a thread from async tests."""
    result = run_sipp(
        [
            f"{kamailio.host}:{kamailio.port}",
            "-s",
            KAMAILIO_RING_GROUP,
            "-i",
            "127.0.0.1",
            "-p",
            str(free_udp_port()),
            "-sf",
            str(SIPP_DIR / "uac_invite_cancel.xml"),
            "-inf",
            str(SIPP_DIR / "callers.csv"),
            "-m",
            "1",
            "-d",
            "300",
            "-timeout",
            "20s",
            "-timeout_error",
        ],
        60.0,
        workdir=workdir,
    )
    assert result.returncode == 0, f"SIPp exited {result.returncode}, see its log above"


@dataclass
class Kamailio:
    """A running Kamailio: where it listens, and how to stop or restart it."""

    host: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    config: Path = KAMAILIO_CFG
    children: int = 1
    defines: tuple[str, ...] = ()  # -A NAME=value pre-processor defines

    @property
    def log_path(self) -> Path:
        return self.workdir / f"kamailio-{self.starts}.log"

    def start(self, timeout: float = 10.0) -> None:
        """Start on ``host:port`` and wait until it answers SIP (an OPTIONS gets a reply)."""
        binary = require("kamailio", "kamailio")
        self.starts += 1
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                "-f",
                str(self.config),
                "-DD",
                "-E",
                "-n",
                str(self.children),
                *(arg for define in self.defines for arg in ("-A", define)),
                "-l",
                f"udp:{self.host}:{self.port}",
                "-w",
                str(self.workdir),
                "-Y",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"kamailio exited at start-up:\n{self.logs()}")
            if _answers_sip(self.host, self.port):
                return
        self.stop()
        raise AssertionError(f"kamailio did not answer on {self.host}:{self.port}\n{self.logs()}")

    def stop(self) -> None:
        """SIGTERM the process group we started (Kamailio forks children), then wait."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port: a registrar with an empty location table."""
        self.stop()
        self.start()

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("kamailio-*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-8000:]}")
        return "\n".join(parts)


def _answers_sip(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(0.2)
        local_port = sock.getsockname()[1]
        probe = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{local_port};branch=z9hG4bKprobe{time.monotonic_ns()}\r\n"
            f"From: <sip:probe@{host}>;tag=probe\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: probe-{time.monotonic_ns()}@{host}\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        try:
            sock.sendto(probe, (host, port))
            data, _ = sock.recvfrom(65535)
        except OSError:  # timeout, or ICMP port unreachable while it starts
            time.sleep(0.1)
            return False
        return data.startswith(b"SIP/2.0 ")


def start_kamailio(workdir: Path, host: str = "127.0.0.1") -> Kamailio:
    workdir.mkdir(parents=True, exist_ok=True)
    kamailio = Kamailio(host=host, port=free_udp_port(host), workdir=workdir)
    kamailio.start()
    return kamailio


def start_presence_kamailio(
    workdir: Path, host: str = "127.0.0.1", config: Path = PRESENCE_CFG
) -> Kamailio:
    """Kamailio with presence.cfg (or another config built on it: office.cfg,
    routing.cfg): its own port in SELF_URI, pua's dbtext copy in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    if not KAMAILIO_DBTEXT.is_dir():
        pytest.fail(f"{KAMAILIO_DBTEXT} is missing (Debian package kamailio); this test needs it")
    dbtext = workdir / "dbtext"
    shutil.copytree(KAMAILIO_DBTEXT, dbtext)
    port = free_udp_port(host)
    kamailio = Kamailio(
        host=host,
        port=port,
        workdir=workdir,
        config=config,
        children=2,
        defines=(f'SELF_URI="sip:{host}:{port}"', f'DBURL="text://{dbtext}"'),
    )
    kamailio.start()
    return kamailio


@pytest.fixture
def presence_kamailio(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Kamailio]:
    """Kamailio (presence.cfg) on 127.0.0.1:<free port>; its log is printed on failure."""
    instance = start_presence_kamailio(tmp_path / "kamailio")
    try:
        yield instance
    finally:
        instance.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(instance.logs())


@pytest.fixture
def kamailio(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Kamailio]:
    """Kamailio (registrar.cfg) on 127.0.0.1:<free port>; its log is printed on failure."""
    instance = start_kamailio(tmp_path / "kamailio")
    try:
        yield instance
    finally:
        instance.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(instance.logs())
