"""The call log: writing a call when it rings, when its customer is known, who answered,
and when it ends; reading it back page by page; the missed calls and their follow-up.

The server calls these from the call log's own writer thread
(``callpop.calllog.CallLog``) after the pop has gone out; the caller commits. At
start-up, :func:`close_interrupted_calls` ends the calls a crash left open. Knows
nothing of SIP: ids, numbers and outcomes arrive as plain values.

The statements are Core, built once against the table: a call row needs no identity
map or unit of work, and these writes run in threads that share the interpreter with
the event loop sending pops (bench/README.md).

The reads (:func:`call_page`, :func:`missed_calls`) and the follow-up write
(:func:`resolve_missed`) serve the staff API; they return plain dicts of native values
and take numbers already normalised (E.164).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement

from db.models import MISSED_OUTCOMES, Call, Customer, Note, Staff

log = logging.getLogger(__name__)

_table = cast(Table, Call.__table__)  # a declarative class's table (typed FromClause)
_calls = _table.c

# The outcome of a call whose end the service never saw: it crashed or was killed
# (kill -9, a power cut) while the call rang.
INTERRUPTED = "interrupted"

_STARTED = insert(_table)

# Bound parameter names differ from the column names: SQLAlchemy keeps those for the
# SET clause.
_BY_ID = _calls.id == bindparam("call_id")
_CUSTOMER = update(_table).where(_BY_ID).values(customer_id=bindparam("customer"))
_ENDED = (
    update(_table)
    .where(_BY_ID)
    .values(
        state="ended",
        ended_at=bindparam("at"),
        outcome=bindparam("how"),
        talk_seconds=bindparam("talk"),
    )
)
_ANSWERED_AT = select(_calls.answered_at, _calls.answered_how).where(_BY_ID)
_ANSWERED = (
    update(_table)
    .where(_BY_ID)
    .values(
        answered_staff_id=bindparam("staff"),
        answered_by=bindparam("extension"),
        answered_at=bindparam("at"),
        answered_how=bindparam("how"),
        # An answer learnt after the end (a late claim, a late dialog event) is still
        # recorded, but does not reopen the call.
        state=case((_calls.state == "ended", "ended"), else_="answered"),
    )
)
_HANDOVER = (
    update(_table)
    .where(_BY_ID)
    .values(
        handover_from_staff_id=bindparam("from_staff"),
        handover_to_staff_id=bindparam("to_staff"),
        handover_to_extension=bindparam("to_extension"),
        handover_state=bindparam("handover"),
        handover_note=bindparam("note"),
    )
)
_ROUTED = (
    update(_table)
    .where(_BY_ID)
    .values(
        routed_to=bindparam("to"),
        routed_staff_id=bindparam("staff"),
        routing_reason=bindparam("reason"),
    )
)
_INTERRUPTED = (
    update(_table)
    .where(_calls.state != "ended")
    .values(state="ended", ended_at=bindparam("at"), outcome=INTERRUPTED)
)


def record_call_started(
    session: Session,
    *,
    id: str,  # the call id, as in the WebSocket messages
    sip_call_id: str,
    caller_e164: str | None,
    caller_raw: str | None,
    display_name: str | None,
    withheld: str | None,
    dialed_e164: str | None,
    started_at: datetime,
    customer_id: int | None,
) -> None:
    """Insert the call in state ``ringing``."""
    session.execute(
        _STARTED,
        {
            "id": id,
            "sip_call_id": sip_call_id,
            "caller_e164": caller_e164,
            "caller_raw": caller_raw,
            "display_name": display_name,
            "withheld": withheld,
            "dialed_e164": dialed_e164,
            "started_at": started_at,
            "state": "ringing",
            "customer_id": customer_id,
        },
    )


def record_call_customer(session: Session, *, id: str, customer_id: int) -> None:
    """Link the call to its customer once a late lookup has found them."""
    session.execute(_CUSTOMER, {"call_id": id, "customer": customer_id})


def record_call_ended(
    session: Session,
    *,
    id: str,
    ended_at: datetime,
    outcome: str,
) -> None:
    """Mark the call ended with its outcome; a call never recorded as started is ignored.

    A call the PBX's dialog events saw answered gets its talk time, ``answered_at`` to
    ``ended_at`` in whole seconds (never negative: the clocks are the server's own, but a
    late answer is not). A *claimed* call has none: the person pressed 応答しました at
    some moment of the call, and the end callpop sees is its own ring leg's.
    """
    answered = session.execute(_ANSWERED_AT, {"call_id": id}).first()
    talk = None
    if answered is not None and answered.answered_at is not None:
        if answered.answered_how != "claimed":
            talk = max(0, round((ended_at - answered.answered_at).total_seconds()))
    session.execute(_ENDED, {"call_id": id, "at": ended_at, "how": outcome, "talk": talk})


AnsweredHow = Literal["claimed", "identity", "call-id", "time-window"]


def record_call_answered(
    session: Session,
    *,
    id: str,
    staff_id: int | None,
    extension: str | None,
    at: datetime,
    how: AnsweredHow,
) -> None:
    """Record who answered the call and how that is known; state ``answered`` unless ended.

    ``how``: ``claimed`` (the staff member said so in the browser), or how the PBX's
    dialog events were matched to the call (``identity``, ``call-id``,
    ``time-window``). A later answer replaces an earlier one (a hand-over). A call never
    recorded as started is ignored.
    """
    session.execute(
        _ANSWERED,
        {"call_id": id, "staff": staff_id, "extension": extension, "at": at, "how": how},
    )


HandoverState = Literal["requested", "ringing", "answered"]


def record_call_handover(
    session: Session,
    *,
    id: str,
    from_staff_id: int | None,
    to_staff_id: int,
    to_extension: str,
    state: HandoverState,
    note: str,
) -> None:
    """Record the hand-over (転送メモ) and how far it got; a later state replaces it."""
    session.execute(
        _HANDOVER,
        {
            "call_id": id,
            "from_staff": from_staff_id,
            "to_staff": to_staff_id,
            "to_extension": to_extension,
            "handover": state,
            "note": note,
        },
    )


def record_call_routed(
    session: Session, *, id: str, to: str, staff_id: int | None, reason: str
) -> None:
    """Record where known-customer routing sent the call (the 302's target) and why."""
    session.execute(_ROUTED, {"call_id": id, "to": to, "staff": staff_id, "reason": reason})


def close_interrupted_calls(session: Session, now: datetime) -> int:
    """End every call still open (``ringing``/``answered``) as ``interrupted`` at ``now``.

    Run once at start-up, before SIP listens: any call open then was left so by a
    service that stopped without seeing its end. Returns how many were closed.
    """
    result = session.execute(_INTERRUPTED, {"at": now})
    return int(getattr(result, "rowcount", 0) or 0)


# --- reading the log -------------------------------------------------------------------------

PAGE_SIZE_MAX = 200
# The missed list reads at most this many unanswered calls (newest first). An office
# that leaves more open than this has stopped using the list; the rest stay in the log.
MISSED_LIMIT = 1000

MissedStatus = Literal["called_back", "no_action"]

_answerer = aliased(Staff)
_handed_from = aliased(Staff)
_handed_to = aliased(Staff)
_routed_staff = aliased(Staff)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFilter:
    """Which calls a page shows: started in ``[since, until)``, from one number."""

    since: datetime | None = None
    until: datetime | None = None
    caller_e164: str | None = None  # a normalised number
    caller_raw: str | None = None  # an extension, as the PBX sent it


def call_page(
    session: Session, where: CallFilter, *, page: int, page_size: int
) -> tuple[int, list[dict[str, Any]]]:
    """``(total, calls)``: the calls matching ``where``, newest first, one page of them.

    Each call carries who answered, its customer (unless deleted) and its live notes' ids.
    """
    if not 1 <= page_size <= PAGE_SIZE_MAX or page < 1:
        raise ValueError(f"page {page} of size {page_size}")
    conditions = []
    if where.since is not None:
        conditions.append(_calls.started_at >= where.since)
    if where.until is not None:
        conditions.append(_calls.started_at < where.until)
    if where.caller_e164 is not None:
        conditions.append(_calls.caller_e164 == where.caller_e164)
    if where.caller_raw is not None:
        conditions.append(_calls.caller_raw == where.caller_raw)
    total = session.scalar(select(func.count()).select_from(_table).where(*conditions)) or 0
    rows = session.execute(
        select(
            Call,
            _answerer.name.label("answerer_name"),
            Customer.name.label("customer_name"),
            _handed_from.name.label("handed_from_name"),
            _handed_to.name.label("handed_to_name"),
            _routed_staff.name.label("routed_name"),
        )
        .outerjoin(_answerer, _answerer.id == Call.answered_staff_id)
        .outerjoin(_handed_from, _handed_from.id == Call.handover_from_staff_id)
        .outerjoin(_handed_to, _handed_to.id == Call.handover_to_staff_id)
        .outerjoin(_routed_staff, _routed_staff.id == Call.routed_staff_id)
        .outerjoin(Customer, (Customer.id == Call.customer_id) & Customer.deleted_at.is_(None))
        .where(*conditions)
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    notes = _note_ids(session, [row.Call.id for row in rows])
    return int(total), [
        {
            "id": call.id,
            "started_at": call.started_at,
            "ended_at": call.ended_at,
            "caller_e164": call.caller_e164,
            "caller_raw": call.caller_raw,
            "display_name": call.display_name,
            "withheld": call.withheld,
            "dialed_e164": call.dialed_e164,
            "outcome": call.outcome,
            "answered_by": (
                {
                    "staff_id": call.answered_staff_id,
                    "name": answerer_name,
                    "extension": call.answered_by,
                }
                if call.answered_staff_id is not None or call.answered_by is not None
                else None
            ),
            "talk_seconds": call.talk_seconds,
            "customer": (
                {"id": call.customer_id, "name": customer_name}
                if customer_name is not None
                else None
            ),
            "handover": (
                {
                    "from_staff_id": call.handover_from_staff_id,
                    "from_name": handed_from_name,
                    "to_staff_id": call.handover_to_staff_id,
                    "to_name": handed_to_name,
                    "to_extension": call.handover_to_extension,
                    "state": call.handover_state,
                    "note": call.handover_note,
                }
                if call.handover_to_staff_id is not None
                else None
            ),
            "routing": (
                {
                    "to": call.routed_to,
                    "staff_id": call.routed_staff_id,
                    "name": routed_name,
                    "reason": call.routing_reason,
                }
                if call.routed_to is not None
                else None
            ),
            "note_ids": notes.get(call.id, []),
        }
        for (
            call,
            answerer_name,
            customer_name,
            handed_from_name,
            handed_to_name,
            routed_name,
        ) in rows
    ]


def _note_ids(session: Session, call_ids: Sequence[str]) -> dict[str, list[int]]:
    if not call_ids:
        return {}
    found: dict[str, list[int]] = {}
    for call_id, note_id in session.execute(
        select(Note.call_id, Note.id)
        .where(Note.call_id.in_(call_ids), Note.deleted_at.is_(None))
        .order_by(Note.id)
    ):
        if call_id is not None:
            found.setdefault(call_id, []).append(note_id)
    return found


# The predicate of the partial index ix_calls_missed, spelt the same way so that the
# planner uses it.
_UNANSWERED = (
    _calls.outcome.in_(MISSED_OUTCOMES)
    & _calls.answered_by.is_(None)
    & _calls.answered_staff_id.is_(None)
)


def missed_calls(session: Session, *, include_resolved: bool = False) -> list[dict[str, Any]]:
    """Calls that ended unanswered, grouped by caller number, newest group first.

    Open calls only, unless ``include_resolved``. A group is one number's calls with the
    same follow-up (open, or one resolution); a withheld caller is a group of one call.
    Each group: ``number`` (E.164 or None), ``raw`` (the newest call's raw caller),
    ``customer`` (the newest call's linked customer), ``first_at``, ``last_at``,
    ``attempts``, ``call_ids`` (newest first) and the follow-up (``status``,
    ``resolved_by``, ``resolved_at``, ``resolution_note``; None while open).
    """
    conditions: list[ColumnElement[bool]] = [_UNANSWERED]
    if not include_resolved:
        conditions.append(_calls.missed_status.is_(None))
    resolver = aliased(Staff)
    rows = session.execute(
        select(Call, Customer.name.label("customer_name"), resolver.name.label("resolver"))
        .outerjoin(Customer, (Customer.id == Call.customer_id) & Customer.deleted_at.is_(None))
        .outerjoin(resolver, resolver.id == Call.missed_resolved_by)
        .where(*conditions)
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(MISSED_LIMIT + 1)
    ).all()
    if len(rows) > MISSED_LIMIT:
        log.warning(
            "missed calls: more than %d unanswered calls; the oldest not listed", MISSED_LIMIT
        )
        rows = rows[:MISSED_LIMIT]
    groups: dict[tuple[object, ...], dict[str, Any]] = {}
    for call, customer_name, resolver_name in rows:
        number = None if call.withheld else call.caller_e164
        who = number if number is not None else ("call", call.id)
        key = (who, call.missed_status, call.missed_resolved_by, call.missed_resolved_at)
        group = groups.get(key)
        if group is None:  # the newest call of its group: rows come newest first
            group = groups[key] = {
                "number": number,
                "raw": None if call.withheld else call.caller_raw,
                "customer": None,
                "first_at": call.started_at,
                "last_at": call.started_at,
                "attempts": 0,
                "call_ids": [],
                "status": call.missed_status,
                "resolved_by": resolver_name,
                "resolved_at": call.missed_resolved_at,
                "resolution_note": call.missed_note,
            }
        group["first_at"] = call.started_at
        group["attempts"] += 1
        group["call_ids"].append(call.id)
        if group["customer"] is None and customer_name is not None:
            group["customer"] = {"id": call.customer_id, "name": customer_name}
    return list(groups.values())


def resolve_missed(
    session: Session,
    *,
    call_ids: Sequence[str],
    status: MissedStatus,
    staff_id: int,
    at: datetime,
    note: str | None,
) -> int:
    """Close the follow-up of these missed calls; returns how many were open and closed.

    Ids of calls that were answered, are still open-ended or were already resolved are
    left alone (a second click by a colleague does not overwrite the first).
    """
    if not call_ids:
        return 0
    result = session.execute(
        update(_table)
        .where(_calls.id.in_(list(call_ids)), _UNANSWERED, _calls.missed_status.is_(None))
        .values(
            missed_status=status,
            missed_resolved_by=staff_id,
            missed_resolved_at=at,
            missed_note=note,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
