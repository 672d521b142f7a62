"""The call log's writer (``callpop.calllog``) on a real SQLite file and a real PostgreSQL.

The writes under test are small functions on a table of their own, so that what the
writer does (retry, back off, hold, spill, replay, keep the order) is all that is
tested; ``tests/e2e/test_call_log.py`` does the same with calls through the service.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from callpop.calllog import CallLog, DatabaseFile, backoff, journal_path_for
from db.engine import make_engine
from tests.fixtures_db import PostgresSchema
from tests.waiting import wait_for

TOKYO = ZoneInfo("Asia/Tokyo")


def append(session: Session, *, id: str, at: datetime | None = None) -> None:
    """The write under test: one row, in the order the writer applies them."""
    session.execute(text("INSERT INTO entries (id, at) VALUES (:id, :at)"), {"id": id, "at": at})


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, at)")
    return path


@pytest.fixture
def factory(db_path: Path) -> Iterator[sessionmaker[Session]]:
    # A 50 ms busy timeout instead of callpop's 5 s: the test waits for retries, not time.
    engine = create_engine(f"sqlite:///{db_path}", connect_args={"timeout": 0.05})
    try:
        yield sessionmaker(engine)
    finally:
        engine.dispose()


def entries(db_path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM entries ORDER BY seq")]


def open_log(factory: sessionmaker[Session], journal: Path, **options: Any) -> CallLog:
    options.setdefault("first_backoff", 0.01)
    options.setdefault("max_backoff", 0.05)
    return CallLog(factory, writes=[append], journal=journal, **options)


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection holds SQLite's write lock (readers go on, writers wait)."""
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO entries (id) VALUES ('holder')")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


class Gate:
    """A guard that holds the writes (as a deleted database file does) until opened."""

    def __init__(self) -> None:
        self.closed = True

    def __call__(self) -> str | None:
        return "held by the test" if self.closed else None


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = [backoff(attempt, first=0.1, most=1.0) for attempt in range(1, 7)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


@pytest.mark.asyncio
async def test_a_locked_database_is_retried_and_nothing_overtakes(
    db_path: Path, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    call_log = open_log(factory, tmp_path / "journal.jsonl")
    try:
        with write_locked(db_path):
            for n in range(5):
                call_log.submit(append, id=f"call-{n}")
            await wait_for(lambda: call_log.stats.retried >= 3, what="retries under the lock")
            assert call_log.stats.written == 0
            assert call_log.held is not None and "locked" in call_log.held
        await wait_for(lambda: call_log.stats.written == 5, what="the writes after the lock")
        assert entries(db_path) == [f"call-{n}" for n in range(5)]
        assert (call_log.stats.failed, call_log.stats.spilled, call_log.held) == (0, 0, None)
    finally:
        await call_log.close()


@pytest.mark.asyncio
async def test_an_injected_failure_is_retried_until_it_goes_through(
    db_path: Path, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    failures = iter(range(3))

    def flaky(session: Session, *, id: str) -> None:
        if next(failures, None) is not None:
            raise OperationalError("INSERT …", {}, sqlite3.OperationalError("disk I/O error"))
        append(session, id=id)

    call_log = CallLog(
        factory, writes=[flaky], journal=tmp_path / "j.jsonl", first_backoff=0.01, max_backoff=0.02
    )
    try:
        call_log.submit(flaky, id="a")
        call_log.submit(append, id="b")
        await wait_for(lambda: call_log.stats.written == 2, what="both writes")
    finally:
        await call_log.close()
    assert call_log.stats.retried == 3
    assert entries(db_path) == ["a", "b"]


@pytest.mark.asyncio
async def test_a_write_refused_for_good_is_logged_and_counted_and_the_rest_go_on(
    db_path: Path,
    factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    call_log = open_log(factory, tmp_path / "journal.jsonl")
    try:
        call_log.submit(append, id="dup")
        call_log.submit(append, id="dup")  # UNIQUE: an IntegrityError, not worth a retry
        call_log.submit(append, id="next")
        await wait_for(lambda: call_log.stats.written == 2, what="the good writes")
    finally:
        await call_log.close()
    assert (call_log.stats.failed, call_log.stats.retried) == (1, 0)
    assert entries(db_path) == ["dup", "next"]
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "could not record call dup (append)" in line.getMessage()


@pytest.mark.asyncio
async def test_overflow_spills_to_the_journal_and_is_replayed_in_order(
    db_path: Path,
    factory: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = tmp_path / "journal.jsonl"
    gate = Gate()
    at = datetime(2026, 11, 22, 10, 31, 5, 123000, tzinfo=TOKYO)
    call_log = open_log(factory, journal, max_queue=2, guard=gate)
    try:
        for n in range(6):
            call_log.submit(append, id=f"call-{n}", at=at)
        # At most the bound waits in memory (and one write in the writer's hands).
        assert call_log.queue_depth <= 3
        assert call_log.stats.spilled == 6 - call_log.queue_depth >= 3
        assert journal.read_text().count("\n") == call_log.stats.spilled
        assert journal.stat().st_mode & 0o777 == 0o600  # it holds callers' numbers
        assert call_log.stats.overflows == 1
        overflow = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(overflow) == 1 and overflow[0].levelno == logging.WARNING
        # Once spilling, later writes follow the journal, never overtake it.
        call_log.submit(append, id="call-6", at=at)
        assert call_log.stats.spilled == 7 - call_log.queue_depth

        gate.closed = False
        call_log.wake()
        await wait_for(lambda: call_log.stats.written == 7, what="every write, replayed")
        assert entries(db_path) == [f"call-{n}" for n in range(7)]
        assert call_log.stats.replayed == call_log.stats.spilled
        assert (call_log.journal_entries, call_log.stats.failed) == (0, 0)
        assert not journal.exists()
        with contextlib.closing(sqlite3.connect(db_path)) as connection:
            [(stored,)] = connection.execute("SELECT at FROM entries WHERE id = 'call-6'")
        assert datetime.fromisoformat(stored) == at  # the journal keeps times as they were
        # Caught up: the next write queues in memory again.
        spilled = call_log.stats.spilled
        call_log.submit(append, id="call-7")
        await wait_for(lambda: call_log.stats.written == 8, what="the write after")
        assert call_log.stats.spilled == spilled
    finally:
        await call_log.close()


@pytest.mark.asyncio
async def test_after_a_spill_new_writes_wait_behind_the_journal_even_with_room_in_the_queue(
    db_path: Path, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    entered = {name: threading.Event() for name in ("call-0", "call-1")}
    release = {name: threading.Event() for name in ("call-0", "call-1")}

    def slow(session: Session, *, id: str) -> None:
        if id in release:  # the database is slow for these two
            entered[id].set()
            release[id].wait(10)
        append(session, id=id)

    call_log = CallLog(factory, writes=[slow], journal=tmp_path / "journal.jsonl", max_queue=2)
    try:
        call_log.submit(slow, id="call-0")
        await wait_for(entered["call-0"].is_set, what="the first write under way")
        for n in (1, 2, 3):  # 1 and 2 fill the queue, 3 goes to the journal
            call_log.submit(slow, id=f"call-{n}")
        assert call_log.stats.spilled == 1
        release["call-0"].set()
        await wait_for(entered["call-1"].is_set, what="the second write under way")
        # The queue has room again, but call-3 is still in the journal: call-4 goes there.
        call_log.submit(slow, id="call-4")
        release["call-1"].set()
        await wait_for(lambda: call_log.stats.written == 5, what="every write")
    finally:
        for event in release.values():
            event.set()
        await call_log.close()
    assert entries(db_path) == [f"call-{n}" for n in range(5)]
    assert call_log.stats.spilled == 2


@pytest.mark.asyncio
async def test_close_journals_what_it_could_not_write_and_the_next_start_replays_it(
    db_path: Path, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    gate = Gate()
    first = open_log(factory, journal, guard=gate)
    for n in range(3):
        first.submit(append, id=f"call-{n}")
    await first.close(timeout=0.2)  # the database never came back during this run
    assert first.stats.written == 0 and first.stats.spilled == 3
    assert journal.read_text().count("\n") == 3

    again = open_log(factory, journal)  # the next start, on the same journal
    try:
        assert again.journal_entries == 3
        again.submit(append, id="call-3")  # a new call: after what the journal holds
        await wait_for(lambda: again.stats.written == 4, what="the journal, then the new write")
    finally:
        await again.close()
    assert entries(db_path) == [f"call-{n}" for n in range(4)]
    assert (again.stats.replayed, again.stats.failed) == (3, 0)
    assert not journal.exists()


@pytest.mark.asyncio
async def test_a_replayed_write_already_in_the_database_is_not_a_failure(
    db_path: Path, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    gate = Gate()
    first = open_log(factory, journal, guard=gate)
    first.submit(append, id="call-0")
    first.submit(append, id="call-1")
    await first.close(timeout=0.2)
    # The crash came after "call-0" reached the database: replaying it finds it there.
    with contextlib.closing(sqlite3.connect(db_path)) as connection, connection:
        connection.execute("INSERT INTO entries (id) VALUES ('call-0')")
    again = open_log(factory, journal)
    try:
        await wait_for(lambda: again.journal_entries == 0, what="the replay")
    finally:
        await again.close()
    assert entries(db_path) == ["call-0", "call-1"]
    assert again.stats.failed == 0


@pytest.mark.asyncio
async def test_the_writer_is_its_own_thread_not_the_default_executor(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    seen: list[str] = []

    def where(session: Session, *, id: str) -> None:
        seen.append(threading.current_thread().name)

    call_log = CallLog(factory, writes=[where], journal=tmp_path / "j.jsonl")
    try:
        call_log.submit(where, id="a")
        await wait_for(lambda: call_log.stats.written == 1, what="the write")
    finally:
        await call_log.close()
    assert seen == ["callpop-calllog"]


def test_the_database_file_is_known_by_its_identity(tmp_path: Path) -> None:
    path = tmp_path / "callpop.db"
    path.write_bytes(b"")
    database_file = DatabaseFile(path)
    assert database_file.problem() is None
    path.rename(tmp_path / "elsewhere.db")
    assert database_file.problem() == f"the database file {path} is gone"
    path.write_bytes(b"")
    assert database_file.problem() == f"the database file {path} was replaced"
    database_file.adopt()
    assert database_file.problem() is None
    # `rm callpop.db*` must not take the journal along.
    assert journal_path_for(path) == tmp_path / "callpop.calllog-journal.jsonl"
    assert not journal_path_for(path).name.startswith(path.name)


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_on_postgresql_a_dropped_connection_is_retried_on_a_new_one(
    tmp_path: Path,
) -> None:
    schema = PostgresSchema()
    url = schema.create()
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE entries (seq SERIAL PRIMARY KEY, id TEXT)"))
        killed: list[int] = []

        def killed_once(session: Session, *, id: str) -> None:
            if not killed:
                pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
                killed.append(pid)
                # The server ends this very connection, as a restart or a failover would.
                session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            session.execute(text("INSERT INTO entries (id) VALUES (:id)"), {"id": id})

        call_log = CallLog(
            sessionmaker(engine),
            writes=[killed_once],
            journal=tmp_path / "j.jsonl",
            first_backoff=0.01,
            max_backoff=0.05,
        )
        try:
            call_log.submit(killed_once, id="a")
            await wait_for(lambda: call_log.stats.written == 1, what="the write, retried")
        finally:
            await call_log.close()
        assert call_log.stats.retried >= 1 and call_log.stats.failed == 0
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id FROM entries")).scalars().all() == ["a"]
    finally:
        engine.dispose()
        schema.drop()
