"""Backups and restores (callpop/backup.py) on real SQLite files and a real PostgreSQL.

The SQLite copy is taken while another connection keeps writing; a restore brings back
exactly the records of the backup; the daily schedule runs on an injected clock; the
``callpop backup`` / ``restore`` commands run as real processes for their exit codes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from callpop import backup
from callpop.backup import (
    TOKYO,
    BackupError,
    BackupStatus,
    backup_database,
    next_backup_at,
    prune_generations,
    restore_database,
    run_daily,
)
from callpop.service import running
from callpop.settings import Settings
from db.engine import make_engine, make_session_factory, migrate
from tests.fixtures_db import add_customer, admin_engine, postgres_url
from tests.processes import callpop_command
from tests.waiting import wait_for

# --- records --------------------------------------------------------------------------------


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _add(engine: Engine, *names: str) -> None:
    with make_session_factory(engine)() as session:
        for number, name in enumerate(names):
            add_customer(session, name, (f"+8131234{abs(hash(name)) % 10000:04d}{number}", "自宅"))
        session.commit()


def _records(url: str) -> list[tuple[Any, ...]]:
    """Every customer with its numbers: what "exactly the same records" compares."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    text(
                        "SELECT c.id, c.name, c.deleted_at IS NULL, p.e164 FROM customers c "
                        "LEFT JOIN customer_phones p ON p.customer_id = c.id ORDER BY c.id, p.id"
                    )
                )
            ]
    finally:
        engine.dispose()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    url = _sqlite_url(tmp_path / "data" / "callpop.db")
    engine = make_engine(url)
    migrate(engine)
    try:
        yield url, engine
    finally:
        engine.dispose()


# --- SQLite ---------------------------------------------------------------------------------


def test_sqlite_backup_while_another_connection_writes_is_one_moment(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database
    _add(engine, *(f"顧客{n}" for n in range(200)))
    stop = threading.Event()
    written = [0]

    def keep_writing() -> None:
        # Each transaction adds a customer and its number together: a copy of one
        # moment has as many numbers as customers.
        factory = make_session_factory(engine)
        while not stop.is_set():
            with factory() as session:
                add_customer(session, f"書込{written[0]}", (f"+8190{written[0]:08d}", "携帯"))
                session.commit()
            written[0] += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        while written[0] < 20:  # committed (in the WAL, not yet checkpointed) before the copy
            stop.wait(0.01)
        before = 200 + written[0]
        copies = [backup_database(url, tmp_path / f"copy{n}.db") for n in range(3)]
        after = 200 + written[0] + 1
    finally:
        stop.set()
        writer.join()

    for copy in copies:
        assert copy.size == copy.path.stat().st_size > 0
        assert copy.path.stat().st_mode & 0o777 == 0o600
        connection = sqlite3.connect(copy.path)
        try:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            [(customers,)] = connection.execute("SELECT count(*) FROM customers").fetchall()
            [(phones,)] = connection.execute("SELECT count(*) FROM customer_phones").fetchall()
            [(mode,)] = connection.execute("PRAGMA journal_mode").fetchall()
        finally:
            connection.close()
        assert before <= customers <= after
        assert phones == customers
        assert mode == "delete"  # one self-contained file
    assert not list(tmp_path.glob("*.tmp"))


def test_restore_brings_back_exactly_the_records_at_backup_time(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database
    _add(engine, "山田 太郎", "鈴木 花子")
    at_backup = _records(url)
    backup_database(url, tmp_path / "yesterday.db")

    _add(engine, "佐藤 次郎")
    with engine.begin() as connection:
        connection.execute(text("UPDATE customers SET name = '山田 一郎' WHERE name = '山田 太郎'"))
        connection.execute(text("DELETE FROM customer_phones WHERE customer_id = 2"))
    assert _records(url) != at_backup
    engine.dispose()  # the service is stopped for a restore

    restore_database(url, tmp_path / "yesterday.db")
    assert _records(url) == at_backup
    # Still a database callpop can write to.
    _add(engine, "田中 三郎")
    engine.dispose()
    assert len(_records(url)) == len(at_backup) + 1


def test_restore_refuses_a_database_in_use_and_leaves_it_as_it_was(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database
    _add(engine, "山田 太郎")
    backup_database(url, tmp_path / "old.db")
    _add(engine, "鈴木 花子")
    now = _records(url)
    with engine.connect() as connection:  # a running service keeps connections open
        connection.execute(text("SELECT 1"))
        with pytest.raises(BackupError, match="in use by another process") as refused:
            restore_database(url, tmp_path / "old.db")
    assert refused.value.code == 1
    assert _records(url) == now


def test_restore_refuses_what_is_not_a_callpop_backup(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database
    engine.dispose()
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database\n" * 100, encoding="utf-8")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    for path, reason in [
        (garbage, "not a SQLite backup"),
        (other, "not a callpop database"),
        (tmp_path / "absent.db", "no such backup file"),
    ]:
        with pytest.raises(BackupError, match=reason) as refused:
            restore_database(url, path)
        assert refused.value.code == 2


def test_a_failed_backup_leaves_the_last_one_whole(tmp_path: Path) -> None:
    target = tmp_path / "callpop-backup.db"
    target.write_bytes(b"the last good backup")
    with pytest.raises(BackupError, match="no such database file"):
        backup_database(_sqlite_url(tmp_path / "gone.db"), target)
    assert target.read_bytes() == b"the last good backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["callpop-backup.db"]


# --- generations and the schedule ---------------------------------------------------------


def test_generations_are_pruned_to_the_newest_n(tmp_path: Path) -> None:
    day = datetime(2026, 11, 1, 3, 0, tzinfo=TOKYO)
    names = [f"callpop-{day + timedelta(days=n):%Y%m%d-%H%M%S}.db" for n in range(10)]
    for name in reversed(names):  # creation order must not matter, the name does
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "callpop-manual.db").write_bytes(b"mine")
    (tmp_path / "notes.txt").write_bytes(b"mine")

    removed = prune_generations(tmp_path, 3)
    assert sorted(p.name for p in removed) == names[:7]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names[7:], "callpop-manual.db", "notes.txt"]
    )
    assert prune_generations(tmp_path, 3) == []


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Before 03:00 in Tokyo: today; at or after it: tomorrow.
        (datetime(2026, 11, 22, 2, 59, tzinfo=TOKYO), datetime(2026, 11, 22, 3, 0, tzinfo=TOKYO)),
        (datetime(2026, 11, 22, 3, 0, tzinfo=TOKYO), datetime(2026, 11, 23, 3, 0, tzinfo=TOKYO)),
        (datetime(2026, 11, 22, 15, 0, tzinfo=TOKYO), datetime(2026, 11, 23, 3, 0, tzinfo=TOKYO)),
        # 17:30 UTC on the 21st is 02:30 on the 22nd in Tokyo.
        (datetime(2026, 11, 21, 17, 30, tzinfo=UTC), datetime(2026, 11, 22, 3, 0, tzinfo=TOKYO)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=TOKYO), datetime(2027, 1, 1, 3, 0, tzinfo=TOKYO)),
    ],
)
def test_the_next_backup_is_the_next_daily_at_in_tokyo(now: datetime, expected: datetime) -> None:
    assert next_backup_at(now, time(3, 0)) == expected


class _Clock:
    """The scheduler's clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self, start: datetime, status: BackupStatus, runs: int) -> None:
        self.now = start
        self.give_up = start + timedelta(days=10)
        self.slept: list[float] = []
        self.status = status
        self.runs = runs

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.status.written + self.status.failures >= self.runs:
            await asyncio.Event().wait()  # enough backups: wait here to be cancelled
        if self.now > self.give_up:
            raise AssertionError(f"10 days on the clock and {self.status}")
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def _run_until(
    clock: _Clock, status: BackupStatus, url: str, directory: Path, keep: int, runs: int
) -> None:
    """Run the scheduler until ``runs`` backups were attempted, then cancel it."""

    async def main() -> None:
        task = asyncio.create_task(
            run_daily(
                url,
                directory,
                daily_at=time(3, 0),
                keep=keep,
                status=status,
                now=clock,
                sleep=clock.sleep,
            )
        )
        # The copy runs in a worker thread; wait for it on the loop, not on the clock.
        while status.failures + status.written < runs and not task.done():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.result()  # the scheduler's own exception, if it raised one

    asyncio.run(main())


def test_the_daily_backup_runs_at_daily_at_and_keeps_n(
    database: tuple[str, Engine], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, engine = database
    _add(engine, "山田 太郎")
    directory = tmp_path / "backups"
    directory.mkdir()
    status = BackupStatus()
    clock = _Clock(datetime(2026, 11, 21, 23, 30, tzinfo=TOKYO), status, runs=2)
    with caplog.at_level(logging.INFO, logger="callpop.backup"):
        _run_until(clock, status, url, directory, keep=1, runs=2)
    assert status.enabled and status.failures == 0 and status.last_error is None
    assert status.last_ok_at == datetime(2026, 11, 23, 3, 0, tzinfo=TOKYO)
    # Two taken (22nd and 23rd at 03:00), one kept.
    assert [p.name for p in directory.iterdir()] == ["callpop-20261123-030000.db"]
    assert max(clock.slept) <= 60  # short slices: a clock change is noticed
    written = [r.getMessage() for r in caplog.records if "backup written" in r.getMessage()]
    assert len(written) == 2 and "callpop-20261122-030000.db" in written[0]


def test_a_failed_daily_backup_is_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status = BackupStatus()
    clock = _Clock(datetime(2026, 11, 22, 2, 0, tzinfo=TOKYO), status, runs=1)
    with caplog.at_level(logging.INFO, logger="callpop.backup"):
        _run_until(clock, status, _sqlite_url(tmp_path / "gone.db"), tmp_path, keep=3, runs=1)
    assert status.failures == 1 and status.last_ok_at is None
    assert status.last_error is not None and "no such database file" in status.last_error
    [failed] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "daily backup failed" in failed.getMessage()


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    """A database of its own (pg_restore --clean works on a whole database), dropped after."""
    name = f"callpop_backup_{uuid.uuid4().hex[:12]}"
    admin = admin_engine().execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(postgres_url()).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_postgres_backup_and_restore_round_trip(scratch_postgres: str, tmp_path: Path) -> None:
    url = scratch_postgres
    engine = make_engine(url)
    try:
        migrate(engine)
        _add(engine, "山田 太郎", "鈴木 花子")
        at_backup = _records(url)
        result = backup_database(url, tmp_path / "yesterday.dump")
        assert result.size > 0 and result.path.read_bytes()[:5] == b"PGDMP"

        _add(engine, "佐藤 次郎")
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM customers WHERE name = '山田 太郎'"))
        engine.dispose()
        assert _records(url) != at_backup

        restore_database(url, tmp_path / "yesterday.dump")
        assert _records(url) == at_backup
        garbage = tmp_path / "garbage.dump"
        garbage.write_bytes(b"not a dump")
        with pytest.raises(BackupError, match="not a pg_dump") as refused:
            restore_database(url, garbage)
        assert refused.value.code == 2
        assert _records(url) == at_backup
    finally:
        engine.dispose()


def test_missing_postgres_tools_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup.shutil, "which", lambda name: None)
    url = "postgresql+psycopg://callpop@127.0.0.1:1/callpop"
    with pytest.raises(BackupError, match="pg_dump not found.*postgresql-client") as refused:
        backup_database(url, tmp_path / "x.dump")
    assert refused.value.code == 2
    assert list(tmp_path.iterdir()) == []


# --- the commands ---------------------------------------------------------------------------


def callpop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*callpop_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_backup_and_restore_commands_and_their_exit_codes(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database
    _add(engine, "山田 太郎")
    at_backup = _records(url)
    config = tmp_path / "callpop.toml"
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    copy = tmp_path / "out" / "callpop.db"

    made = callpop("backup", str(copy), "--config", str(config))
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"backup written: {copy} (")

    # Refused while the database is open elsewhere: 1, one line.
    _add(engine, "鈴木 花子")
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        busy = callpop("restore", str(copy), "--config", str(config))
    assert busy.returncode == 1
    assert busy.stderr.count("\n") == 1 and "in use by another process" in busy.stderr
    engine.dispose()

    # The database from the environment, like every command.
    restored = callpop("restore", str(copy), env={"CALLPOP_DATABASE__URL": url})
    assert restored.returncode == 0, restored.stderr
    assert _records(url) == at_backup

    not_backup = callpop("restore", str(config), "--config", str(config))
    assert not_backup.returncode == 2
    assert "not a SQLite backup" in not_backup.stderr
    no_config = callpop("backup", str(copy), "--config", str(tmp_path / "absent.toml"))
    assert no_config.returncode == 2


# --- the service ----------------------------------------------------------------------------


def test_the_service_schedules_the_daily_backup_and_reports_it_in_healthz(
    database: tuple[str, Engine], tmp_path: Path
) -> None:
    url, engine = database
    engine.dispose()
    configured = {"database": {"url": url}, "backup": {"dir": str(tmp_path / "b"), "keep": 3}}

    async def health_of(settings: Settings) -> Any:
        async with running(settings, sip=False) as runtime:
            await wait_for(lambda: runtime.backup.enabled or not settings.backup.dir)
            return (await runtime.health()).backup

    on = asyncio.run(health_of(Settings.model_validate(configured)))
    assert (on.enabled, on.last_ok_at, on.last_error, on.failures) == (True, None, None, 0)
    off = asyncio.run(health_of(Settings.model_validate({"database": {"url": url}})))
    assert not off.enabled
