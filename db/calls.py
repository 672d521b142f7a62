"""The call log: writing a call when it rings and when it ends.

The server calls these from a worker thread after the pop has gone out; the
caller commits. Knows nothing of SIP: ids, numbers and outcomes arrive as plain
values.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from db.models import Call


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
    session.add(
        Call(
            id=id,
            sip_call_id=sip_call_id,
            caller_e164=caller_e164,
            caller_raw=caller_raw,
            display_name=display_name,
            withheld=withheld,
            dialed_e164=dialed_e164,
            started_at=started_at,
            state="ringing",
            customer_id=customer_id,
        )
    )
    session.flush()


def record_call_answered(session: Session, *, id: str, answered_by: str | None) -> None:
    """Mark the call answered (by an extension, when known)."""
    session.execute(
        update(Call).where(Call.id == id).values(state="answered", answered_by=answered_by)
    )


def record_call_customer(session: Session, *, id: str, customer_id: int) -> None:
    """Link the call to its customer once a late lookup has found them."""
    session.execute(update(Call).where(Call.id == id).values(customer_id=customer_id))


def record_call_ended(
    session: Session,
    *,
    id: str,
    ended_at: datetime,
    outcome: str,
) -> None:
    """Mark the call ended with its outcome; a call never recorded as started is ignored."""
    session.execute(
        update(Call).where(Call.id == id).values(state="ended", ended_at=ended_at, outcome=outcome)
    )
