"""The caller card: everything a pop shows about who is calling.

Frozen pydantic models: the same objects the lookup builds are the ``card`` of a
``call.ringing`` WebSocket message and the body of ``GET /api/lookup``, so the wire
form is their JSON (docs/protocol.md is checked against them) and nothing in
between turns them into dicts and back.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StaffRef(_Frozen):
    """A staff member as a card names them: the 担当者 and their extension."""

    id: int
    name: str
    furigana: str | None
    extension: str | None


class TransactionLine(_Frozen):
    date: date
    title: str
    amount: int | None = Field(description="yen")


class NoteLine(_Frozen):
    at: datetime
    staff_name: str | None
    body: str
    id: int | None = Field(default=None, description="the note (修正, 履歴 on the card)")
    corrected_at: datetime | None = Field(
        default=None, description="when its text was last corrected, or null"
    )


class OpenerKind(StrEnum):
    """What a conversation opener is about (lookup/openers.py: the order they win in)."""

    FOLLOW_UP_DUE = "follow_up_due"  # an open follow-up was due today or before
    BIRTHDAY = "birthday"  # the customer's birthday today or within the week
    FAMILY_BIRTHDAY = "family_birthday"  # a family member's birthday, the same
    TRANSACTION_FOLLOW_UP = "transaction_follow_up"  # ask after the last transaction
    DORMANT = "dormant"  # no contact for longer than the rank's dormant days
    PREFERENCE = "preference"  # お茶は緑茶


class Opener(_Frozen):
    """One short line that helps whoever answers start the conversation."""

    kind: OpenerKind
    text_ja: str
    text_en: str
    on: date | None = Field(
        default=None,
        description="the date it is about: the transaction, the birthday this year, the due date",
    )
    days: int | None = Field(
        default=None, description="days since the last contact (dormant) or overdue (follow-up)"
    )
    subject: str | None = Field(
        default=None,
        description="what it names: the transaction's title, the family member, the preference",
    )


class CustomerCard(_Frozen):
    id: int
    name: str
    furigana: str | None
    honorific: str | None = Field(default=None, description="様 / 御中, shown after the name")
    company: str | None
    rank: str | None
    tags: list[str] = Field(default_factory=list)
    preferences: str | None = None
    memo: str | None = None
    phone_label: str | None = Field(
        default=None, description="label of the matched number: 自宅, 代表"
    )
    phone_owner: str | None = Field(default=None, description="family member who owns the number")
    assigned_staff: StaffRef | None = None
    transactions: list[TransactionLine] = Field(default_factory=list, description="newest first")
    notes: list[NoteLine] = Field(default_factory=list, description="newest first")
    recent_staff: list[StaffRef] = Field(
        default_factory=list,
        description="who else handled this customer most recently (wrote the last notes), "
        "newest first, the 担当者 left out",
    )
    last_contact_at: datetime | None = None
    days_since_contact: int | None = None
    birthday_today: bool = False
    contact_hours: str | None = Field(default=None, description="連絡可能: 平日 10-17時")
    openers: list[Opener] = Field(
        default_factory=list, description="at most three, the most useful first"
    )


class CallerCard(_Frozen):
    status: CardStatus
    number: str | None = Field(description="E.164, e.g. +81312345678, when it could be normalised")
    national: str | None = Field(description="as people read it, e.g. 03-1234-5678")
    raw_number: str | None = Field(description="as received from SIP")
    customers: list[CustomerCard] = Field(default_factory=list)
    previous_calls: int = Field(default=0, description="earlier calls from this number")
    last_call_at: datetime | None = None
    degraded_reason: DegradedReason | None = Field(
        default=None, description="set exactly when status is degraded"
    )
    message: str | None = Field(
        default=None, description="technical detail, e.g. 'lookup timed out after 300 ms'"
    )
