"""Conversation openers: at most three short lines a pop offers whoever answers.

Pure functions: the facts the lookup has already read about one customer
(:class:`CustomerFacts`) and the office's rules (:class:`OpenerRules`, from the
``[followups]`` settings) in, a list of :class:`~lookup.card.Opener` out, each in
Japanese and English. The same facts give the same lines, in the same order: the
most useful first (:data:`PRIORITY`), at most one line of each kind.

Knows dates and words; knows nothing of the database or the browser.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from lookup.card import Opener, OpenerKind

MAX_OPENERS = 3
# A birthday "this week": today or within the next six days.
BIRTHDAY_AHEAD_DAYS = 6
# Free text (a note, a preference) is cut to this many characters on a one-line opener.
SUBJECT_MAX = 40

# What wins when there are more than three: a promise the office made first, then the
# personal (birthdays), then the last piece of work, then how long it has been, then taste.
PRIORITY: tuple[OpenerKind, ...] = (
    OpenerKind.FOLLOW_UP_DUE,
    OpenerKind.BIRTHDAY,
    OpenerKind.FAMILY_BIRTHDAY,
    OpenerKind.TRANSACTION_FOLLOW_UP,
    OpenerKind.DORMANT,
    OpenerKind.PREFERENCE,
)

_MONTHS_EN = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class OpenerRules:
    """The office's rules (``[followups]``): when a customer is dormant, how long a
    transaction is worth asking after."""

    dormant_days_default: int = 90
    dormant_days: Mapping[str, int] = field(default_factory=dict)
    transaction_follow_up_days: int = 180

    def dormant_after(self, rank: str | None) -> int:
        if rank is not None and rank in self.dormant_days:
            return self.dormant_days[rank]
        return self.dormant_days_default


@dataclass(frozen=True, slots=True)
class FamilyFact:
    name: str
    relation: str | None
    birthday: dt.date


@dataclass(frozen=True, slots=True)
class DueFollowUp:
    """An open follow-up due on ``due``: a note's (with its text) or the customer's own."""

    due: dt.date
    body: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    today: dt.date  # the office's date (Asia/Tokyo)
    rank: str | None = None
    birthday: dt.date | None = None
    preferences: str | None = None
    last_transaction: tuple[dt.date, str] | None = None  # (date, title), the newest
    last_contact_on: dt.date | None = None
    family: tuple[FamilyFact, ...] = ()
    follow_ups: tuple[DueFollowUp, ...] = ()


def openers_for(facts: CustomerFacts, rules: OpenerRules) -> list[Opener]:
    """At most :data:`MAX_OPENERS` lines for ``facts``, the most useful first."""
    found = [
        opener
        for opener in (
            _follow_up_due(facts),
            _birthday(facts),
            _family_birthday(facts),
            _transaction_follow_up(facts, rules),
            _dormant(facts, rules),
            _preference(facts),
        )
        if opener is not None
    ]
    found.sort(key=lambda opener: PRIORITY.index(opener.kind))
    return found[:MAX_OPENERS]


def next_birthday(birthday: dt.date, today: dt.date) -> dt.date:
    """The next time ``birthday`` is celebrated, today included (29 Feb → 28 Feb in
    common years)."""
    for year in (today.year, today.year + 1):
        day = birthday.day
        if (birthday.month, day) == (2, 29) and not calendar.isleap(year):
            day = 28
        candidate = dt.date(year, birthday.month, day)
        if candidate >= today:
            return candidate
    raise AssertionError("unreachable: a birthday comes round within a year")


def _follow_up_due(facts: CustomerFacts) -> Opener | None:
    due = [f for f in facts.follow_ups if f.due <= facts.today]
    if not due:
        return None
    # The oldest promise first; with the same date, one with text before the bare date.
    first = min(due, key=lambda f: (f.due, f.body is None, f.body or ""))
    late = (facts.today - first.due).days
    body = _cut(first.body) if first.body else None
    if late == 0:
        ja = "本日フォローの予定です"
        en = "Follow-up due today"
    else:
        ja = f"フォロー予定日({first.due.isoformat()})を過ぎています"
        en = f"Follow-up overdue since {first.due.isoformat()}"
    if body:
        ja, en = f"{ja}: {body}", f"{en}: {body}"
    return Opener(
        kind=OpenerKind.FOLLOW_UP_DUE, text_ja=ja, text_en=en, on=first.due, days=late, subject=body
    )


def _birthday(facts: CustomerFacts) -> Opener | None:
    if facts.birthday is None:
        return None
    on = next_birthday(facts.birthday, facts.today)
    ahead = (on - facts.today).days
    if ahead > BIRTHDAY_AHEAD_DAYS:
        return None
    if ahead == 0:
        ja, en = "本日お誕生日です。おめでとうございます", "Birthday today"
    else:
        ja, en = f"{_ja_day(on)}がお誕生日です", f"Birthday on {_en_day(on)}"
    return Opener(kind=OpenerKind.BIRTHDAY, text_ja=ja, text_en=en, on=on, days=ahead)


def _family_birthday(facts: CustomerFacts) -> Opener | None:
    coming = [
        (next_birthday(member.birthday, facts.today), member.name, member)
        for member in facts.family
    ]
    coming = [c for c in coming if (c[0] - facts.today).days <= BIRTHDAY_AHEAD_DAYS]
    if not coming:
        return None
    on, _, member = min(coming, key=lambda c: (c[0], c[1]))
    who_ja = f"{member.relation} {member.name}様" if member.relation else f"{member.name}様"
    who_en = f"{member.name} ({member.relation})" if member.relation else member.name
    if on == facts.today:
        ja, en = f"{who_ja}のお誕生日が本日です", f"{who_en}: birthday today"
    else:
        ja, en = f"{who_ja}のお誕生日が{_ja_day(on)}です", f"{who_en}: birthday on {_en_day(on)}"
    return Opener(
        kind=OpenerKind.FAMILY_BIRTHDAY,
        text_ja=ja,
        text_en=en,
        on=on,
        days=(on - facts.today).days,
        subject=member.name,
    )


def _transaction_follow_up(facts: CustomerFacts, rules: OpenerRules) -> Opener | None:
    if facts.last_transaction is None:
        return None
    on, title = facts.last_transaction
    since = (facts.today - on).days
    if since < 0 or since > rules.transaction_follow_up_days:
        return None
    if on.year == facts.today.year:
        month_ja, month_en = f"{on.month}月", _MONTHS_EN[on.month - 1]
    else:
        month_ja, month_en = f"{on.year}年{on.month}月", f"{_MONTHS_EN[on.month - 1]} {on.year}"
    return Opener(
        kind=OpenerKind.TRANSACTION_FOLLOW_UP,
        text_ja=f"{month_ja}の{title}、その後いかがですか",
        text_en=f"How is everything since the {title} in {month_en}?",
        on=on,
        days=since,
        subject=title,
    )


def _dormant(facts: CustomerFacts, rules: OpenerRules) -> Opener | None:
    # Never contacted is a new customer, not a dormant one.
    if facts.last_contact_on is None:
        return None
    days = (facts.today - facts.last_contact_on).days
    if days < rules.dormant_after(facts.rank):
        return None
    months = _whole_months(facts.last_contact_on, facts.today)
    if months >= 1:
        ja = f"{months}か月ぶりのご連絡です"
        en = f"First contact in {months} month{'s' if months > 1 else ''}"
    else:
        ja, en = f"{days}日ぶりのご連絡です", f"First contact in {days} days"
    return Opener(
        kind=OpenerKind.DORMANT, text_ja=ja, text_en=en, on=facts.last_contact_on, days=days
    )


def _preference(facts: CustomerFacts) -> Opener | None:
    text = (facts.preferences or "").strip()
    if not text:
        return None
    cut = _cut(text)
    return Opener(
        kind=OpenerKind.PREFERENCE,
        text_ja=f"お好み: {cut}",
        text_en=f"Preference: {cut}",
        subject=cut,
    )


def _whole_months(since: dt.date, today: dt.date) -> int:
    months = (today.year - since.year) * 12 + today.month - since.month
    if today.day < since.day:
        months -= 1
    return max(months, 0)


def _ja_day(on: dt.date) -> str:
    return f"{on.month}月{on.day}日"


def _en_day(on: dt.date) -> str:
    return f"{_MONTHS_EN[on.month - 1]} {on.day}"


def _cut(text: str) -> str:
    line = " ".join(text.split())  # one line: newlines and runs of spaces become one space
    return line if len(line) <= SUBJECT_MAX else line[: SUBJECT_MAX - 1] + "…"
