"""Database connections: the engine, sessions, and running the migrations.

Owns how callpop talks to SQLite (the default, one file, WAL) and PostgreSQL (by
URL): connection pragmas, timeouts, and ``migrate`` = Alembic ``upgrade head``
run in-process with the migrations shipped inside this package, so an installed
``callpop`` needs no ``alembic.ini`` on disk. Knows nothing of the tables'
meaning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# A PostgreSQL server that does not answer must not hold a worker thread for the
# OS's TCP timeout (minutes); the lookup has its own, much shorter, deadline.
_PG_CONNECT_TIMEOUT_S = 5


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (``sqlite:///callpop.db``), absolute; None for others."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None  # a URI the operator wrote: theirs to manage
    return Path(database).expanduser().resolve()


def make_engine(url: str, *, create_file: bool = True) -> Engine:
    """An engine for ``url``; for a SQLite file, its directory is created.

    ``create_file=False`` (the running service, after the migrations made the file):
    a connection opened when the file is gone fails ("unable to open database file")
    instead of creating an empty database at the path, which would take the place of
    the real one and hide that it is gone (docs/security.md, "The call log: nothing
    lost").
    """
    path = sqlite_file(url)
    if path is not None and not create_file:
        url = f"sqlite:///file:{quote(str(path))}?mode=rw&uri=true"
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # The lookup runs in worker threads; the pool hands each connection to one
        # thread at a time, so sqlite3's same-thread check only gets in the way.
        kwargs["connect_args"] = {"check_same_thread": False}
    elif parsed.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": _PG_CONNECT_TIMEOUT_S}
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers (the lookup) never wait for the writer (the call log).
        cursor.execute("PRAGMA journal_mode=WAL")
        # Writers queue for up to 5 s instead of failing at once with "database is locked".
        cursor.execute("PRAGMA busy_timeout=5000")
        # SQLite ignores foreign keys unless asked, per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL, much faster commits
    finally:
        cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (they are returned to callers),
    and keep the customers' search columns current on every flush (``db.search``)."""
    from db import search

    search.install()
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    """Alembic's config pointing at the migrations inside this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine_or_url: Engine | str) -> None:
    """Bring the database schema to the newest revision (Alembic ``upgrade head``)."""
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        with engine.begin() as connection:
            config = alembic_config()
            # env.py runs the migrations on this connection instead of opening its own.
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()
