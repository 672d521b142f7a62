"""The caller card: everything a pop shows about who is calling.

Plain frozen dataclasses; :meth:`CallerCard.to_json` is the form sent to browsers
(the ``card`` of a ``call.ringing`` WebSocket message, see docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any


class CardStatus(StrEnum):
    MATCHED = "matched"  # one or more customers share this number
    UNKNOWN = "unknown"  # a valid number with no customer
    WITHHELD = "withheld"  # no number: 非通知 / 公衆電話 / 表示圏外 / interaction
    INTERNAL = "internal"  # an extension of the office (e.g. 203), not a customer
    INVALID = "invalid"  # a number phonenumbers cannot make sense of
    DEGRADED = "degraded"  # lookup timed out or the database failed: number only


class DegradedReason(StrEnum):
    """Why a card has the number only (``CardStatus.DEGRADED``), for the UI to say."""

    TIMEOUT = "timeout"  # the lookup missed its deadline; its card may follow (call.updated)
    DATABASE = "database"  # the database refused or is unreachable
    ERROR = "error"  # anything else went wrong while building the card


@dataclass(frozen=True, slots=True, kw_only=True)
class StaffRef:
    id: int
    name: str
    furigana: str | None
    extension: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionLine:
    date: date
    title: str
    amount: int | None  # yen


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteLine:
    at: datetime
    staff_name: str | None
    body: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerCard:
    id: int
    name: str
    furigana: str | None
    company: str | None
    rank: str | None
    tags: list[str] = field(default_factory=list)
    preferences: str | None = None
    memo: str | None = None
    phone_label: str | None = None  # label of the matched number, e.g. 自宅, 代表
    phone_owner: str | None = None  # family member who owns the matched number
    assigned_staff: StaffRef | None = None
    transactions: list[TransactionLine] = field(default_factory=list)  # newest first, <= 5
    notes: list[NoteLine] = field(default_factory=list)  # newest first, <= 5
    last_contact_at: datetime | None = None
    days_since_contact: int | None = None
    birthday_today: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerCard:
    status: CardStatus
    number: str | None  # E.164, e.g. "+81312345678", when the number could be normalised
    national: str | None  # national format, e.g. "03-1234-5678"
    raw_number: str | None  # as received from SIP
    customers: list[CustomerCard] = field(default_factory=list)
    previous_calls: int = 0  # earlier calls from this number (before this one)
    last_call_at: datetime | None = None
    degraded_reason: DegradedReason | None = None  # set exactly when status is DEGRADED
    message: str | None = None  # technical detail, e.g. "lookup timed out after 300 ms"

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return str(value)
    return value
