"""The call log under attack, through ``callpop serve`` run as a subprocess.

Each test starts the service the way an installation runs it (a TOML config, trunk
mode, a SQLite file on disk), places real SIP calls at it from loopback UDP sockets
(INVITE, 180, CANCEL, 487, ACK; one socket per call so concurrent calls never read
each other's responses), and attacks the database under it:

* (a) another process holds SQLite's write lock for longer than the busy timeout
  while calls ring and end: every call row is there afterwards, ended;
* (b) the database files are deleted (``rm callpop.db*``) mid-run: /healthz goes
  degraded within seconds with an ERROR line, and the calls made meanwhile are in
  the file once it is restored from a backup;
* (c) the service is killed with SIGKILL during a ring and started again on the same
  file: the row is ended as ``interrupted`` and the board does not show it.

Every process is ended by its PID; the service's output is printed when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import (
    callpop_command,
    free_tcp_port,
    free_udp_port,
    stop_process,
    wait_until_serving,
)
from tests.waiting import wait_for
from tests.web.conftest import DemoTemplate, SipCall, demo_template, open_phone

__all__ = ["demo_template"]  # the seeded database each test copies

START_DEADLINE = 45.0
YAMADA = "0312345678"


@dataclass(slots=True)
class Service:
    """One installation: a config, a database file, and the process serving them."""

    workdir: Path
    db_path: Path
    http_port: int = field(default_factory=free_tcp_port)
    sip_port: int = field(default_factory=free_udp_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    database_extra: str = ""  # more [database] keys, TOML

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def sip_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    @property
    def log_path(self) -> Path:
        return self.workdir / "callpop.log"

    def start(self) -> None:
        """Start ``callpop serve`` (again, on the same files and ports) and wait until it serves."""
        config = self.workdir / "callpop.toml"
        config.write_text(
            f"""
[sip]
mode = "trunk"
bind_host = "127.0.0.1"
bind_port = {self.sip_port}
allowed_hosts = ["127.0.0.1"]
ring_timeout = 60.0

[database]
url = "sqlite:///{self.db_path}"
lookup_timeout_ms = 2000
{self.database_extra}

[http]
host = "127.0.0.1"
port = {self.http_port}
session_secret = "{secrets.token_urlsafe(24)}"
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
        assert problem is None, f"{problem}\n--- callpop log ---\n{self.log()}"

    def kill(self) -> None:
        """SIGKILL by PID: no shutdown code runs, as in a power cut or the OOM killer."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def log(self, chars: int = 8000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def rows(self, sip_call_ids: list[str] | None = None) -> dict[str, tuple[str, str | None]]:
        """The call rows in the file at ``db_path``: SIP Call-ID -> (state, outcome).

        Opened read-only by URI, so that reading never creates a file that is not there.
        """
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            found = connection.execute("SELECT sip_call_id, state, outcome FROM calls").fetchall()
        finally:
            connection.close()
        rows = {sip_id: (state, outcome) for sip_id, state, outcome in found}
        if sip_call_ids is None:
            return rows
        return {sip_id: rows[sip_id] for sip_id in sip_call_ids if sip_id in rows}


async def ring_and_cancel(target: tuple[str, int], number: str = YAMADA) -> str:
    """One whole call: INVITE, 180, CANCEL, 487, ACK. Returns its SIP Call-ID."""
    async with open_phone(target) as phone:
        call = SipCall(phone, number)
        call.invite()
        await phone.response("INVITE", 180, timeout=10)
        call.cancel()
        await phone.response("CANCEL", 200, timeout=10)
        final = await phone.response("INVITE", 487, timeout=10)
        call.ack(final)
    return call.call_id


def call_ids(results: list[Any]) -> list[str]:
    """The Call-IDs of the calls that went through; a failed call fails the test."""
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} calls failed: {failed[0]!r}"
    return [str(r) for r in results]


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture
def service(
    tmp_path: Path, demo_template: DemoTemplate, request: pytest.FixtureRequest
) -> Iterator[Service]:
    running = Service(tmp_path, demo_template.copy_to(tmp_path))
    if hasattr(request, "param"):
        running.database_extra = request.param
    try:
        running.start()
        yield running
    finally:
        running.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- callpop log ---\n{running.log()}")


async def healthz(service: Service) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10, trust_env=False) as http:
        body: dict[str, Any] = (await http.get("/healthz")).json()
        return body


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another process's view of SQLite: a transaction holding the write lock.

    Readers (the caller lookup, in WAL mode) go on; every writer waits for its busy
    timeout (5 s in callpop) and then gets "database is locked".
    """
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE staff SET name = name")
        yield
        holder.execute("COMMIT")
    finally:
        holder.close()


def all_ended(service: Service, ids: list[str], outcome: str) -> bool:
    rows = service.rows(ids)
    return len(rows) == len(ids) and all(row == ("ended", outcome) for row in rows.values())


@pytest.mark.asyncio
async def test_calls_during_a_write_lock_longer_than_the_busy_timeout_are_all_recorded(
    service: Service,
) -> None:
    with write_locked(service.db_path):
        first = call_ids(
            await asyncio.gather(
                *(ring_and_cancel(service.sip_address) for _ in range(3)), return_exceptions=True
            )
        )

        async def retrying() -> dict[str, Any] | None:
            body = await healthz(service)
            return body if body["call_log"]["retried"] >= 1 else None

        # A write has waited out the 5 s busy timeout and is being tried again.
        held = await wait_for(retrying, timeout=30, what="a call-log write to be retried")
        assert "locked" in (held["call_log"]["held"] or "")
        assert held["call_log"]["written"] <= 1  # the start-up write, at most
        later = call_ids(
            await asyncio.gather(
                *(ring_and_cancel(service.sip_address) for _ in range(3)), return_exceptions=True
            )
        )
        assert service.rows(first + later) == {}  # nothing written while locked
    ids = first + later
    await wait_for(
        lambda: all_ended(service, ids, "abandoned"),
        timeout=30,
        what="every call row, ended, after the lock",
    )
    body = await healthz(service)
    assert body["call_log"]["failed"] == 0 and body["calls"]["record_failures"] == 0
    assert body["calls"]["calls"] == 6
    # The blocked writes held no worker thread the lookups needed: no pop went out late.
    assert body["calls"]["lookup_timeouts"] == 0
    assert "call-log write for call" in service.log() and "failed, retrying" in service.log()


@pytest.mark.asyncio
@pytest.mark.parametrize("service", ["call_log_queue = 3"], indirect=True)
async def test_calls_while_the_database_file_is_deleted_are_recorded_once_it_is_back(
    service: Service,
) -> None:
    before = await ring_and_cancel(service.sip_address)
    await wait_for(lambda: all_ended(service, [before], "abandoned"), what="the first call row")
    backup = service.workdir / "backup.db"
    with contextlib.closing(sqlite3.connect(service.db_path)) as source:
        with contextlib.closing(sqlite3.connect(backup)) as target:
            source.backup(target)

    removed = sorted(service.workdir.glob("callpop.db*"))  # rm callpop.db*
    for path in removed:
        path.unlink()
    assert service.db_path in removed

    async def degraded() -> dict[str, Any] | None:
        body = await healthz(service)
        return body if body["status"] == "degraded" else None

    body = await wait_for(degraded, timeout=10, what="/healthz to say the file is gone")
    assert body["database"]["ok"] is False
    assert "is gone" in body["database"]["detail"]
    error = await wait_for(
        lambda: [line for line in service.log().splitlines() if "ERROR" in line and "gone" in line],
        timeout=10,
        what="an ERROR line about the file",
    )
    assert str(service.db_path) in error[0]

    meanwhile = call_ids(
        await asyncio.gather(
            *(ring_and_cancel(service.sip_address) for _ in range(4)), return_exceptions=True
        )
    )
    held = await healthz(service)
    assert held["status"] == "degraded"
    # 8 writes (started, ended): 3 in memory at most, the rest in the journal beside it.
    journal = service.workdir / "callpop.calllog-journal.jsonl"
    await wait_for(lambda: journal.exists(), what="the overflow journal")
    assert held["call_log"]["spilled"] >= 1
    assert not service.db_path.exists()  # nothing made a new, empty database at the path

    shutil.copyfile(backup, service.db_path)  # the operator restores the backup

    async def healthy() -> bool:
        return bool((await healthz(service))["status"] == "ok")

    await wait_for(healthy, timeout=15, what="/healthz ok with the file back")
    await wait_for(
        lambda: all_ended(service, [before, *meanwhile], "abandoned"),
        timeout=15,
        what="the calls made while the file was gone, in the restored file",
    )
    after = await healthz(service)
    assert after["call_log"]["failed"] == 0
    # Every write that went to the journal came back from it (more may have spilled
    # after `held` was read: the ends are written after their pops).
    assert after["call_log"]["replayed"] == after["call_log"]["spilled"] >= 1
    assert "is back" in service.log()


@pytest.mark.asyncio
async def test_a_call_ringing_when_the_service_is_killed_ends_as_interrupted(
    service: Service, demo_template: DemoTemplate
) -> None:
    async with open_phone(service.sip_address) as phone:
        call = SipCall(phone, YAMADA)
        call.invite()
        await phone.response("INVITE", 180, timeout=10)
        await wait_for(
            lambda: service.rows([call.call_id]) == {call.call_id: ("ringing", None)},
            timeout=10,
            what="the ringing call's row",
        )
        service.kill()  # SIGKILL during the ring
    service.start()  # the same config, the same database
    await wait_for(
        lambda: service.rows([call.call_id]) == {call.call_id: ("ended", "interrupted")},
        timeout=15,
        what="the call closed as interrupted at start-up",
    )
    async with httpx.AsyncClient(base_url=service.url, timeout=10, trust_env=False) as http:
        login = await http.post(
            "/api/session",
            json={"login": demo_template.info.login, "password": demo_template.info.password},
        )
        assert login.status_code == 200, login.text
        board = await http.get("/api/calls/active")
    assert board.status_code == 200
    assert board.json()["calls"] == []
    assert "1 call(s) left open by an unclean stop closed as interrupted" in service.log()
