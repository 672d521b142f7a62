"""The database schema: staff and their login sessions, customers and their phones,
transactions, notes, calls.

SQLAlchemy 2 typed models. Every relationship is ``lazy="raise"``: a query says
what it loads, so the caller lookup stays one indexed query path however the
tables grow (docs/architecture.md, "Scale"). Datetimes are timezone-aware
everywhere in Python and UTC in the database. Things a person deletes
(customers, phones, transactions, notes) are soft-deleted with ``deleted_at``
so that nothing typed is lost and a delete can be undone.

This module knows tables and columns; it knows nothing of SIP, browsers or how
numbers are normalised (``e164`` columns hold what ``lookup.numbers`` produced).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

StaffRole = Literal["admin", "staff"]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware datetime, stored as UTC.

    PostgreSQL keeps ``timestamptz`` itself. SQLite has no time zones: SQLAlchemy
    stores the text of whatever it is given and hands back naive values, so the
    value is converted to UTC and stored naive (so that text order is time order
    for ``ORDER BY``/``<``), and read back as UTC. A naive datetime is refused:
    guessing its zone is how 09:00 JST becomes 09:00 UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# Stable constraint names, so Alembic migrations (batch mode on SQLite included)
# can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime()}


class Timestamped:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SoftDeleted:
    deleted_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Staff(Timestamped, Base):
    __tablename__ = "staff"
    __table_args__ = (CheckConstraint("role IN ('admin', 'staff')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    furigana: Mapped[str | None] = mapped_column(String(100))
    extension: Mapped[str | None] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), default="staff")
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)


class StaffSession(Base):
    """A login: the server side of one browser's session cookie.

    The cookie holds a random token; only its SHA-256 is stored (``token_hash``), so a
    copy of the database opens no sessions. A session is live while ``ended_at`` is
    NULL and ``expires_at`` is in the future; ending it (logout, expiry, deactivation,
    password change) sets ``ended_at`` and ``end_reason`` and keeps the row for the record.
    """

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # logout | expired | deactivated | password | replaced; NULL while live.
    end_reason: Mapped[str | None] = mapped_column(String(16), default=None)

    staff: Mapped[Staff] = relationship(lazy="raise")


class Customer(Timestamped, SoftDeleted, Base):
    __tablename__ = "customers"
    __table_args__ = (
        # The office's own customer number: optional, unique where set (re-imports match on it).
        Index(
            "ix_customers_code",
            "code",
            unique=True,
            sqlite_where=text("code IS NOT NULL"),
            postgresql_where=text("code IS NOT NULL"),
        ),
        # Search with nothing typed lists the most recently updated customers (db.search).
        Index("ix_customers_updated_at", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str | None] = mapped_column(String(32), default=None)
    name: Mapped[str] = mapped_column(String(200))
    furigana: Mapped[str | None] = mapped_column(String(200))
    honorific: Mapped[str | None] = mapped_column(String(16), default=None)  # 様 / 御中 …
    company: Mapped[str | None] = mapped_column(String(200))
    department: Mapped[str | None] = mapped_column(String(200), default=None)
    postal_code: Mapped[str | None] = mapped_column(String(16), default=None)
    address: Mapped[str | None] = mapped_column(Text, default=None)
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    # 連絡可能な時間帯, as the office writes it ("平日 10-17時").
    contact_hours: Mapped[str | None] = mapped_column(String(200), default=None)
    rank: Mapped[str | None] = mapped_column(String(16))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    preferences: Mapped[str | None] = mapped_column(Text)
    memo: Mapped[str | None] = mapped_column(Text)
    birthday: Mapped[dt.date | None] = mapped_column(Date)
    # The next time someone should contact them (a follow-up on the customer itself).
    next_follow_up_on: Mapped[dt.date | None] = mapped_column(Date, default=None)
    # What search-as-you-type matches (db.search): name, furigana, company, department, code
    # and email folded (NFKC, katakana to hiragana, lower case, no spaces), and the live
    # phones' national digits, each between spaces. Kept current on every ORM flush.
    search_text: Mapped[str | None] = mapped_column(Text, default=None)
    search_digits: Mapped[str | None] = mapped_column(Text, default=None)
    assigned_staff_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff.id", ondelete="SET NULL"), index=True
    )

    assigned_staff: Mapped[Staff | None] = relationship(lazy="raise")
    phones: Mapped[list[CustomerPhone]] = relationship(back_populates="customer", lazy="raise")
    transactions: Mapped[list[Transaction]] = relationship(back_populates="customer", lazy="raise")
    notes: Mapped[list[Note]] = relationship(back_populates="customer", lazy="raise")
    family: Mapped[list[FamilyMember]] = relationship(back_populates="customer", lazy="raise")


class FamilyMember(Timestamped, SoftDeleted, Base):
    """Someone in the customer's family (奥様 花子, 長男 太郎): name, relation, birthday."""

    __tablename__ = "family_members"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    furigana: Mapped[str | None] = mapped_column(String(100), default=None)
    relation: Mapped[str | None] = mapped_column(String(32), default=None)  # 妻 / 長男 …
    birthday: Mapped[dt.date | None] = mapped_column(Date, default=None)

    customer: Mapped[Customer] = relationship(back_populates="family", lazy="raise")


class CustomerPhone(Timestamped, SoftDeleted, Base):
    """A number a customer is reached on. Not unique: a family landline or a
    company switchboard (代表) is shared by several customers."""

    __tablename__ = "customer_phones"
    __table_args__ = (
        # The lookup's one index: live phones by number, carrying customer_id so the
        # join to customers starts from the index alone.
        Index(
            "ix_customer_phones_e164_live",
            "e164",
            "customer_id",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    e164: Mapped[str] = mapped_column(String(20))
    label: Mapped[str | None] = mapped_column(String(32))  # 自宅 / 携帯 / 会社 / 代表 …
    # The family member this number belongs to, when it is not the customer.
    owner_name: Mapped[str | None] = mapped_column(String(100))
    raw: Mapped[str | None] = mapped_column(String(64))  # as entered

    customer: Mapped[Customer] = relationship(back_populates="phones", lazy="raise")


class Transaction(Timestamped, SoftDeleted, Base):
    """A piece of work or sale (取引)."""

    __tablename__ = "transactions"
    __table_args__ = (
        # "newest first" reads this index backwards; both SQLite and PostgreSQL do that,
        # so a DESC column would add nothing (and SQLite does not reflect it).
        Index("ix_transactions_customer_date", "customer_id", "date", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    date: Mapped[dt.date] = mapped_column(Date)
    title: Mapped[str] = mapped_column(String(200))
    amount_yen: Mapped[int | None] = mapped_column()
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    memo: Mapped[str | None] = mapped_column(Text)

    customer: Mapped[Customer] = relationship(back_populates="transactions", lazy="raise")
    staff: Mapped[Staff | None] = relationship(lazy="raise")


class Note(Timestamped, SoftDeleted, Base):
    """A record of contact (対応履歴), linked to the call when written from a pop.

    ``idempotency_key`` is chosen by the browser for each note it writes: a retry of
    the same save finds the row instead of adding a second (unique; NULL for notes
    written before it existed). A correction keeps the earlier text as a
    :class:`NoteRevision`; ``updated_at`` says when the text last changed.
    """

    __tablename__ = "notes"
    __table_args__ = (
        Index("ix_notes_customer_created", "customer_id", "created_at", "id"),  # read backwards
        Index("ix_notes_idempotency_key", "idempotency_key", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    call_id: Mapped[str | None] = mapped_column(
        ForeignKey("calls.id", ondelete="SET NULL"), index=True
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(64), default=None)
    # 見積依頼 | 予約 | クレーム | 問い合わせ | その他 (checked by the API, not the table).
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    follow_up_on: Mapped[dt.date | None] = mapped_column(Date, default=None, index=True)
    # The follow-up was done (今日のフォロー ticked off): when and by whom.
    follow_up_done_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    follow_up_done_by: Mapped[int | None] = mapped_column(default=None)
    # call (written after a call, or for a call's customer) | visit | email | other.
    kind: Mapped[str] = mapped_column(String(16), default="call", server_default=text("'call'"))

    customer: Mapped[Customer] = relationship(back_populates="notes", lazy="raise")
    staff: Mapped[Staff | None] = relationship(lazy="raise")


class NoteRevision(Base):
    """An earlier text of a note: what it said before ``staff_id`` changed it at ``changed_at``."""

    __tablename__ = "note_revisions"
    __table_args__ = (Index("ix_note_revisions_note_changed", "note_id", "changed_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[int] = mapped_column(ForeignKey("notes.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="SET NULL"))
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who changed a record, when, and how: the row before and after (plain JSON values).

    ``entity`` is customer | phone | family | transaction | note; ``action`` is create |
    update | delete | restore | purge. ``customer_id`` is the customer the record belongs
    to, a plain id (no foreign key) so that the trail outlives a purge; so is ``staff_id``
    (NULL for the system: an import from the command line, the demo).
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_customer_at", "customer_id", "at", "id"),
        Index("ix_audit_log_at", "at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    staff_id: Mapped[int | None] = mapped_column(default=None)
    source: Mapped[str] = mapped_column(String(16), default="web")  # web | import | cli
    action: Mapped[str] = mapped_column(String(16))
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[int] = mapped_column()
    customer_id: Mapped[int | None] = mapped_column(default=None)
    before: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)


# Why a call is on the missed list: it ended like this with nobody answering.
MISSED_OUTCOMES = ("abandoned", "timeout")
_MISSED = text(
    "outcome IN ('abandoned', 'timeout') AND answered_by IS NULL AND answered_staff_id IS NULL"
)


class Call(Timestamped, Base):
    """The call log: one row per ringing call, written by the server, never by a person
    (except the missed-call follow-up: ``missed_*``)."""

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_caller_started", "caller_e164", "started_at"),
        Index("ix_calls_started_at", "started_at"),
        Index("ix_calls_customer_started", "customer_id", "started_at"),
        # The missed list: only unanswered calls, open ones (missed_status NULL) first.
        Index(
            "ix_calls_missed",
            "missed_status",
            "started_at",
            sqlite_where=_MISSED,
            postgresql_where=_MISSED,
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    sip_call_id: Mapped[str] = mapped_column(String(255), index=True)
    caller_e164: Mapped[str | None] = mapped_column(String(20))
    caller_raw: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    # Why no number: anonymous | payphone | unavailable | interaction; NULL = presented.
    withheld: Mapped[str | None] = mapped_column(String(16))
    dialed_e164: Mapped[str | None] = mapped_column(String(20))
    started_at: Mapped[dt.datetime] = mapped_column()
    ended_at: Mapped[dt.datetime | None] = mapped_column()
    state: Mapped[str] = mapped_column(String(16), default="ringing")  # ringing|answered|ended
    # answered_elsewhere | abandoned | timeout | hangup | interrupted (closed at start-up after
    # a crash); NULL while ringing.
    outcome: Mapped[str | None] = mapped_column(String(32))
    answered_by: Mapped[str | None] = mapped_column(String(16))  # extension
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"))
    # Who answered, and how callpop knows: claimed (pressed 応答 in the browser) |
    # identity | call-id | time-window (matched from the PBX's dialog events).
    answered_staff_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff.id", ondelete="SET NULL"), default=None
    )
    answered_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    answered_how: Mapped[str | None] = mapped_column(String(16), default=None)
    talk_seconds: Mapped[int | None] = mapped_column(default=None)  # answered_at to ended_at
    # The missed-call follow-up: NULL while open | called_back | no_action.
    missed_status: Mapped[str | None] = mapped_column(String(16), default=None)
    missed_resolved_by: Mapped[int | None] = mapped_column(
        ForeignKey("staff.id", ondelete="SET NULL"), default=None
    )
    missed_resolved_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    missed_note: Mapped[str | None] = mapped_column(Text, default=None)
    # The hand-over (転送メモ): from the person who answered to the 担当者, the note, and how
    # far it got (requested | ringing | answered). Plain ids: staff are never deleted.
    handover_from_staff_id: Mapped[int | None] = mapped_column(default=None)
    handover_to_staff_id: Mapped[int | None] = mapped_column(default=None)
    handover_to_extension: Mapped[str | None] = mapped_column(String(32), default=None)
    handover_state: Mapped[str | None] = mapped_column(String(16), default=None)
    handover_note: Mapped[str | None] = mapped_column(Text, default=None)
    # Known-customer routing: the 302's target (an extension, or a URI), the 担当者 when the
    # call went straight to them, and why (popup_ui.messages.RoutingReason).
    routed_to: Mapped[str | None] = mapped_column(String(255), default=None)
    routed_staff_id: Mapped[int | None] = mapped_column(default=None)
    routing_reason: Mapped[str | None] = mapped_column(String(32), default=None)

    customer: Mapped[Customer | None] = relationship(lazy="raise")


__all__ = [
    "AuditEntry",
    "Base",
    "Call",
    "Customer",
    "CustomerPhone",
    "FamilyMember",
    "MISSED_OUTCOMES",
    "Note",
    "NoteRevision",
    "Staff",
    "StaffRole",
    "StaffSession",
    "Transaction",
    "UTCDateTime",
    "utcnow",
]
