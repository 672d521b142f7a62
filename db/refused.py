"""Why the database layer refused what a caller asked: a reason the caller can act on,
and a Japanese message a person can read.

One base for every module's refusal (``db.notes.NoteRefused``, ``db.records.RecordRefused``,
``db.followups.FollowupRefused``), so that the web turns any of them into the same HTTP
answer (``popup_ui.context.in_session``). Knows nothing of HTTP.
"""

from __future__ import annotations

from typing import Literal

# not_found: no such (live) record; conflict: the record's state forbids it (not
# deleted, a code in use, the customer is deleted); busy: others kept changing it
# while this one tried; invalid / no_customer: what was sent cannot be used.
RefusedReason = Literal["not_found", "conflict", "busy", "invalid", "no_customer"]


class Refused(Exception):
    def __init__(self, reason: RefusedReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


__all__ = ["Refused", "RefusedReason"]
