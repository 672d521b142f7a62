"""Known-customer routing: which extension a routed line's call goes to, and why.

Opt-in per office line (``[routing]``): the PBX sends that line's calls to callpop
first (a serial step, before any phone rings); callpop answers ``302 Moved
Temporarily`` with the 担当者's extension in Contact when the caller is one known
customer whose 担当者 has an extension that is idle right now, and with the line's ring
group otherwise. :func:`decide` is that rule as a pure function of the card and the
extensions' presence; :class:`CallRouter` holds the routed lines, sends the decision
through the SIP side (``redirect``), counts it by reason and says it once per call.

Unknown presence (no subscription, no NOTIFY yet) is not idle: the ring group is the
safe choice, since a call sent to a phone that may be busy or unplugged can be lost.

Knows cards, presence and SIP URIs as text; nothing of sockets, browsers or the
database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from lookup.card import CallerCard, CardStatus, DegradedReason
from lookup.numbers import Numbering
from popup_ui.messages import Routing, RoutingReason
from telephony.calls import check_target
from telephony.dialogstate import Presence
from telephony.events import CallerId
from telephony.subscription import EXTENSION_PATTERN

log = logging.getLogger("callpop.routing")

ROUTING_REASONS: tuple[RoutingReason, ...] = get_args(RoutingReason)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Where one call goes: the 担当者 (``staff_id`` set) or the line's ring group."""

    extension: str | None  # the 担当者's extension, or None for the ring group
    staff_id: int | None
    name: str | None
    reason: RoutingReason


def decide(card: CallerCard, presence: Callable[[str], Presence]) -> Decision:
    """The rule: one known customer, a 担当者 with an extension, and that extension idle."""
    ring_group = _ring_group
    if card.status is CardStatus.DEGRADED:
        timed_out = card.degraded_reason is DegradedReason.TIMEOUT
        return ring_group("lookup-timeout" if timed_out else "degraded")
    if card.status is not CardStatus.MATCHED or not card.customers:
        return ring_group("unknown-caller")
    if len(card.customers) > 1:
        # A shared number (a family, a company's switchboard): whose 担当者 is not known.
        return ring_group("several-customers")
    staff = card.customers[0].assigned_staff
    if staff is None or not staff.extension or not EXTENSION_PATTERN.fullmatch(staff.extension):
        return ring_group("no-assignee")
    state = presence(staff.extension)
    if state == "idle":
        return Decision(
            extension=staff.extension, staff_id=staff.id, name=staff.name, reason="assignee-idle"
        )
    return ring_group("assignee-presence-unknown" if state == "unknown" else "assignee-busy")


def _ring_group(reason: RoutingReason) -> Decision:
    return Decision(extension=None, staff_id=None, name=None, reason=reason)


def target_uri(target: str, domain: str) -> str:
    """``"600"`` -> ``sip:600@<domain>``; a ``sip:``/``sips:`` URI is taken as it is.

    ``ValueError`` for anything else (it goes into a Contact header).
    """
    if target.lower().startswith(("sip:", "sips:")):
        check_target(target)
        return target
    if not EXTENSION_PATTERN.fullmatch(target):
        raise ValueError(f"{target!r} is neither an extension nor a sip: URI")
    if not domain:
        raise ValueError(f"extension {target!r} needs sip.domain or sip.registrar_host")
    uri = f"sip:{target}@{domain}"
    check_target(uri)
    return uri


def _extension_of(uri: str) -> str | None:
    user = uri.split(":", 1)[1].split("@", 1)[0] if "@" in uri else ""
    return user if EXTENSION_PATTERN.fullmatch(user) else None


class CallRouter:
    """The routed lines, and the decision for each of their calls.

    ``lines`` maps a line's E.164 number to its fallback target (a SIP URI). ``presence``
    and ``redirect`` are wired by the composition once the dialog router and the SIP
    transport exist; until then a routed call waits for the SIP side's own deadline.
    """

    def __init__(self, *, lines: Mapping[str, str], numbering: Numbering, domain: str) -> None:
        self.lines = dict(lines)
        self.domain = domain
        self._numbering = numbering
        self.presence: Callable[[str], Presence] = lambda extension: "unknown"
        self.redirect: Callable[[str, str], bool] | None = None
        self.counts: dict[RoutingReason, int] = dict.fromkeys(ROUTING_REASONS, 0)
        self.redirects = 0  # 302s callpop decided (the deadline ones are "deadline")

    def route_for(self, caller: CallerId) -> str | None:
        """The SIP side's question: the fallback of the line this INVITE dialled, if routed."""
        if not self.lines or caller.dialed is None:
            return None
        return self.lines.get(self._numbering.normalise(caller.dialed).e164 or "")

    def route(
        self,
        *,
        call_id: str,
        sip_call_id: str,
        dialed: str | None,
        card: CallerCard,
        by_deadline: str | None,
        now: datetime,
    ) -> Routing | None:
        """Decide, send the 302, count and say it; the wire ``Routing`` for the call.

        ``by_deadline`` is the target the SIP side already redirected to because the
        decision came too late. None when the call no longer waits (cancelled first).
        """
        fallback = self.lines.get(dialed or "")
        if by_deadline is not None:
            return self._decided(call_id, by_deadline, _ring_group("deadline"), now)
        if fallback is None or self.redirect is None:
            return None
        decision = decide(card, self.presence)
        target = fallback
        if decision.extension is not None:
            target = target_uri(decision.extension, self.domain)
        if not self.redirect(sip_call_id, target):
            return None  # cancelled before the decision, or the deadline took it
        self.redirects += 1
        return self._decided(call_id, target, decision, now)

    def _decided(self, call_id: str, target: str, decision: Decision, now: datetime) -> Routing:
        self.counts[decision.reason] += 1
        extension = decision.extension or _extension_of(target)
        # Once per call, at INFO: no customer data (the extension and the reason only).
        log.info("call %s routed to %s (%s)", call_id, extension or target, decision.reason)
        return Routing(
            target=target,
            extension=extension,
            staff_id=decision.staff_id,
            name=decision.name,
            reason=decision.reason,
            decided_at=now,
        )

    @property
    def stats(self) -> dict[str, int]:
        """For /healthz (the SIP stats): ``routed_<reason>`` and ``routing_decided``."""
        stats = {f"routed_{reason.replace('-', '_')}": n for reason, n in self.counts.items()}
        stats["routing_decided"] = self.redirects
        return stats
