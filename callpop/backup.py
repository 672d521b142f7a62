"""Backups of the configured database, and the daily backup that keeps N generations.

SQLite: a consistent online copy through sqlite3's backup API, which copies the
database as of one moment while the service goes on writing (WAL: it is not held
up). PostgreSQL: ``pg_dump --format=custom``. Either way the copy goes to
``PATH.tmp`` first and is renamed over ``PATH`` only when complete, so ``PATH`` is
the last whole backup or nothing, never half of one.

Restore: SQLite is written back through the same backup API into the configured
file while holding an exclusive lock on it, so it is all or nothing; a database
that another process has open (a running ``callpop serve``) is refused rather
than changed under it. PostgreSQL: ``pg_restore --clean --if-exists
--single-transaction`` into the configured database. A backup is copied as it is
(an older schema stays older); a restore then migrates the database to the
current schema.

The scheduler (:func:`next_backup_at`, :func:`run_daily`) takes the clock and the
sleep as arguments, so it is tested without waiting. This module knows nothing of
the tables' meaning, nor of HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url

from db.engine import migrate, sqlite_file

log = logging.getLogger("callpop.backup")

TOKYO = ZoneInfo("Asia/Tokyo")
# Daily generations: callpop-20261122-030000.db (SQLite) or .dump (pg_dump custom format).
_GENERATION = re.compile(r"^callpop-(\d{8}-\d{6})\.(db|dump)$")
# A restore waits this long for another connection to let go before it refuses.
_RESTORE_LOCK_TIMEOUT_S = 2.0


class BackupError(Exception):
    """A backup or restore that did not happen; the message says why in one line.

    ``code`` follows the CLI: 1 a runtime failure, 2 bad input (a file that is not a
    backup, a missing tool).
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    size: int  # bytes


# --- one backup / one restore ---------------------------------------------------------------


def backup_database(url: str, path: Path) -> BackupResult:
    """Copy the database at ``url`` to ``path`` (atomic: ``path`` is whole or untouched)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        database = sqlite_file(url)
        if database is not None:
            _sqlite_backup(database, tmp)
        elif make_url(url).get_backend_name() == "postgresql":
            _pg_dump(url, tmp)
        else:
            raise BackupError(f"cannot back up a {make_url(url).get_backend_name()} database")
        tmp.chmod(0o600)  # every customer record is in it: callpop's user only
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return BackupResult(path=path, size=path.stat().st_size)


def restore_database(url: str, path: Path) -> None:
    """Replace the database at ``url`` with the backup at ``path``, then migrate it."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"{path}: no such backup file", code=2)
    database = sqlite_file(url)
    if database is not None:
        _sqlite_restore(path, database)
    elif make_url(url).get_backend_name() == "postgresql":
        _pg_restore(path, url)
    else:
        raise BackupError(f"cannot restore a {make_url(url).get_backend_name()} database")
    migrate(url)


def _sqlite_backup(database: Path, tmp: Path) -> None:
    if not database.is_file():
        raise BackupError(f"{database}: no such database file")
    tmp.unlink(missing_ok=True)
    # Read-only: a backup must never create or change the database it copies.
    source = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(tmp)
        try:
            # All pages in one step, inside one read transaction: the copy is the
            # database as of one moment. In WAL mode that reader never holds up the
            # writer; copied in several steps, every write in between would restart
            # the copy (https://sqlite.org/backup.html), and a busy office might never
            # let it finish.
            source.backup(target, pages=-1)
            # One self-contained file: no -wal beside it.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{database}: {exc}") from exc
    finally:
        source.close()


def _check_sqlite_backup(path: Path) -> None:
    """A callpop SQLite database that is whole, or BackupError (code 2)."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            [(integrity,)] = connection.execute("PRAGMA quick_check(1)").fetchall()
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: not a SQLite backup ({exc})", code=2) from exc
    if integrity != "ok":
        raise BackupError(f"{path}: damaged SQLite file ({integrity})", code=2)
    if "alembic_version" not in tables:
        raise BackupError(f"{path}: not a callpop database (no alembic_version table)", code=2)


def _sqlite_restore(path: Path, database: Path) -> None:
    _check_sqlite_backup(path)
    if database.exists() and path.resolve() == database.resolve():
        raise BackupError(f"{path}: is the configured database itself", code=2)
    database.parent.mkdir(parents=True, exist_ok=True)
    target = sqlite3.connect(database, timeout=_RESTORE_LOCK_TIMEOUT_S, isolation_level=None)
    try:
        # Held until close: in WAL mode every open connection holds a shared lock on
        # the file, so getting this exclusive lock means nobody else has it open.
        target.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            target.execute("BEGIN EXCLUSIVE")
            target.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise BackupError(
                f"{database}: in use by another process (is callpop serve running? "
                f"stop it, then restore) ({exc})"
            ) from exc
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            # Written through the target's journal: a crash leaves the old database.
            source.backup(target)
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{database}: restore failed ({exc})") from exc
    finally:
        target.close()


# --- PostgreSQL: pg_dump / pg_restore ------------------------------------------------------


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} not found: install the PostgreSQL client tools "
            "(Debian/Ubuntu: apt-get install postgresql-client)",
            code=2,
        )
    return found


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The SQLAlchemy URL as a libpq connection URI, and the environment to run with:
    the password goes in PGPASSWORD, not on a command line others can read."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run_pg(command: list[str], env: dict[str, str]) -> None:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BackupError(f"{command[0]}: {exc}") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit {done.returncode}"
        raise BackupError(f"{Path(command[0]).name} failed: {detail}")


def _pg_dump(url: str, tmp: Path) -> None:
    dsn, env = _libpq(url)
    tmp.unlink(missing_ok=True)
    _run_pg([_pg_tool("pg_dump"), "--format=custom", f"--file={tmp}", f"--dbname={dsn}"], env)


def _pg_restore(path: Path, url: str) -> None:
    dsn, env = _libpq(url)
    tool = _pg_tool("pg_restore")
    # --list reads the archive only: a file that is not a pg_dump archive is bad input.
    try:
        listed = subprocess.run([tool, "--list", str(path)], capture_output=True, check=False)
    except OSError as exc:
        raise BackupError(f"{tool}: {exc}") from exc
    if listed.returncode != 0:
        raise BackupError(f"{path}: not a pg_dump custom-format backup", code=2)
    _run_pg(
        [
            tool,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",  # all or nothing
            "--exit-on-error",
            f"--dbname={dsn}",
            str(path),
        ],
        env,
    )


def _fsync(path: Path) -> None:
    with path.open("rb") as file:
        os.fsync(file.fileno())


# --- generations and the daily schedule ----------------------------------------------------


def generation_path(directory: Path, url: str, now: datetime) -> Path:
    """Where the daily backup taken at ``now`` goes."""
    suffix = "db" if sqlite_file(url) is not None else "dump"
    return directory / f"callpop-{now.astimezone(TOKYO):%Y%m%d-%H%M%S}.{suffix}"


def prune_generations(directory: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` daily backups in ``directory``; return the removed.

    Only files named like :func:`generation_path` are counted or touched.
    """
    found = sorted(
        (match.group(1), entry)
        for entry in directory.iterdir()
        if (match := _GENERATION.match(entry.name)) and entry.is_file()
    )
    old = [entry for _, entry in found[: max(len(found) - keep, 0)]]
    for entry in old:
        entry.unlink(missing_ok=True)
    return old


def next_backup_at(now: datetime, daily_at: time, tz: ZoneInfo = TOKYO) -> datetime:
    """The first ``daily_at`` (wall clock in ``tz``) strictly after ``now``."""
    local = now.astimezone(tz)
    candidate = datetime.combine(local.date(), daily_at, tzinfo=tz)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), daily_at, tzinfo=tz)
    return candidate


def parse_daily_at(text: str) -> time:
    """``"03:00"`` -> 03:00; ValueError otherwise."""
    hours, _, minutes = text.partition(":")
    return time(int(hours), int(minutes))


@dataclass(slots=True)
class BackupStatus:
    """What /healthz reports of the daily backup."""

    enabled: bool = False
    last_ok_at: datetime | None = None
    last_path: str | None = None
    last_error: str | None = None
    written: int = 0
    failures: int = 0


def take_generation(
    url: str, directory: Path, keep: int, now: datetime, status: BackupStatus
) -> None:
    """One daily backup: copy, prune, and record the outcome in ``status`` and the log."""
    try:
        result = backup_database(url, generation_path(directory, url, now))
        removed = prune_generations(directory, keep)
    except (BackupError, OSError) as exc:
        status.failures += 1
        status.last_error = str(exc)[:300]
        log.error("daily backup failed: %s", status.last_error)
        return
    status.written += 1
    status.last_ok_at = now
    status.last_path = str(result.path)
    status.last_error = None
    log.info(
        "backup written: %s (%d bytes; %d old generation(s) removed)",
        result.path,
        result.size,
        len(removed),
    )


async def run_daily(
    url: str,
    directory: Path,
    *,
    daily_at: time,
    keep: int,
    status: BackupStatus,
    now: Callable[[], datetime],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Forever: wait for the next ``daily_at``, take a generation (in a thread), repeat."""
    status.enabled = True
    while True:
        due = next_backup_at(now(), daily_at)
        # Waits in short slices: a suspended laptop or a clock change is noticed.
        while (left := (due - now()).total_seconds()) > 0:
            await sleep(min(left, 60.0))
        await asyncio.to_thread(take_generation, url, directory, keep, now(), status)
