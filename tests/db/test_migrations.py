"""The migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from db.engine import make_engine, make_session_factory, migrate
from db.models import Base, Call, Staff
from tests.fixtures_db import PostgresSchema

EXPECTED_TABLES = {
    "alembic_version",
    "staff",
    "customers",
    "customer_phones",
    "transactions",
    "notes",
    "calls",
    "sessions",
    "note_revisions",
    "family_members",
    "audit_log",
}


def check_migrated(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate(engine)
        migrate(engine)  # running again at the next start-up is a no-op
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == EXPECTED_TABLES
            assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0006"
            # The migration and the models describe the same schema (no autogenerate diff).
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            assert diff == []
            indexes = {i["name"]: i for i in inspect(connection).get_indexes("customer_phones")}
            assert indexes["ix_customer_phones_e164_live"]["column_names"] == [
                "e164",
                "customer_id",
            ]
        check_datetimes(make_session_factory(engine))
    finally:
        engine.dispose()


def check_datetimes(factory: object) -> None:
    from sqlalchemy.orm import sessionmaker

    assert isinstance(factory, sessionmaker)
    jst = dt.timezone(dt.timedelta(hours=9))
    started = dt.datetime(2026, 11, 22, 10, 31, 5, 123000, tzinfo=jst)
    with factory() as session:
        session.add(Call(id="c" * 32, sip_call_id="x@y", started_at=started))
        session.commit()
    with factory() as session:
        stored = session.scalar(select(Call.started_at))
        assert stored == started
        assert stored is not None and stored.utcoffset() == dt.timedelta(0)  # UTC, and aware
        # Comparisons in SQL see the same instant whatever the zone of the parameter.
        later = started.astimezone(dt.UTC) + dt.timedelta(milliseconds=1)
        assert session.scalar(select(Call.id).where(Call.started_at < later)) == "c" * 32
        assert session.scalar(select(Call.id).where(Call.started_at < started)) is None
        created = session.scalar(select(Call.created_at))
        assert created is not None and created.tzinfo is not None


def test_migrate_fresh_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "callpop.db"  # the directory is created
    check_migrated(f"sqlite:///{path}")
    assert path.is_file()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("PRAGMA journal_mode")) == "wal"
            assert connection.scalar(text("PRAGMA busy_timeout")) == 5000
            assert connection.scalar(text("PRAGMA foreign_keys")) == 1
    finally:
        engine.dispose()


def test_naive_datetimes_are_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'n.db'}")
    migrate(engine)
    try:
        with make_session_factory(engine)() as session:
            session.add(Call(id="d" * 32, sip_call_id="x", started_at=dt.datetime(2026, 1, 1)))
            with pytest.raises(Exception, match="naive datetime"):
                session.flush()
    finally:
        engine.dispose()


def test_migrate_accepts_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    migrate(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            assert session.scalar(select(Staff.id)) is None
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_migrate_fresh_postgres_schema() -> None:
    schema = PostgresSchema()
    try:
        check_migrated(schema.create())
    finally:
        schema.drop()


def _upgrade_0002_database_with_a_linked_note(url: str) -> None:
    """A 0002 database holding a note linked to a call, migrated up and back and up again.

    0003 copies ``calls`` on SQLite; 0004's downgrade drops columns: neither may unlink
    the note from its call (``ON DELETE SET NULL``)."""
    from alembic import command

    from db.engine import alembic_config

    engine = make_engine(url)
    try:

        def run(*how: str) -> None:
            with engine.begin() as connection:
                config = alembic_config()
                config.attributes["connection"] = connection
                getattr(command, how[0])(config, how[1])

        run("upgrade", "0002")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO staff (id, login, name, role, password_hash, active, created_at,"
                    " updated_at) VALUES (1, 's', 'S', 'staff', 'x', true, :t, :t)"
                ),
                {"t": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
            )
            connection.execute(
                text(
                    "INSERT INTO customers (id, name, tags, created_at, updated_at)"
                    " VALUES (1, '山田', '[]', :t, :t)"
                ),
                {"t": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
            )
            connection.execute(
                text(
                    "INSERT INTO calls (id, sip_call_id, started_at, state, created_at,"
                    " updated_at) VALUES ('c1', 'x@y', :t, 'ended', :t, :t)"
                ),
                {"t": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
            )
            connection.execute(
                text(
                    "INSERT INTO notes (id, customer_id, staff_id, body, call_id, created_at,"
                    " updated_at) VALUES (1, 1, 1, '見積', 'c1', :t, :t)"
                ),
                {"t": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
            )
        for step in (
            ("upgrade", "0003"),
            ("downgrade", "0002"),
            ("upgrade", "0004"),
            ("downgrade", "0003"),
            ("upgrade", "head"),
        ):
            run(*step)
            with engine.connect() as connection:
                # Copying calls on SQLite must not unlink the note (ON DELETE SET NULL).
                assert connection.scalar(text("SELECT call_id FROM notes")) == "c1", step
        with engine.connect() as connection:
            # Old notes get no tags (SQLite hands JSON back as text, PostgreSQL as a list).
            assert connection.scalar(text("SELECT tags FROM notes")) in ("[]", [])
    finally:
        engine.dispose()


def test_migrations_keep_notes_linked_to_their_calls_on_sqlite(tmp_path: Path) -> None:
    _upgrade_0002_database_with_a_linked_note(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.postgres
def test_migrations_keep_notes_linked_to_their_calls_on_postgres() -> None:
    schema = PostgresSchema()
    try:
        _upgrade_0002_database_with_a_linked_note(schema.create())
    finally:
        schema.drop()
