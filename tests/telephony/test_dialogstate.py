"""One extension's dialogs across full and partial dialog-info documents (RFC 4235 §4.1)."""

from __future__ import annotations

from telephony.dialoginfo import Dialog, DialogInfo
from telephony.dialogstate import ExtensionDialogs


def _doc(version: int, state: str, *dialogs: tuple[str, str]) -> DialogInfo:
    return DialogInfo(
        version=version,
        state=state,  # type: ignore[arg-type]
        entity="sip:203@pbx",
        dialogs=tuple(
            Dialog(id=dialog_id, state=dialog_state, remote_identity="sip:0312345678@pbx")
            for dialog_id, dialog_state in dialogs
        ),
    )


def _changes(tracker: ExtensionDialogs, info: DialogInfo) -> list[tuple[str, str | None, str]]:
    return [(c.dialog.id, c.previous, c.dialog.state) for c in tracker.apply(info)]


def test_ringing_answered_and_hung_up_through_full_documents() -> None:
    tracker = ExtensionDialogs("203")
    assert tracker.presence == "unknown"
    assert _changes(tracker, _doc(0, "full")) == []
    assert tracker.presence == "idle"
    assert _changes(tracker, _doc(1, "full", ("a", "early"))) == [("a", None, "early")]
    assert tracker.presence == "ringing"
    assert _changes(tracker, _doc(2, "full", ("a", "confirmed"))) == [("a", "early", "confirmed")]
    assert tracker.presence == "busy"
    assert _changes(tracker, _doc(3, "full", ("a", "terminated"))) == [
        ("a", "confirmed", "terminated")
    ]
    assert tracker.presence == "idle"


def test_a_dialog_a_full_document_leaves_out_has_ended() -> None:
    # Asterisk's minimal form often just drops the dialog instead of saying terminated.
    tracker = ExtensionDialogs("203")
    tracker.apply(_doc(1, "full", ("a", "confirmed"), ("b", "early")))
    assert _changes(tracker, _doc(2, "full", ("b", "early"))) == [("a", "confirmed", "terminated")]
    assert tracker.presence == "ringing"


def test_partial_documents_update_only_what_they_name_and_stale_ones_are_ignored() -> None:
    tracker = ExtensionDialogs("203")
    tracker.apply(_doc(5, "full", ("a", "confirmed"), ("b", "early")))
    assert _changes(tracker, _doc(6, "partial", ("b", "confirmed"))) == [
        ("b", "early", "confirmed")
    ]
    assert set(tracker.dialogs) == {"a", "b"}
    assert _changes(tracker, _doc(6, "partial", ("b", "terminated"))) == []  # retransmitted
    assert _changes(tracker, _doc(4, "full")) == []  # older
    assert tracker.presence == "busy"


def test_a_lost_partial_document_makes_the_state_unknown_until_a_full_one() -> None:
    tracker = ExtensionDialogs("203")
    tracker.apply(_doc(1, "full", ("a", "early")))
    assert _changes(tracker, _doc(3, "partial", ("a", "confirmed"))) == []  # 2 went missing
    assert tracker.presence == "unknown"
    assert _changes(tracker, _doc(4, "partial", ("a", "terminated"))) == []
    assert _changes(tracker, _doc(5, "full", ("c", "confirmed"))) == [
        ("c", None, "confirmed"),
        ("a", "early", "terminated"),
    ]
    assert tracker.presence == "busy"


def test_a_new_subscription_starts_its_versions_again() -> None:
    tracker = ExtensionDialogs("203")
    tracker.apply(_doc(9, "full", ("a", "confirmed")))
    tracker.forget()
    assert tracker.presence == "unknown"
    assert _changes(tracker, _doc(0, "full", ("b", "early"))) == [("b", None, "early")]
