"""Every REST response body, as pydantic models: what ``/docs`` shows.

The WebSocket vocabulary is in :mod:`popup_ui.messages`; the caller card is
:class:`lookup.card.CallerCard`. Knows nothing of SIP or the database.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lookup.card import StaffRef


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StaffOut(_Out):
    """A staff member who can log in."""

    id: int
    login: str
    name: str
    furigana: str | None
    extension: str | None
    role: Literal["staff", "admin"]


class StaffListEntry(_Out):
    """A colleague as the hand-over picker lists them: no login, no role."""

    id: int
    name: str
    furigana: str | None
    extension: str | None
    presence: Literal["idle", "ringing", "busy", "unknown"] = Field(
        description="the extension's, from the PBX's dialog events; unknown when not watched"
        " or nothing heard yet"
    )


class StaffList(_Out):
    """``GET /api/staff``: active staff, by extension (none last), then name."""

    staff: list[StaffListEntry]
    truncated: bool = Field(description="more active staff than the list holds (500)")


class SessionOut(_Out):
    staff: StaffOut


class UiOut(_Out):
    """The ``[ui]`` settings the browser applies."""

    company_name: str
    language: Literal["ja", "en"]


class SharedWithOut(_Out):
    """Another live customer reached on the same number (a family line, a 代表)."""

    id: int
    name: str


class PhoneOut(_Out):
    id: int
    number: str | None = Field(description="E.164")
    national: str | None = Field(default=None, description="as people read it: 03-1234-5678")
    raw: str | None
    label: str | None
    owner_name: str | None
    shared_with: list[SharedWithOut] = Field(default_factory=list)


class FamilyOut(_Out):
    id: int
    name: str
    furigana: str | None
    relation: str | None
    birthday: date | None


class TransactionOut(_Out):
    id: int
    date: date
    title: str
    amount: int | None = Field(description="yen")
    staff: StaffRef | None = Field(default=None, description="who handled it")
    detail: str | None = Field(default=None, description="what was done (the memo)")


class CustomerNoteOut(_Out):
    """A note as the customer's record lists it (the full note: :class:`NoteOut`)."""

    id: int
    at: datetime
    staff_name: str | None
    body: str
    call_id: str | None
    kind: str = "call"
    follow_up_on: date | None = None
    follow_up_done_at: datetime | None = None


_Date = date  # for the models with a field named ``date``


class TimelineItemOut(_Out):
    """One thing in a customer's history, newest first. ``kind`` says which fields are
    set: call → direction, outcome, answered_by_name, talk_seconds, note_ids; note →
    note_kind, body, staff_name, follow_up_on, corrected_at; transaction → date, title,
    amount, staff_name, detail. A transaction stands at the start of its day."""

    kind: Literal["call", "note", "transaction"]
    at: datetime
    id: int | str = Field(description="the note's or transaction's id, or the call's id")
    direction: Literal["in"] | None = None
    outcome: str | None = None
    answered_by_name: str | None = None
    talk_seconds: int | None = None
    note_ids: list[int] | None = None
    note_kind: str | None = None
    body: str | None = None
    staff_name: str | None = None
    follow_up_on: _Date | None = None
    corrected_at: datetime | None = None
    date: _Date | None = None
    title: str | None = None
    amount: int | None = Field(default=None, description="yen")
    detail: str | None = None


class TimelineOut(_Out):
    """``GET /api/customers/{id}/timeline``: a page, and the cursor of the next (or null)."""

    items: list[TimelineItemOut]
    next: str | None


class CustomerOut(_Out):
    """One customer with everything on file: every live phone, family member,
    transaction and note (newest first), and the first page of the timeline."""

    id: int
    code: str | None = None
    name: str
    furigana: str | None
    honorific: str | None = None
    company: str | None
    department: str | None = None
    postal_code: str | None = None
    address: str | None = None
    email: str | None = None
    contact_hours: str | None = None
    rank: str | None
    tags: list[str]
    preferences: str | None
    memo: str | None
    birthday: date | None
    next_follow_up_on: date | None = None
    assigned_staff: StaffRef | None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    phones: list[PhoneOut]
    family: list[FamilyOut] = Field(default_factory=list)
    transactions: list[TransactionOut]
    notes: list[CustomerNoteOut]
    timeline: list[TimelineItemOut] = Field(default_factory=list)
    timeline_more: bool = Field(default=False, description="older items: GET …/timeline")


# --- notes and the call log (popup_ui.records) ---------------------------------------

# Text a person typed: any characters but NUL, which PostgreSQL refuses in text.
_TEXT = r"^[^\x00]*$"
CallId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z]+$")]

NoteTag = Literal["見積依頼", "予約", "クレーム", "問い合わせ", "その他"]
NoteKind = Literal["call", "visit", "email", "other"]


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NewCustomerIn(_In):
    """A customer to create with the note, filed under the call's caller number."""

    name: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    furigana: str | None = Field(default=None, max_length=200, pattern=_TEXT)


class NoteIn(_In):
    """A note to save. The browser picks ``idempotency_key`` once per note (a UUID) and
    sends it again on every retry: the note is stored once."""

    idempotency_key: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    call_id: CallId | None = None
    customer_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    body: str = Field(min_length=1, max_length=5000, pattern=_TEXT)
    tags: list[NoteTag] = Field(default_factory=list, max_length=5)
    follow_up_on: date | None = None
    new_customer: NewCustomerIn | None = None
    kind: NoteKind = Field(
        default="call", description="call: about a call; visit / email / other: by hand"
    )


class NoteCorrectionIn(_In):
    body: str = Field(min_length=1, max_length=5000, pattern=_TEXT)


class NoteRevisionOut(_Out):
    """An earlier text of a note: ``staff_name`` replaced it ``at``."""

    body: str
    staff_name: str | None
    at: datetime


class NoteOut(_Out):
    """A note with its earlier texts, oldest first (empty when never corrected)."""

    id: int
    at: datetime
    staff_name: str | None = Field(description="who wrote it")
    body: str
    call_id: str | None
    customer_id: int
    tags: list[str]
    follow_up_on: date | None
    kind: str = "call"
    revisions: list[NoteRevisionOut]


class NoteRevisionsOut(_Out):
    """A note's earlier texts, oldest first, and who wrote the one it has now."""

    note_id: int
    body: str = Field(description="the text now")
    staff_name: str | None = Field(description="who wrote the note")
    at: datetime = Field(description="when it was written")
    revisions: list[NoteRevisionOut]


class AnsweredByOut(_Out):
    staff_id: int | None
    name: str | None
    extension: str | None


class HandoverOut(_Out):
    """The hand-over (転送メモ) of a call in the log, and how far it got."""

    from_staff_id: int | None
    from_name: str | None
    to_staff_id: int
    to_name: str | None
    to_extension: str | None
    state: Literal["requested", "ringing", "answered"] | None
    note: str | None


class RoutingOut(_Out):
    """Where known-customer routing sent a call (its 302), and why."""

    to: str = Field(description="the target extension (203, 600), or its SIP URI")
    staff_id: int | None = Field(description="the 担当者 when the call went straight to them")
    name: str | None
    reason: str | None = Field(description="as the Call's routing.reason (docs/protocol.md)")


class CustomerRefOut(_Out):
    id: int
    name: str


class CallRecordOut(_Out):
    """One call in the log."""

    id: str
    started_at: datetime
    ended_at: datetime | None
    caller_number: str | None = Field(description="E.164, or null")
    caller_national: str | None = Field(description="as people read it, or the extension")
    display_name: str | None
    withheld: str | None
    dialed_number: str | None = Field(description="the office line called, E.164")
    dialed_national: str | None = Field(default=None, description="that line as people read it")
    dialed_name: str | None = Field(default=None, description="its name from [numbering.lines]")
    outcome: str | None
    answered_by: AnsweredByOut | None = Field(description="who had the call last")
    handover: HandoverOut | None = Field(default=None, description="転送メモ, if one was left")
    routing: RoutingOut | None = Field(default=None, description="routed lines only")
    talk_seconds: int | None
    customer: CustomerRefOut | None
    note_ids: list[int]
    notes: list[NoteOut] = Field(default_factory=list, description="the call's notes, oldest first")


class CallPage(_Out):
    page: int
    page_size: int
    total: int
    calls: list[CallRecordOut]


MissedStatus = Literal["called_back", "no_action"]


class MissedOut(_Out):
    """One caller's unanswered calls (a withheld caller: one call), newest first."""

    number: str | None = Field(description="E.164, or null when withheld")
    national: str | None
    customer: CustomerRefOut | None
    first_at: datetime
    last_at: datetime
    attempts: int
    call_ids: list[str]
    status: MissedStatus | None = Field(default=None, description="null while open")
    resolved_by: str | None = Field(default=None, description="staff name")
    resolved_at: datetime | None = None
    resolution_note: str | None = None


class MissedList(_Out):
    missed: list[MissedOut]


class MissedResolveIn(_In):
    call_ids: list[CallId] = Field(min_length=1, max_length=500)
    status: MissedStatus
    note: str | None = Field(default=None, max_length=2000, pattern=_TEXT)


class MissedResolved(_Out):
    resolved: int = Field(description="calls closed by this request (already closed: not counted)")


# --- customer records: writes (popup_ui.customers), audit and trash (popup_ui.trash) ----

_Short = Annotated[str, Field(max_length=200, pattern=_TEXT)]
_Long = Annotated[str, Field(max_length=5000, pattern=_TEXT)]
_Name = Annotated[str, Field(min_length=1, max_length=200, pattern=_TEXT)]
_Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
_Yen = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
_Number = Annotated[str, Field(min_length=1, max_length=64, pattern=_TEXT)]


class PhoneIn(_In):
    """A number for a customer, in any spelling; stored as E.164 (422 when unreadable)."""

    number: _Number
    label: Annotated[str, Field(max_length=32, pattern=_TEXT)] | None = None
    owner_name: Annotated[str, Field(max_length=100, pattern=_TEXT)] | None = None


class PhonePatchIn(_In):
    """Only the fields sent change; null clears label or owner (not the number)."""

    number: _Number | None = None
    label: Annotated[str, Field(max_length=32, pattern=_TEXT)] | None = None
    owner_name: Annotated[str, Field(max_length=100, pattern=_TEXT)] | None = None


class CustomerPatchIn(_In):
    """``PATCH /api/customers/{id}``: only the fields sent change; null clears one."""

    code: Annotated[str, Field(max_length=32, pattern=_TEXT)] | None = None
    name: _Name | None = None
    furigana: _Short | None = None
    honorific: Annotated[str, Field(max_length=16, pattern=_TEXT)] | None = None
    company: _Short | None = None
    department: _Short | None = None
    postal_code: Annotated[str, Field(max_length=16, pattern=_TEXT)] | None = None
    address: _Long | None = None
    email: Annotated[str, Field(max_length=254, pattern=_TEXT)] | None = None
    contact_hours: _Short | None = None
    rank: Annotated[str, Field(max_length=16, pattern=_TEXT)] | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=50, pattern=_TEXT)]] | None = Field(
        default=None, max_length=30
    )
    preferences: _Long | None = None
    memo: _Long | None = None
    birthday: date | None = None
    next_follow_up_on: date | None = None
    assigned_staff_id: _Id | None = None


class CustomerIn(CustomerPatchIn):
    """``POST /api/customers``: a name, and whatever else is known."""

    name: _Name
    phones: list[PhoneIn] = Field(default_factory=list, max_length=20)


class FamilyPatchIn(_In):
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=_TEXT)] | None = None
    furigana: Annotated[str, Field(max_length=100, pattern=_TEXT)] | None = None
    relation: Annotated[str, Field(max_length=32, pattern=_TEXT)] | None = None
    birthday: date | None = None


class FamilyIn(FamilyPatchIn):
    name: Annotated[str, Field(min_length=1, max_length=100, pattern=_TEXT)]


class TransactionPatchIn(_In):
    date: _Date | None = None
    title: _Name | None = None
    amount: _Yen | None = Field(default=None, description="yen")
    staff_id: _Id | None = Field(default=None, description="who handled it")
    detail: _Long | None = None


class TransactionIn(TransactionPatchIn):
    date: _Date
    title: _Name


class AuditEntryOut(_Out):
    """One change: who (null: the system), when, from where, and the record before and
    after (null before a create and after a purge)."""

    id: int
    at: datetime
    staff_name: str | None
    source: str = Field(description="web | import | cli")
    action: Literal["create", "update", "delete", "restore", "purge"]
    entity: Literal["customer", "phone", "family", "transaction", "note"]
    entity_id: int
    customer_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(_Out):
    """``GET /api/admin/audit``: newest first; ``next`` is the ``before`` of the next page."""

    entries: list[AuditEntryOut]
    next: int | None


class DeletedOut(_Out):
    entity: Literal["customer", "phone", "family", "transaction", "note"]
    id: int
    customer_id: int
    customer_name: str | None
    label: str
    deleted_at: datetime
    deleted_by_name: str | None = Field(description="from the audit log; null: unknown")


class DeletedList(_Out):
    """``GET /api/admin/deleted``: most recently deleted first."""

    items: list[DeletedOut]
    truncated: bool = Field(description="more deleted records than the list holds (500)")


class RestoredOut(_Out):
    """``POST /api/admin/restore/{entity}/{id}``: what came back, and whose it is."""

    entity: Literal["customer", "phone", "family", "transaction", "note"]
    id: int
    customer_id: int


class PurgeIn(_In):
    """Typing the id again: a purge cannot be undone."""

    confirm: str = Field(min_length=1, max_length=20, description="the record's id, as text")


# --- staff accounts (popup_ui.admin) ---------------------------------------------------


class StaffAccountOut(StaffOut):
    """An account as an admin manages it (``/api/admin/staff``)."""

    active: bool
    last_login: datetime | None = Field(
        description="when the newest session began; null when none in the last 30 days"
    )


class StaffAccountList(_Out):
    """``GET /api/admin/staff``: active accounts first, then by login."""

    staff: list[StaffAccountOut]
    truncated: bool = Field(description="more accounts than the list holds (500)")


class StaffCreateIn(_In):
    """``POST /api/admin/staff``: a new account that can log in at once."""

    login: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    name: str = Field(min_length=1, max_length=100)
    furigana: str | None = Field(default=None, max_length=100)
    extension: str | None = Field(default=None, max_length=16)
    role: Literal["staff", "admin"] = "staff"
    password: str = Field(min_length=8, max_length=1000, description="the initial password")


class StaffUpdateIn(_In):
    """``PATCH /api/admin/staff/{id}``: only the fields sent change ("" clears one)."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    furigana: str | None = Field(default=None, max_length=100)
    extension: str | None = Field(default=None, max_length=16)
    role: Literal["staff", "admin"] | None = None
    active: bool | None = Field(
        default=None, description="false ends every session of that person at once"
    )


class PasswordChangeIn(_In):
    """``POST /api/me/password``: the logged-in person's own password."""

    current_password: str = Field(min_length=1, max_length=1000)
    new_password: str = Field(min_length=8, max_length=1000)


# --- /healthz -------------------------------------------------------------------------


class SipHealth(_Out):
    mode: Literal["register", "trunk"]
    enabled: bool
    registration: Literal["disabled", "registering", "registered", "failed"]
    registration_detail: str = Field(description="why, e.g. '401 Unauthorized: …'")
    local_address: str | None
    stats: dict[str, int] = Field(description="datagrams and requests counted by the SIP side")


class DatabaseHealth(_Out):
    ok: bool
    detail: str


class HubHealth(_Out):
    seq: int = Field(description="messages published since start")
    active_calls: int
    subscribers: int
    dropped_subscribers: int = Field(description="browsers dropped for falling behind")


class CallLogHealth(_Out):
    calls: int = Field(description="calls handled since start")
    record_failures: int = Field(description="call-log writes that failed (logged with the id)")
    lookup_timeouts: int
    lookup_failures: int
    dialogs_matched: int = Field(default=0, description="phones' answers matched to a call")
    dialogs_unmatched: int = Field(
        default=0, description="phones' answers no call, or several, fitted"
    )
    which_asked: int = Field(default=0, description="of those, asked on the phone's browser")
    which_dropped: int = Field(
        default=0, description="questions closed unanswered: too many were open"
    )


class AuthHealth(_Out):
    """Logins and sessions since start (``popup_ui.auth``)."""

    logins: int = 0
    login_failures: int = Field(default=0, description="wrong login or password (401)")
    refused_limit: int = Field(default=0, description="too many attempts (429)")
    refused_load: int = Field(default=0, description="too many password checks at once (503)")
    password_checks_pending: int = Field(default=0, description="running or waiting now")
    sessions_ended: dict[str, int] = Field(
        default_factory=dict,
        description="by reason: logout | expired | deactivated | password | replaced | ended",
    )
    websockets_closed: int = Field(default=0, description="open /ws closed as its session ended")


class CallLogWriterHealth(_Out):
    """The call log's writer (``callpop.calllog``): writes are retried, held or
    journalled, never dropped."""

    written: int = 0
    retried: int = Field(default=0, description="attempts tried again (locked, disconnected)")
    failed: int = Field(default=0, description="writes refused for good (logged with the id)")
    spilled: int = Field(default=0, description="writes sent to the journal (queue full)")
    replayed: int = Field(default=0, description="writes applied from the journal")
    queue: int = Field(default=0, description="writes waiting in memory now")
    queue_limit: int = 0
    journal: int = Field(default=0, description="writes waiting in the journal file now")
    held: str | None = Field(default=None, description="why writes are waiting, or null")


class HttpHealth(_Out):
    """The HTTP server's connection bounds and what they closed (callpop/http_server.py)."""

    connections: int = Field(default=0, description="open now, HTTP and WebSocket")
    peak_connections: int = 0
    max_connections: int = Field(default=0, description="beyond this, new ones get 503")
    file_limit: int = Field(default=0, description="the process's open-file limit")
    closed_idle: int = Field(default=0, description="sent nothing within request_timeout")
    closed_slow: int = Field(default=0, description="sent part of a request, not all, in time")
    refused_over_cap: int = Field(default=0, description="closed at once: too many open")


class BackupHealth(_Out):
    """The daily backup (``callpop.backup``, ``[backup]`` in the config)."""

    enabled: bool = Field(default=False, description="false: [backup] dir is empty")
    last_ok_at: datetime | None = Field(default=None, description="when the last one was written")
    last_error: str | None = Field(default=None, description="why the latest one failed, or null")
    failures: int = Field(default=0, description="daily backups that failed since start")


class Health(_Out):
    status: Literal["ok", "degraded"]
    sip: SipHealth
    database: DatabaseHealth
    hub: HubHealth
    calls: CallLogHealth
    auth: AuthHealth = Field(default_factory=AuthHealth)
    call_log: CallLogWriterHealth = Field(default_factory=CallLogWriterHealth)
    http: HttpHealth = Field(default_factory=HttpHealth)
    backup: BackupHealth = Field(default_factory=BackupHealth)
