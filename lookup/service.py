"""The caller lookup: a raw number in, a :class:`~lookup.card.CallerCard` out, on time.

Owns the queries behind a pop and the deadline around them. The query path is
fixed whatever the table sizes (docs/architecture.md, "Scale"):

1. live phones with this E.164, joined to their (live) customers and assigned
   staff — the partial index ``ix_customer_phones_e164_live``;
2. the last N transactions and 3. the last N notes of all matched customers,
   one query each — a UNION ALL of one ``ORDER BY … LIMIT N`` per customer, each
   walking ``ix_transactions_customer_date`` / ``ix_notes_customer_created``
   backwards and stopping after N rows (works on SQLite and PostgreSQL alike,
   unlike LATERAL; cheaper than a window over a customer's whole history);
4. calls from this number before ``now`` (count, latest) — ``ix_calls_caller_started``;
5. the latest call per matched customer — ``ix_calls_customer_started``;
6. the matched customers' family birthdays and open follow-ups due by today, one
   UNION ALL (``ix_family_members_customer_id``, ``ix_notes_customer_created``): what
   the conversation openers (lookup/openers.py) need beyond 1-5.

An unknown number costs queries 1 and 4. The openers are computed from these rows
in the same worker-thread pass, under the same deadline. Withheld numbers, extensions and
unreadable numbers cost nothing and never wait for the database. The statements are
built once with bound parameters and run as Core statements on the session's
connection; tests/lookup checks SQLite's plan for each of them.

``card_for`` runs the blocking work in a worker thread under an asyncio deadline:
when the database is slow, locked or down the pop still goes out, with the
number alone and a message saying why (DESIGN: "A lookup has a deadline"). A read
that was only slow still finishes in its thread, and its card is handed to the
caller as a future it awaits, so the pop can be completed while the phone rings.

Knows phone numbers and records; knows nothing of SIP or browsers.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Result,
    Row,
    Select,
    bindparam,
    func,
    literal,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Call, Customer, CustomerPhone, FamilyMember, Note, Staff, Transaction
from lookup.card import (
    CallerCard,
    CardStatus,
    CustomerCard,
    DegradedReason,
    NoteLine,
    StaffRef,
    TransactionLine,
)
from lookup.numbers import Number, Numbering
from lookup.openers import CustomerFacts, DueFollowUp, FamilyFact, OpenerRules, openers_for

log = logging.getLogger(__name__)

_AnySelect = Select[*tuple[Any, ...]]

# Dates ("today", birthdays, days since contact) are the office's dates.
TOKYO = ZoneInfo("Asia/Tokyo")
# Colleagues named when the 担当者 cannot take the call (from the notes already read).
RECENT_STAFF = 2
# Family birthdays and open follow-ups read for one pop, at most (query 6).
EXTRAS_MAX = 200


@dataclass(frozen=True, slots=True)
class Lookup:
    """What :meth:`CallerLookup.card_for` found in time, and what may follow.

    ``late`` is set when the read missed its deadline and goes on: it resolves to the
    card the read found (or raises its error). The caller awaits it to complete the
    pop; nothing calls back into the caller from the worker thread.
    """

    card: CallerCard
    late: asyncio.Future[CallerCard] | None = None


class CallerLookup:
    """Builds caller cards from the database, on the office's numbering plan."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        numbering: Numbering = Numbering(),  # noqa: B008 (frozen: one shared default is fine)
        timeout: float = 0.3,
        history: int = 5,
        rules: OpenerRules = OpenerRules(),  # noqa: B008 (frozen)
    ) -> None:
        self._session_factory = session_factory
        self._rules = rules
        self.numbering = numbering
        self._timeout = timeout
        self._history = history
        self.timeouts = 0  # lookups that missed their deadline
        self.failures = 0  # lookups the database (or a bug) failed

    # --- async, with the deadline -----------------------------------------------------

    async def card_for(
        self,
        number: Number,
        *,
        withheld: str | None = None,
        now: dt.datetime,
        keep_late: bool = True,
    ) -> Lookup:
        """The card for a ringing call; never raises, never takes much longer than ``timeout``.

        ``number`` comes from :meth:`Numbering.normalise` (the caller normalises once).
        A lookup that misses its deadline is not abandoned: the database read goes on
        in its worker thread (bounded by the database's own timeouts, see
        :meth:`_bound_statements` and ``busy_timeout``), and the returned ``late``
        future resolves to its card. With ``keep_late=False`` (a person's ad-hoc
        lookup) the late read is left to finish unobserved.
        """
        offline = _card_without_database(number, withheld)
        if offline is not None:
            return Lookup(offline)
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(None, self._card_for_e164, number, now)
        try:
            # asyncio.wait, not wait_for: on the deadline the read must go on.
            await asyncio.wait({work}, timeout=self._timeout)
        except asyncio.CancelledError:
            work.add_done_callback(_observe)
            raise
        if not work.done():
            self.timeouts += 1
            log.warning("caller lookup timed out after %d ms", round(self._timeout * 1000))
            if keep_late:
                late: asyncio.Future[CallerCard] | None = work
            else:
                work.add_done_callback(_observe)
                late = None
            why = DegradedReason.TIMEOUT
            detail = f"lookup timed out after {round(self._timeout * 1000)} ms"
        else:
            late = None
            try:
                return Lookup(work.result())
            except SQLAlchemyError as exc:
                self.failures += 1
                log.warning("caller lookup failed: database: %s", _short_reason(exc))
                why, detail = DegradedReason.DATABASE, f"database unavailable: {_short_reason(exc)}"
            except Exception as exc:
                self.failures += 1
                log.exception("caller lookup failed")
                why, detail = DegradedReason.ERROR, f"lookup failed: {_short_reason(exc)}"
        card = CallerCard(
            status=CardStatus.DEGRADED,
            number=number.e164,
            national=number.national,
            raw_number=number.raw,
            degraded_reason=why,
            message=detail,
        )
        return Lookup(card, late)

    # --- sync, may raise database errors --------------------------------------------

    def card_for_number(
        self, raw: str | None, *, withheld: str | None = None, now: dt.datetime
    ) -> CallerCard:
        """The card for ``raw`` at ``now`` (aware); blocking, database errors propagate."""
        number = self.numbering.normalise(raw)
        offline = _card_without_database(number, withheld)
        if offline is not None:
            return offline
        return self._card_for_e164(number, now)

    def _card_for_e164(self, number: Number, now: dt.datetime) -> CallerCard:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        e164 = number.e164
        assert e164 is not None
        # Core statements on the session's connection: the queries name their columns,
        # so the ORM's execution layer would only add cost to the hot path.
        with self._session_factory() as session:
            connection = session.connection()
            self._bound_statements(connection)
            matches = _phones_for(connection, e164)
            previous_calls, last_call_at = _calls_from(connection, e164, now)
            customers: list[CustomerCard] = []
            if matches:
                ids = [m.id for m in matches]
                transactions = _transactions_of(connection, ids, self._history)
                notes, writers = _notes_of(connection, ids, self._history)
                customer_calls = _latest_call_per_customer(connection, ids, now)
                today = now.astimezone(TOKYO).date()
                family, follow_ups = _extras_of(connection, ids, today)
                if len(matches) == 1 and last_call_at is not None:
                    # A number of exactly one customer: its calls are that customer's
                    # calls, even those logged before the number was entered.
                    only = ids[0]
                    customer_calls[only] = max(customer_calls.get(only, last_call_at), last_call_at)
                customers = [
                    _customer_card(
                        m,
                        transactions=transactions.get(m.id, []),
                        notes=notes.get(m.id, []),
                        writers=writers.get(m.id, []),
                        last_call_at=customer_calls.get(m.id),
                        family=family.get(m.id, []),
                        follow_ups=follow_ups.get(m.id, []),
                        today=today,
                        rules=self._rules,
                    )
                    for m in matches
                ]
        return CallerCard(
            status=CardStatus.MATCHED if customers else CardStatus.UNKNOWN,
            number=e164,
            national=number.national,
            raw_number=number.raw,
            customers=customers,
            previous_calls=previous_calls,
            last_call_at=_local(last_call_at),
        )

    def _bound_statements(self, connection: Connection) -> None:
        # PostgreSQL: a lookup that has missed its deadline must not hold a worker
        # thread and a pooled connection for as long as a lock is held elsewhere.
        # SET LOCAL lasts until the end of this read-only transaction.
        if connection.dialect.name == "postgresql":
            bound_ms = max(1000, round(self._timeout * 1000 * 4))
            connection.execute(text(f"SET LOCAL statement_timeout = {bound_ms}"))


# --- queries -------------------------------------------------------------------------


# The statements are built once, from the tables (not the ORM classes), with bound
# parameters: a lookup then costs the round-trips and little else. Building a
# statement per lookup, and running ORM-annotated ones, cost ~1 ms in SQLAlchemy alone,
# twenty times the time SQLite spent answering (bench/README.md).
_phones = CustomerPhone.__table__.c
_customers = Customer.__table__.c
_staff = Staff.__table__.c
_calls = Call.__table__.c
_transactions = Transaction.__table__.c
_notes = Note.__table__.c
_family = FamilyMember.__table__.c

# One row per (customer, matching phone): the customer, the phone's label and owner,
# and the assigned staff.
_MATCHES = (
    select(
        _customers.id,
        _customers.name,
        _customers.furigana,
        _customers.honorific,
        _customers.company,
        _customers.contact_hours,
        _customers.next_follow_up_on,
        _customers.rank,
        _customers.tags,
        _customers.preferences,
        _customers.memo,
        _customers.birthday,
        _phones.label.label("phone_label"),
        _phones.owner_name.label("phone_owner"),
        _staff.id.label("staff_id"),
        _staff.name.label("staff_name"),
        _staff.furigana.label("staff_furigana"),
        _staff.extension.label("staff_extension"),
    )
    .select_from(
        CustomerPhone.__table__.join(
            Customer.__table__, _customers.id == _phones.customer_id
        ).outerjoin(Staff.__table__, _staff.id == _customers.assigned_staff_id)
    )
    .where(
        _phones.e164 == bindparam("e164"),
        _phones.deleted_at.is_(None),
        _customers.deleted_at.is_(None),
    )
    .order_by(_customers.id, _phones.id)
)

# Calls from this number before `now` (the ringing call itself may already be logged).
_CALLS_FROM = select(func.count(), func.max(_calls.started_at)).where(
    _calls.caller_e164 == bindparam("e164"), _calls.started_at < bindparam("now")
)

_LATEST_CALL_PER_CUSTOMER = (
    select(_calls.customer_id, func.max(_calls.started_at))
    .where(
        _calls.customer_id.in_(bindparam("ids", expanding=True)),
        _calls.started_at < bindparam("now"),
    )
    .group_by(_calls.customer_id)
)


# The openers' extra facts of the matched customers, one statement: family members
# with a birthday, and notes whose follow-up is due by today and not done. ``text`` is
# the family member's name or the note's body; ``day`` the birthday or the due date.
_EXTRAS: CompoundSelect[*tuple[Any, ...]] = (
    union_all(
        select(
            _family.customer_id,
            literal("family").label("kind"),
            _family.name.label("text"),
            _family.relation,
            _family.birthday.label("day"),
        ).where(
            _family.customer_id.in_(bindparam("ids", expanding=True)),
            _family.deleted_at.is_(None),
            _family.birthday.is_not(None),
        ),
        select(
            _notes.customer_id,
            literal("note").label("kind"),
            _notes.body.label("text"),
            null().label("relation"),
            _notes.follow_up_on.label("day"),
        ).where(
            _notes.customer_id.in_(bindparam("ids", expanding=True)),
            _notes.deleted_at.is_(None),
            _notes.follow_up_done_at.is_(None),
            _notes.follow_up_on <= bindparam("today"),
        ),
    )
    .order_by("kind", "day", "customer_id")
    .limit(EXTRAS_MAX)
)


@functools.lru_cache(maxsize=32)
def _latest_transactions(customers: int, history: int) -> _AnySelect:
    """The last ``history`` transactions of each of ``customers`` customers (``c0``…)."""
    return _union_of_limited(
        [
            select(
                _transactions.customer_id,
                _transactions.id,
                _transactions.date,
                _transactions.title,
                _transactions.amount_yen,
            )
            .where(
                _transactions.customer_id == bindparam(f"c{n}"),
                _transactions.deleted_at.is_(None),
            )
            .order_by(_transactions.date.desc(), _transactions.id.desc())
            .limit(history)
            for n in range(customers)
        ]
    )


@functools.lru_cache(maxsize=32)
def _latest_notes(customers: int, history: int) -> _AnySelect:
    """The last ``history`` notes of each of ``customers`` customers, with the writer."""
    return _union_of_limited(
        [
            select(
                _notes.customer_id,
                _notes.id,
                _notes.created_at,
                _notes.updated_at,
                _notes.body,
                _notes.staff_id,
                _staff.name.label("staff_name"),
                _staff.furigana.label("staff_furigana"),
                _staff.extension.label("staff_extension"),
                _staff.active.label("staff_active"),
            )
            .select_from(Note.__table__.outerjoin(Staff.__table__, _staff.id == _notes.staff_id))
            .where(_notes.customer_id == bindparam(f"c{n}"), _notes.deleted_at.is_(None))
            .order_by(_notes.created_at.desc(), _notes.id.desc())
            .limit(history)
            for n in range(customers)
        ]
    )


def _union_of_limited(branches: list[_AnySelect]) -> _AnySelect:
    # Each branch is wrapped in a subquery: SQLite allows ORDER BY/LIMIT only on
    # the whole compound statement, not on its members.
    wrapped = [select(branch.subquery()) for branch in branches]
    if len(wrapped) == 1:
        return wrapped[0]
    return select(union_all(*wrapped).subquery())


def _customer_params(customer_ids: list[int]) -> dict[str, int]:
    return {f"c{n}": customer_id for n, customer_id in enumerate(customer_ids)}


def _phones_for(connection: Connection, e164: str) -> list[Row[Any]]:
    matches: dict[int, Row[Any]] = {}
    rows: Result[Any] = connection.execute(_MATCHES, {"e164": e164})
    for row in rows:
        # The same number entered twice for one customer (自宅 and FAX…): one card, first label.
        matches.setdefault(row.id, row)
    return list(matches.values())


def _calls_from(
    connection: Connection, e164: str, now: dt.datetime
) -> tuple[int, dt.datetime | None]:
    count, latest = connection.execute(_CALLS_FROM, {"e164": e164, "now": now}).one()
    return int(count), _aware(latest)


def _latest_call_per_customer(
    connection: Connection, customer_ids: list[int], now: dt.datetime
) -> dict[int, dt.datetime]:
    found: dict[int, dt.datetime] = {}
    rows = connection.execute(_LATEST_CALL_PER_CUSTOMER, {"ids": customer_ids, "now": now})
    for customer_id, latest in rows:
        aware = _aware(latest)
        if customer_id is not None and aware is not None:
            found[customer_id] = aware
    return found


def _extras_of(
    connection: Connection, customer_ids: list[int], today: dt.date
) -> tuple[dict[int, list[FamilyFact]], dict[int, list[DueFollowUp]]]:
    family: dict[int, list[FamilyFact]] = {}
    follow_ups: dict[int, list[DueFollowUp]] = {}
    for row in connection.execute(_EXTRAS, {"ids": customer_ids, "today": today}):
        day = _date(row.day)
        if row.kind == "family":
            family.setdefault(row.customer_id, []).append(
                FamilyFact(name=row.text, relation=row.relation, birthday=day)
            )
        else:
            follow_ups.setdefault(row.customer_id, []).append(DueFollowUp(due=day, body=row.text))
    return family, follow_ups


def _transactions_of(
    connection: Connection, customer_ids: list[int], history: int
) -> dict[int, list[TransactionLine]]:
    statement = _latest_transactions(len(customer_ids), history)
    found: dict[int, list[TransactionLine]] = {}
    for row in connection.execute(statement, _customer_params(customer_ids)):
        found.setdefault(row.customer_id, []).append(
            TransactionLine(date=row.date, title=row.title, amount=row.amount_yen)
        )
    for lines in found.values():
        lines.sort(key=lambda line: line.date, reverse=True)  # UNION ALL keeps no order
    return found


def _notes_of(
    connection: Connection, customer_ids: list[int], history: int
) -> tuple[dict[int, list[NoteLine]], dict[int, list[StaffRef]]]:
    """Each customer's last notes, newest first, and the staff who wrote them: who
    handled the customer most recently, newest first, each once (active staff only)."""
    statement = _latest_notes(len(customer_ids), history)
    rows = list(connection.execute(statement, _customer_params(customer_ids)))
    rows.sort(key=lambda row: (row.created_at, row.id), reverse=True)
    found: dict[int, list[NoteLine]] = {}
    writers: dict[int, dict[int, StaffRef]] = {}
    for row in rows:
        if row.staff_id is not None and row.staff_active:
            writers.setdefault(row.customer_id, {}).setdefault(
                row.staff_id,
                StaffRef(
                    id=row.staff_id,
                    name=row.staff_name,
                    furigana=row.staff_furigana,
                    extension=row.staff_extension,
                ),
            )
        found.setdefault(row.customer_id, []).append(
            NoteLine(
                at=_aware_local(row.created_at),
                staff_name=row.staff_name,
                body=row.body,
                id=row.id,
                # The text is the only thing a note changes (db.notes.correct_note).
                corrected_at=(
                    _aware_local(row.updated_at)
                    if row.updated_at is not None and row.updated_at > row.created_at
                    else None
                ),
            )
        )
    return found, {customer: list(staff.values()) for customer, staff in writers.items()}


def _observe(work: asyncio.Future[CallerCard]) -> None:
    """Done-callback of a late read nobody waits for: retrieve its outcome, log a failure."""
    if not work.cancelled() and (error := work.exception()) is not None:
        log.info("late caller lookup failed too: %s", _short_reason(error))


# --- card building -------------------------------------------------------------------


def _card_without_database(number: Number, withheld: str | None) -> CallerCard | None:
    # No number and no reason given is still a caller who did not show a number.
    if withheld or number.kind == "none":
        return CallerCard(
            status=CardStatus.WITHHELD, number=None, national=None, raw_number=number.raw
        )
    status = {
        "extension": CardStatus.INTERNAL,
        "invalid": CardStatus.INVALID,
    }.get(number.kind)
    if status is None:
        return None
    return CallerCard(status=status, number=None, national=number.national, raw_number=number.raw)


def _customer_card(
    match: Row[Any],
    *,
    transactions: list[TransactionLine],
    notes: list[NoteLine],
    writers: list[StaffRef],
    last_call_at: dt.datetime | None,
    family: list[FamilyFact],
    follow_ups: list[DueFollowUp],
    today: dt.date,
    rules: OpenerRules,
) -> CustomerCard:
    contacts = [note.at for note in notes[:1]]
    if transactions:
        # A transaction's date is an office date: count it from the start of that day.
        first = transactions[0].date
        contacts.append(dt.datetime(first.year, first.month, first.day, tzinfo=TOKYO))
    if last_call_at is not None:
        contacts.append(last_call_at)
    last_contact = max(contacts, default=None)
    if match.next_follow_up_on is not None:
        follow_ups = [*follow_ups, DueFollowUp(due=_date(match.next_follow_up_on))]
    facts = CustomerFacts(
        today=today,
        rank=match.rank,
        birthday=match.birthday,
        preferences=match.preferences,
        last_transaction=(transactions[0].date, transactions[0].title) if transactions else None,
        last_contact_on=last_contact.astimezone(TOKYO).date() if last_contact else None,
        family=tuple(family),
        follow_ups=tuple(follow_ups),
    )
    return CustomerCard(
        id=match.id,
        name=match.name,
        furigana=match.furigana,
        honorific=match.honorific,
        company=match.company,
        rank=match.rank,
        tags=list(match.tags or []),
        preferences=match.preferences,
        memo=match.memo,
        phone_label=match.phone_label,
        phone_owner=match.phone_owner,
        assigned_staff=(
            StaffRef(
                id=match.staff_id,
                name=match.staff_name,
                furigana=match.staff_furigana,
                extension=match.staff_extension,
            )
            if match.staff_id is not None
            else None
        ),
        transactions=transactions,
        notes=notes,
        # Who else to name when the 担当者 cannot take the call now.
        recent_staff=[w for w in writers if w.id != match.staff_id][:RECENT_STAFF],
        last_contact_at=_local(last_contact),
        days_since_contact=(
            (today - last_contact.astimezone(TOKYO).date()).days if last_contact else None
        ),
        birthday_today=_is_birthday(match.birthday, today),
        contact_hours=match.contact_hours,
        openers=openers_for(facts, rules),
    )


def _is_birthday(birthday: dt.date | None, today: dt.date) -> bool:
    if birthday is None:
        return False
    if (birthday.month, birthday.day) == (today.month, today.day):
        return True
    # Born on 29 February: celebrated on the 28th in common years.
    if (birthday.month, birthday.day) != (2, 29) or (today.month, today.day) != (2, 28):
        return False
    return not calendar.isleap(today.year)


def _date(value: dt.date | str) -> dt.date:
    # A date out of a UNION on SQLite may come back as its ISO text.
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # Aggregates (max) bypass the column type on SQLite and come back naive UTC text.
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _aware_local(value: dt.datetime) -> dt.datetime:
    aware = _aware(value)
    assert aware is not None
    return aware.astimezone(TOKYO)


def _local(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(TOKYO) if value is not None else None


def _short_reason(exc: BaseException) -> str:
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(inner).strip().splitlines()
    first = lines[0] if lines else type(inner).__name__
    return first if len(first) <= 160 else first[:157] + "…"
