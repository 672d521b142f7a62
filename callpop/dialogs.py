"""From dialog NOTIFYs to who answered: parse, keep each extension's dialogs, tell the calls.

The SIP side hands up each NOTIFY body of a watched extension as bytes
(``telephony.events.DialogNotified``). :class:`DialogRouter` parses it
(``telephony.dialoginfo``: no entity expansion, a size limit), keeps the extension's
dialogs across full and partial documents (``telephony.dialogstate``) and passes every
change to the call service with the staff member on that extension. A body that is not
dialog-info was already answered by the SIP side; here it is logged (throttled) and
counted, never fatal. Knows extensions and staff, nothing of sockets or browsers.

:class:`StaffWatch` keeps what is watched in step with the staff table while callpop
runs: given the staff on extensions as just read, it watches the new extensions,
unwatches the ones nobody sits at any more (unless configured), and tells the router
(and so the board) who sits where now, so that an extension moved to another person
is attributed to that person from the next dialog event on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from callpop.calls import CallService, StaffOnExtension
from callpop.logs import Throttle
from popup_ui.messages import StaffPresence
from telephony.dialoginfo import DialogInfoError, parse_dialog_info
from telephony.dialogstate import ExtensionDialogs, Presence
from telephony.events import DialogNotified, SubscriptionChanged, SubscriptionState
from telephony.subscription import EXTENSION_PATTERN

log = logging.getLogger("callpop.sip")

# Presence changes within this many seconds go to the board as one staff.presence (the
# latest per extension): a busy office changes a phone's state three times per call, and
# every message is written to every browser (bench/README.md, "with dialog events").
PRESENCE_COALESCE = 0.1


@dataclass(slots=True)
class DialogRouter:
    """Each watched extension's dialogs, fed by NOTIFYs, feeding the call service."""

    calls: CallService
    staff: Mapping[str, StaffOnExtension]  # extension -> who sits there
    parse_errors: int = 0
    _extensions: dict[str, ExtensionDialogs] = field(default_factory=dict)
    _bad: Throttle = field(default_factory=Throttle)
    _pending: dict[str, StaffPresence] = field(default_factory=dict)  # by extension
    _flush: asyncio.TimerHandle | None = None

    def notified(self, event: DialogNotified) -> None:
        try:
            info = parse_dialog_info(event.body)
        except DialogInfoError as exc:
            self.parse_errors += 1
            held_back = self._bad.allow(event.extension)
            if held_back is not None:
                more = f" ({held_back} more since the last line)" if held_back else ""
                log.warning("NOTIFY for %s is not dialog-info: %s%s", event.extension, exc, more)
            return
        tracker = self._extensions.setdefault(event.extension, ExtensionDialogs(event.extension))
        staff = self._staff_on(event.extension)
        before = tracker.presence
        for change in tracker.apply(info):
            self.calls.on_dialog(change, staff)
        if tracker.presence != before:
            self._say_presence([self._presence_of(staff, tracker.presence)])

    def announce(self) -> None:
        """Every staff extension's presence as it stands (unknown until the PBX says)."""
        if self.staff:
            self._say_presence(
                [self._presence_of(staff, self.presence(ext)) for ext, staff in self.staff.items()]
            )

    def seat(self, staff: Mapping[str, StaffOnExtension], *, unwatched: Iterable[str] = ()) -> None:
        """Who sits at each extension from now on; the board hears of each change.

        An extension in ``unwatched`` is forgotten (its presence is unknown from now on,
        with nobody named, so no picker offers it).
        """
        old, self.staff = self.staff, staff
        gone = set(unwatched)
        changed: list[StaffPresence] = []
        for extension in gone:
            self._extensions.pop(extension, None)
            if extension in old:
                changed.append(
                    StaffPresence(staff_id=None, name=None, extension=extension, presence="unknown")
                )
        for extension, now in staff.items():
            if extension not in gone and old.get(extension) != now:
                changed.append(self._presence_of(now, self.presence(extension)))
        if changed:
            self._say_presence(changed)

    def _say_presence(self, changed: list[StaffPresence]) -> None:
        """To the board within :data:`PRESENCE_COALESCE`, merged with the changes around."""
        for one in changed:
            self._pending.pop(one.extension, None)  # keep the order of the latest changes
            self._pending[one.extension] = one
        if self._flush is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): at once
            self._flush_presence()
            return
        self._flush = loop.call_later(PRESENCE_COALESCE, self._flush_presence)

    def close(self) -> None:
        """Stop: presence changes not yet said are dropped (the board is closing too)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._pending.clear()

    def _flush_presence(self) -> None:
        self._flush = None
        pending, self._pending = list(self._pending.values()), {}
        if pending:
            self.calls.staff_presence(pending)

    def _staff_on(self, extension: str) -> StaffOnExtension:
        return self.staff.get(extension) or StaffOnExtension(
            id=None, name=None, extension=extension
        )

    @staticmethod
    def _presence_of(staff: StaffOnExtension, presence: Presence) -> StaffPresence:
        return StaffPresence(
            staff_id=staff.id, name=staff.name, extension=staff.extension, presence=presence
        )

    def subscription_changed(self, event: SubscriptionChanged) -> None:
        # A new subscription numbers its documents from 0 again (RFC 4235 §4.1.2), and
        # while there is none nothing is known of the extension.
        if event.state is not SubscriptionState.ACTIVE:
            tracker = self._extensions.get(event.extension)
            if tracker is not None and tracker.known:
                tracker.forget()
                staff = self._staff_on(event.extension)
                self._say_presence([self._presence_of(staff, "unknown")])

    def presence(self, extension: str) -> Presence:
        tracker = self._extensions.get(extension)
        return "unknown" if tracker is None else tracker.presence


def wanted_extensions(
    configured: Sequence[str], staff: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the extensions to watch: configured first, then staff, each once; the staff
    extensions that cannot be watched: not 1-32 of 0-9 A-Z a-z * # + . _ -)."""
    staff = list(staff)
    unusable = tuple(e for e in staff if not EXTENSION_PATTERN.fullmatch(e))
    wanted = dict.fromkeys([*configured, *(e for e in staff if e not in unusable)])
    return tuple(wanted), unusable


class WatchList(Protocol):
    """What :class:`StaffWatch` needs of the SIP side (``telephony.transport.SipTransport``)."""

    def watch(self, extension: str) -> bool: ...

    def unwatch(self, extension: str) -> bool: ...


def _who(staff: StaffOnExtension | None) -> str:
    return (staff.name or f"staff {staff.id}") if staff is not None else "nobody on staff"


@dataclass(slots=True)
class StaffWatch:
    """The watched extensions and the staff on them, kept in step with the staff table.

    ``watching`` is what the SIP side watches now (its start-up list). Each
    :meth:`apply` (the staff as just read) unwatches first, then watches, so that room
    freed by someone leaving is there for someone new; a watch the SIP side refuses
    (``sip.max_watched`` reached) is logged (throttled) and counted in ``refused``.
    Every change is said at INFO: ``now watching 205 (田中 一郎)``.
    """

    router: DialogRouter
    sip: WatchList
    configured: tuple[str, ...]  # sip.watch_extensions: watched whoever sits there
    watching: list[str]
    refused: int = 0  # watches the SIP side refused (the limit), counted
    _unusable: tuple[str, ...] = ()
    _said: Throttle = field(default_factory=Throttle)

    def apply(self, staff: Mapping[str, StaffOnExtension]) -> None:
        wanted, unusable = wanted_extensions(self.configured, staff)
        if unusable != self._unusable:
            self._unusable = unusable
            if unusable:
                log.warning(
                    "%d staff extension(s) cannot be watched (not 1-32 of 0-9 A-Z a-z * # + . _ -):"
                    " %s",
                    len(unusable),
                    ", ".join(repr(e) for e in unusable[:10]),
                )
        before = self.router.staff
        wanted_set = set(wanted)
        removed = [e for e in self.watching if e not in wanted_set]
        # Who sits where first: the presence and the answers that follow are theirs.
        self.router.seat({e: s for e, s in staff.items() if e in wanted_set}, unwatched=removed)
        for extension in removed:
            self.sip.unwatch(extension)
            log.info("no longer watching %s (%s)", extension, _who(before.get(extension)))
        watching = [e for e in self.watching if e in wanted_set]
        for extension in wanted:
            if extension in watching:
                if before.get(extension) != staff.get(extension):
                    log.info(
                        "extension %s is now %s (was %s)",
                        extension,
                        _who(staff.get(extension)),
                        _who(before.get(extension)),
                    )
                continue
            if self.sip.watch(extension):
                watching.append(extension)
                log.info("now watching %s (%s)", extension, _who(staff.get(extension)))
            else:
                self.refused += 1
                held_back = self._said.allow("refused")
                if held_back is not None:
                    more = f" ({held_back} more since the last line)" if held_back else ""
                    log.warning(
                        "cannot watch %s (%s): %d extensions are watched already"
                        " (sip.max_watched)%s",
                        extension,
                        _who(staff.get(extension)),
                        len(watching),
                        more,
                    )
        self.watching = watching
