"""The call log's writer: every call-log write, in order, on one thread of its own, never dropped.

A write is a function from :mod:`db.calls` and its fields (``submit(write, **fields)``).
:class:`CallLog` queues it and returns at once; one dedicated thread (not the default
executor the caller lookups run in, so a blocked write never starves a pop) applies
the queue in order, each write in its own transaction. Per call the order is the order
of submission: started, customer link, ended (docs/security.md, "The call log: nothing
lost").

What happens when a write cannot be applied:

* **The database is busy or gone for a while** (SQLite ``database is locked`` after
  the busy timeout, a PostgreSQL connection dropped or refused: any
  ``OperationalError``/``InterfaceError``/disconnect): the same write is tried again
  after a back-off (doubling from ``first_backoff`` up to ``max_backoff``), forever, and
  nothing behind it overtakes it. Counted in ``retried``; said once at WARNING when a
  write starts retrying and once at INFO when the writes go through again.
* **The database file is gone or replaced** (``guard`` says why, see
  :class:`DatabaseFile`): writes are held, not attempted, until the guard passes.
* **The queue is full** (``max_queue``): the write is appended to the journal file, a
  JSON line per write, and so is every write after it until the writer has caught up,
  so the order holds. Counted in ``spilled``; said once per spell at WARNING. The
  writer replays the journal, oldest first, when its queue is empty. A journal left
  by an earlier run (a crash, a shutdown that could not finish) is replayed at start.
* **A write the database refuses for good** (an integrity error, a bug): logged at
  ERROR with the call id and counted in ``failed``; the writes behind it go on. A
  replayed write that finds its row already there is not a failure (a replay after
  a crash may apply a write twice; the updates are idempotent, the insert is skipped).

``close()`` lets the writer drain for a bounded time, then moves what is left to the
journal. Knows sessions and the journal file, not SIP, HTTP or what a call is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("callpop.calllog")

Write = Callable[..., object]

DEFAULT_MAX_QUEUE = 1000
_JOURNAL: list[Any] = []  # _next's answer "replay the journal now" (compared by identity)


def backoff(attempt: int, *, first: float, most: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, …): doubling, capped."""
    return float(min(most, first * 2 ** (attempt - 1)))


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same write again later can succeed (busy, locked, disconnected)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | sa_exc.TimeoutError  # no pooled connection free in time
        | sqlite3.OperationalError
        | OSError,
    )


def journal_path_for(database_path: Path) -> Path:
    """Beside the SQLite file, named so that ``rm callpop.db*`` does not take it along."""
    return database_path.with_name(f"{database_path.stem}.calllog-journal.jsonl")


@dataclass(slots=True)
class _Pending:
    write: Write
    fields: dict[str, Any]
    journalled: bool = False  # read back from the journal
    again: bool = False  # applied once already, maybe to a file that is gone since

    @property
    def replay(self) -> bool:
        """Applied before, perhaps: a row already there is not an error."""
        return self.journalled or self.again

    @property
    def call_id(self) -> str:
        return str(self.fields.get("id", "-"))

    @property
    def name(self) -> str:
        return getattr(self.write, "__name__", repr(self.write))


@dataclass(slots=True)
class CallLogStats:
    written: int = 0  # writes applied
    retried: int = 0  # attempts that failed and were tried again
    failed: int = 0  # writes the database refused for good (logged with the call id)
    spilled: int = 0  # writes sent to the journal (queue full, or left at close)
    replayed: int = 0  # writes applied from the journal
    overflows: int = 0  # times the queue bound was hit (each starts a spell of spilling)


@dataclass(slots=True)
class DatabaseFile:
    """The SQLite file the engine opened, by identity (``st_dev``, ``st_ino``).

    A file deleted (``rm callpop.db*``) or replaced under a running service stays open
    and writable through the connections already made: every write would go to a file
    nobody can see any more. :meth:`problem` compares the path's identity with the one
    recorded when the file was opened; the writer holds its writes while it says why.
    """

    path: Path
    identity: tuple[int, int] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.identity is None:
            self.identity = self.current()

    def current(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino)

    def problem(self) -> str | None:
        """None while the path is still the file that was opened; else what happened."""
        now = self.current()
        if now is None:
            return f"the database file {self.path} is gone"
        if now != self.identity:
            return f"the database file {self.path} was replaced"
        return None

    def adopt(self) -> None:
        """The file now at the path is the one the (re-opened) engine uses."""
        self.identity = self.current()


class CallLog:
    """Applies call-log writes in order on one thread; retries, holds or spills, never drops."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        writes: Iterable[Write],
        journal: Path,
        max_queue: int = DEFAULT_MAX_QUEUE,
        first_backoff: float = 0.1,
        max_backoff: float = 5.0,
        guard: Callable[[], str | None] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._session_factory = session_factory
        self._writes = {getattr(w, "__name__", ""): w for w in writes}
        self.journal = journal
        self._replaying = journal.with_name(journal.name + ".replaying")
        self.max_queue = max_queue
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._guard = guard
        self.stats = CallLogStats()
        self._queue: deque[_Pending] = deque()
        self._in_flight: _Pending | None = None
        self._spilling = False  # writes go to the journal until the writer takes it
        self._journal_entries = 0  # spilled entries not yet replayed
        self._held: str | None = None  # why the writer is waiting (guard or last error)
        self._stopping = False  # close(): drain what is queued, then stop
        self._abandon = False  # close() ran out of time: spill the rest, stop
        self._pokes = 0  # wake()/close() calls: end a back-off early
        self._cond = threading.Condition()
        self._journal_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="callpop-calllog", daemon=True)
        for path in (self._replaying, journal):
            self._journal_entries += _count_lines(path)
        if journal.exists():
            self._spilling = True  # what is submitted now goes after what is there
        self._thread.start()

    # --- the producer side (the event loop) -------------------------------------------

    def submit(self, write: Write, /, **fields: Any) -> None:
        """Queue ``write(session, **fields)``; never blocks, never raises for the database."""
        pending = _Pending(write, fields)
        with self._cond:
            if self._stopping:
                self._spill([pending], why="the call log is closing")
                return
            if self._spilling or len(self._queue) >= self.max_queue:
                if not self._spilling:
                    self._spilling = True
                    self.stats.overflows += 1
                    log.warning(
                        "call-log queue full (%d writes waiting): spilling to %s until the"
                        " writer catches up",
                        len(self._queue),
                        self.journal,
                    )
                if self._spill([pending], why="queue full"):
                    return
                # The journal cannot be written: keep the write in memory over the bound.
            self._queue.append(pending)
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + (1 if self._in_flight is not None else 0)

    @property
    def journal_entries(self) -> int:
        return self._journal_entries

    @property
    def held(self) -> str | None:
        """Why writes are waiting right now (file gone, database locked …), or None."""
        return self._held

    def wake(self) -> None:
        """Try again now (the database file is back)."""
        with self._cond:
            self._pokes += 1
            self._cond.notify_all()

    async def close(self, timeout: float = 5.0) -> None:
        """Drain the queue for up to ``timeout`` seconds, then journal what is left."""
        with self._cond:
            self._stopping = True
            self._pokes += 1
            self._cond.notify_all()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._thread.is_alive() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if not self._thread.is_alive():
            return
        with self._cond:
            self._abandon = True
            left = list(self._queue)
            self._queue.clear()
            if self._in_flight is not None and not self._in_flight.journalled:
                # The thread may be stuck in the driver; journal the write it holds too
                # (applying it twice is harmless: see the module docstring). A write
                # read from the journal is still in the file being replayed.
                left.insert(0, self._in_flight)
            self._cond.notify_all()
        if left:
            log.warning(
                "call log closing with %d writes not applied: kept in %s for the next start",
                len(left),
                self.journal,
            )
            self._spill(left, why="closing", sync=True)

    # --- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next()
            if batch is None:
                return
            if batch is _JOURNAL:
                batch = self._load_journal()
            for pending in batch:
                if not self._apply(pending):
                    return  # abandoned; close() journalled what was queued
            if batch and batch[0].journalled:
                self._replaying.unlink(missing_ok=True)

    def _next(self) -> list[_Pending] | None:
        """The queue's head, or :data:`_JOURNAL` once the queue is empty and writes spilled."""
        with self._cond:
            while True:
                if self._abandon:
                    return None
                if self._replaying.exists():
                    return _JOURNAL
                if self._spilling and not self._queue:
                    # Under the lock, so that no write is spilled to a journal nobody
                    # replays: from here on new writes queue again (they are newer).
                    with self._journal_lock:
                        if self.journal.exists():
                            self.journal.rename(self._replaying)
                        self._spilling = False
                    continue
                if self._queue:
                    self._in_flight = self._queue.popleft()
                    return [self._in_flight]
                if self._stopping:
                    return None
                self._cond.wait()

    def _load_journal(self) -> list[_Pending]:
        loaded = list(self._load(self._replaying))
        if loaded:
            log.info("replaying %d call-log writes from %s", len(loaded), self._replaying)
        else:
            self._replaying.unlink(missing_ok=True)
        return loaded

    def _apply(self, pending: _Pending) -> bool:
        """Apply one write, retrying while that can help. False once abandoned."""
        attempt = 0
        while True:
            with self._cond:
                if self._abandon:
                    return False
                self._in_flight = pending
            why = self._guard() if self._guard is not None else None
            if why is not None:
                attempt += 1
                self._wait(why, attempt, count=False)
                continue
            try:
                with self._session_factory() as session:
                    pending.write(session, **pending.fields)
                    session.commit()
            except Exception as exc:
                if is_transient(exc):
                    self.stats.retried += 1
                    if attempt == 0:
                        log.warning(
                            "call-log write for call %s (%s) failed, retrying: %s",
                            pending.call_id,
                            pending.name,
                            _first_line(exc),
                        )
                    attempt += 1
                    self._wait(_first_line(exc), attempt, count=True)
                    continue
                if pending.replay and isinstance(exc, sa_exc.IntegrityError):
                    log.info("call %s (%s) was already in the log", pending.call_id, pending.name)
                else:
                    self.stats.failed += 1
                    log.error(
                        "could not record call %s (%s): %s",
                        pending.call_id,
                        pending.name,
                        _first_line(exc),
                    )
                return self._done(pending, attempt)
            if self._guard is not None and self._guard() is not None:
                # The file went away during the write: it may have gone to the old file.
                # Apply it again to the file that comes back (see _Pending.replay).
                pending.again = True
                continue
            self.stats.written += 1
            if pending.journalled:
                self.stats.replayed += 1
            return self._done(pending, attempt)

    def _done(self, pending: _Pending, attempt: int) -> bool:
        with self._cond:
            self._in_flight = None
            if pending.journalled and self._journal_entries > 0:
                self._journal_entries -= 1
            if self._held is not None:
                log.info("call-log writes go through again (after %d tries)", attempt + 1)
                self._held = None
        return True

    def _wait(self, why: str, attempt: int, *, count: bool) -> None:
        """Back off before the next try; a new write queued meanwhile does not cut it short,
        :meth:`wake` and :meth:`close` do."""
        delay = (
            backoff(attempt, first=self._first_backoff, most=self._max_backoff)
            if count
            else min(self._max_backoff, 1.0)
        )
        with self._cond:
            self._held = why
            pokes = self._pokes
            deadline = time.monotonic() + delay
            while not self._abandon and self._pokes == pokes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    # --- the journal ----------------------------------------------------------------------

    def _spill(self, pending: list[_Pending], *, why: str, sync: bool = False) -> bool:
        """Append ``pending`` to the journal; False (and an ERROR) if it cannot be written."""
        lines = "".join(_encode(p) + "\n" for p in pending)
        with self._journal_lock:
            try:
                descriptor = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(descriptor, "a", encoding="utf-8") as journal:
                    journal.write(lines)
                    if sync:  # at close; a spill in flight only needs to outlive the process
                        journal.flush()
                        os.fsync(journal.fileno())
            except OSError as exc:
                log.error(
                    "cannot write the call-log journal %s (%s): %d writes kept in memory",
                    self.journal,
                    exc,
                    len(pending),
                )
                return False
        self.stats.spilled += len(pending)
        self._journal_entries += len(pending)
        log.debug("%d call-log writes journalled (%s)", len(pending), why)
        return True

    def _load(self, path: Path) -> Iterator[_Pending]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line, object_hook=_decode_value)
                write = self._writes[entry["write"]]
                yield _Pending(write, dict(entry["fields"]), journalled=True)
            except (ValueError, KeyError, TypeError) as exc:
                # A torn last line after a power cut; the rest is still replayed.
                self.stats.failed += 1
                self._journal_entries = max(0, self._journal_entries - 1)
                log.error("call-log journal %s line %d unreadable: %s", path, number, exc)


def _encode(pending: _Pending) -> str:
    return json.dumps(
        {"write": pending.name, "fields": pending.fields},
        default=_encode_value,
        ensure_ascii=False,
    )


def _encode_value(value: object) -> object:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"cannot journal a {type(value).__name__}")


def _decode_value(value: dict[str, Any]) -> object:
    if set(value) == {"$datetime"}:
        return datetime.fromisoformat(value["$datetime"])
    return value


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as file:
            return sum(1 for line in file if line.strip())
    except FileNotFoundError:
        return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:200]
