"""``callpop explain-invite`` / ``explain-notify``: what callpop reads from one raw SIP
INVITE, or one dialog-info NOTIFY, as a JSON-ready dict.

This module owns the shape of those answers (public contracts: README "Commands") and
glues the SIP side (parse, caller ID, dialog-info) to the office's numbering plan, the
same :class:`~lookup.numbers.Numbering` the call path uses. It knows nothing of
files, stdin or exit codes; the CLI wraps it.
"""

from __future__ import annotations

from lookup.numbers import Numbering
from telephony.callerid import extract_caller_id
from telephony.dialoginfo import DialogInfoError, dialog_info_of_message, parse_dialog_info
from telephony.message import SipParseError, SipRequest, parse_message

__all__ = ["ExplainError", "explain_invite", "explain_notify"]


class ExplainError(ValueError):
    """The input is not what the command reads; the text is a one-line reason."""


def _as_request(data: bytes) -> SipRequest:
    try:
        message = parse_message(data)
    except SipParseError as exc:
        # A request with a readable start line and header block but e.g. a missing
        # header or a Content-Length that no longer fits (often after hand-editing a
        # log excerpt) is still worth explaining: the caller-ID rules never raise.
        if isinstance(exc.partial, SipRequest):
            return exc.partial
        raise ExplainError(f"not a SIP request: {exc}") from None
    if not isinstance(message, SipRequest):
        raise ExplainError(f"not a SIP request: a {message.status} response")
    return message


def explain_invite(
    data: bytes,
    *,
    numbering: Numbering = Numbering(),  # noqa: B008 (frozen: one shared default is fine)
) -> dict[str, object]:
    """Caller number, national form, display name, withheld reason, source and dialled line."""
    caller = extract_caller_id(_as_request(data))
    number = numbering.normalise(caller.number)
    dialed = numbering.normalise(caller.dialed)
    return {
        "number": number.e164,
        "national": number.national,
        "display_name": caller.display_name,
        "withheld": None if caller.withheld is None else caller.withheld.value,
        "source": None if caller.source is None else caller.source.value,
        "dialed": dialed.e164,
    }


def explain_notify(data: bytes) -> dict[str, object]:
    """The dialog-info document in a bare body or a whole NOTIFY (told apart by the first
    byte: a body starts with ``<``), with the fields of the shared corpus's expected.json."""
    looks_like_body = data.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").startswith(b"<")
    try:
        info = parse_dialog_info(data) if looks_like_body else dialog_info_of_message(data)
    except DialogInfoError as exc:
        raise ExplainError(f"not dialog-info: {exc}") from None
    return {
        "document": {"version": info.version, "state": info.state, "entity": info.entity},
        "dialogs": [
            {
                "id": dialog.id,
                "call_id": dialog.call_id,
                "direction": dialog.direction,
                "state": dialog.state,
                "event": dialog.event,
                "remote_identity": dialog.remote_identity,
                "remote_display": dialog.remote_display,
                "local_identity": dialog.local_identity,
            }
            for dialog in info.dialogs
        ],
    }
