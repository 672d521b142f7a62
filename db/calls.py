"""The call log: writing a call when it rings, when its customer is known, and when it ends.

The server calls these from the call log's own writer thread
(``callpop.calllog.CallLog``) after the pop has gone out; the caller commits. At
start-up, :func:`close_interrupted_calls` ends the calls a crash left open. Knows
nothing of SIP: ids, numbers and outcomes arrive as plain values.

The statements are Core, built once against the table: a call row needs no identity
map or unit of work, and these writes run in threads that share the interpreter with
the event loop sending pops (bench/README.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.orm import Session

from db.models import Call

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
    .values(state="ended", ended_at=bindparam("at"), outcome=bindparam("how"))
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
    """Mark the call ended with its outcome; a call never recorded as started is ignored."""
    session.execute(_ENDED, {"call_id": id, "at": ended_at, "how": outcome})


def close_interrupted_calls(session: Session, now: datetime) -> int:
    """End every call still open (``ringing``/``answered``) as ``interrupted`` at ``now``.

    Run once at start-up, before SIP listens: any call open then was left so by a
    service that stopped without seeing its end. Returns how many were closed.
    """
    result = session.execute(_INTERRUPTED, {"at": now})
    return int(getattr(result, "rowcount", 0) or 0)
