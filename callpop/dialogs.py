"""From dialog NOTIFYs to who answered: parse, keep each extension's dialogs, tell the calls.

The SIP side hands up each NOTIFY body of a watched extension as bytes
(``telephony.events.DialogNotified``). :class:`DialogRouter` parses it
(``telephony.dialoginfo``: no entity expansion, a size limit), keeps the extension's
dialogs across full and partial documents (``telephony.dialogstate``) and passes every
change to the call service with the staff member on that extension. A body that is not
dialog-info was already answered by the SIP side; here it is logged (throttled) and
counted, never fatal. Knows extensions and staff, nothing of sockets or browsers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from callpop.calls import CallService, StaffOnExtension
from callpop.logs import Throttle
from popup_ui.messages import StaffPresence
from telephony.dialoginfo import DialogInfoError, parse_dialog_info
from telephony.dialogstate import ExtensionDialogs, Presence
from telephony.events import DialogNotified, SubscriptionChanged, SubscriptionState

log = logging.getLogger("callpop.sip")


@dataclass(slots=True)
class DialogRouter:
    """Each watched extension's dialogs, fed by NOTIFYs, feeding the call service."""

    calls: CallService
    staff: Mapping[str, StaffOnExtension]  # extension -> who sits there
    parse_errors: int = 0
    _extensions: dict[str, ExtensionDialogs] = field(default_factory=dict)
    _bad: Throttle = field(default_factory=Throttle)

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
            self.calls.staff_presence([self._presence_of(staff, tracker.presence)])

    def announce(self) -> None:
        """Every staff extension's presence as it stands (unknown until the PBX says)."""
        if self.staff:
            self.calls.staff_presence(
                [self._presence_of(staff, self.presence(ext)) for ext, staff in self.staff.items()]
            )

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
                self.calls.staff_presence([self._presence_of(staff, "unknown")])

    def presence(self, extension: str) -> Presence:
        tracker = self._extensions.get(extension)
        return "unknown" if tracker is None else tracker.presence
