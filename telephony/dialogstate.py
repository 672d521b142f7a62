"""What one watched extension is doing, kept across its dialog-info documents.

RFC 4235 §4.1: a ``full`` document states every dialog of the entity and replaces what
the watcher knew; a ``partial`` one states only the dialogs that changed. ``version``
grows by one per document of a subscription (§4.1.2), so a document whose version is
not newer than the last one seen is a retransmission or arrived out of order, and is
ignored. A gap in the versions of partial documents means one was lost: the state is
then unknown until the next full document (a re-SUBSCRIBE brings one, §3.7), so the
tracker says so instead of guessing.

Sans-I/O and without a clock: :meth:`ExtensionDialogs.apply` takes a parsed document
and returns the dialogs whose state changed. It knows nothing of calls or customers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telephony.dialoginfo import Dialog, DialogInfo

Presence = Literal["idle", "ringing", "busy", "unknown"]

# RFC 4235 §3.7.1: the states of a dialog before it is confirmed.
_RINGING = frozenset({"trying", "proceeding", "early"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogChange:
    """A dialog of ``extension`` moved from ``previous`` (None: new) to ``dialog.state``."""

    extension: str
    dialog: Dialog
    previous: str | None


@dataclass(slots=True)
class ExtensionDialogs:
    """The dialogs of one extension, from the documents of its subscription."""

    extension: str
    version: int | None = None
    dialogs: dict[str, Dialog] = field(default_factory=dict)
    known: bool = False  # False until a full document, and again after a lost partial one

    def apply(self, info: DialogInfo) -> list[DialogChange]:
        """Take one document; return the dialogs whose state changed (terminated ones too)."""
        if self.version is not None and info.version <= self.version:
            return []  # §4.1.2: not newer than what we have
        if info.state == "partial" and (
            self.version is None or info.version != self.version + 1 or not self.known
        ):
            # A partial document after a gap cannot be merged: wait for a full one.
            self.version = info.version
            self.known = False
            return []
        self.version = info.version
        before = self.dialogs
        after = {} if info.state == "full" else dict(before)
        for dialog in info.dialogs:
            after[dialog.id] = dialog
        changes = [
            DialogChange(
                extension=self.extension,
                dialog=dialog,
                previous=before[dialog_id].state if dialog_id in before else None,
            )
            for dialog_id, dialog in after.items()
            if dialog_id not in before or before[dialog_id].state != dialog.state
        ]
        # A dialog a full document no longer lists is over (§4.1: full state is complete).
        for dialog_id, gone in before.items():
            if dialog_id not in after and gone.state != "terminated":
                ended = Dialog(
                    id=gone.id,
                    call_id=gone.call_id,
                    direction=gone.direction,
                    state="terminated",
                    remote_identity=gone.remote_identity,
                    remote_display=gone.remote_display,
                    local_identity=gone.local_identity,
                )
                changes.append(
                    DialogChange(extension=self.extension, dialog=ended, previous=gone.state)
                )
        self.dialogs = {k: d for k, d in after.items() if d.state != "terminated"}
        self.known = True
        return changes

    def forget(self) -> None:
        """The subscription ended: what we knew is no longer known."""
        self.version = None
        self.dialogs = {}
        self.known = False

    @property
    def presence(self) -> Presence:
        """busy (a confirmed dialog), ringing (an early one), idle, or unknown."""
        if not self.known:
            return "unknown"
        states = {dialog.state for dialog in self.dialogs.values()}
        if "confirmed" in states:
            return "busy"
        if states & _RINGING:
            return "ringing"
        return "idle"
