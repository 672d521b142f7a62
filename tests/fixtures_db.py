"""Real databases for the db/ and lookup/ tests: a fresh SQLite file or a PostgreSQL schema.

``database`` (imported by tests/db/conftest.py and tests/lookup/conftest.py) is
parametrised over both backends. PostgreSQL gets one uniquely named schema per
test run, migrated once and emptied before each test; it is dropped at the end.
A PostgreSQL that cannot be reached fails the test with the URL, never skips.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory, migrate
from db.models import Customer, CustomerPhone, Note, Staff, Transaction

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TABLES = (
    "audit_log",
    "family_members",
    "note_revisions",
    "notes",
    "transactions",
    "calls",
    "customer_phones",
    "customers",
    "staff",
)
UTC = dt.UTC


def postgres_url() -> str:
    return os.environ.get("CALLPOP_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def with_search_path(url: str, schema: str) -> str:
    parsed = make_url(url)
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


def admin_engine() -> Engine:
    """An engine on the test PostgreSQL; fails the test when it does not answer."""
    url = postgres_url()
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        shown = make_url(url).render_as_string(hide_password=True)
        pytest.fail(
            f"PostgreSQL not reachable at {shown} — start it or set CALLPOP_TEST_POSTGRES_URL"
            f" ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        )
    return engine


@dataclass(frozen=True, slots=True)
class Database:
    backend: str
    url: str
    engine: Engine
    session_factory: sessionmaker[Session]


class PostgresSchema:
    """A uniquely named schema on the test server, created on demand, dropped at close."""

    def __init__(self) -> None:
        self.name = f"callpop_test_{uuid.uuid4().hex[:12]}"
        self._admin: Engine | None = None

    def create(self) -> str:
        if self._admin is None:
            self._admin = admin_engine()
        with self._admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{self.name}"'))
        return with_search_path(postgres_url(), self.name)

    def drop(self) -> None:
        if self._admin is not None:
            with self._admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
            self._admin.dispose()


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    schema = PostgresSchema()
    try:
        url = schema.create()
        migrate(url)
        yield url
    finally:
        schema.drop()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'callpop.db'}"
        engine = make_engine(url)
        migrate(engine)
    else:
        url = request.getfixturevalue("migrated_postgres")
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    try:
        yield Database(request.param, url, engine, make_session_factory(engine))
    finally:
        engine.dispose()


# --- building records without the demo ------------------------------------------------

# A syntactically valid argon2 hash nobody knows the password of: building staff for
# lookup tests should not pay for hashing.
NO_PASSWORD = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$" + "A" * 43


def add_staff(session: Session, name: str, extension: str | None, login: str) -> Staff:
    staff = Staff(login=login, name=name, extension=extension, password_hash=NO_PASSWORD)
    session.add(staff)
    session.flush()
    return staff


def add_customer(
    session: Session,
    name: str,
    *phones: tuple[str, str] | tuple[str, str, str | None],
    staff: Staff | None = None,
    **fields: Any,
) -> Customer:
    """A customer with phones given as (e164, label[, owner_name])."""
    customer = Customer(name=name, assigned_staff_id=staff.id if staff else None, **fields)
    session.add(customer)
    session.flush()
    for phone in phones:
        e164, label = phone[0], phone[1]
        owner = phone[2] if len(phone) > 2 else None
        session.add(
            CustomerPhone(customer_id=customer.id, e164=e164, label=label, owner_name=owner)
        )
    session.flush()
    return customer


def add_transaction(
    session: Session, customer: Customer, day: dt.date, title: str, amount: int | None = None
) -> Transaction:
    row = Transaction(customer_id=customer.id, date=day, title=title, amount_yen=amount)
    session.add(row)
    session.flush()
    return row


def add_note(
    session: Session, customer: Customer, at: dt.datetime, body: str, staff: Staff | None = None
) -> Note:
    row = Note(
        customer_id=customer.id,
        staff_id=staff.id if staff else None,
        body=body,
        created_at=at,
        updated_at=at,
    )
    session.add(row)
    session.flush()
    return row


@contextlib.contextmanager
def sqlite_locked(path: str | Path) -> Iterator[threading.Event]:
    """Keep every other connection to the SQLite file ``path`` waiting, WAL readers too,
    until the yielded event is set or the block ends.

    WAL readers never wait for a writer, but a connection in EXCLUSIVE locking mode
    that has written keeps every other connection out until it closes. Taking that lock
    needs every other connection closed: dispose the engines on the file first.
    """
    release = threading.Event()
    locked = threading.Event()

    def hold() -> None:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("PRAGMA locking_mode=EXCLUSIVE")
            holder.execute("BEGIN EXCLUSIVE")
            holder.execute("UPDATE staff SET name = name")
            holder.execute("COMMIT")
            locked.set()
            release.wait(30)
        finally:
            holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(10), f"could not lock {path}"
        yield release
    finally:
        release.set()
        thread.join(30)
