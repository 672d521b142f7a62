"""``callpop explain-invite``: what callpop reads from one raw SIP INVITE, as a JSON-ready dict.

This module owns the shape of that answer (the public contract in the house
plan) and glues the SIP side (parse, caller ID) to the office's numbering plan, the
same :class:`~lookup.numbers.Numbering` the call path uses. It knows nothing of
files, stdin or exit codes; the CLI wraps it.
"""

from __future__ import annotations

from lookup.numbers import Numbering
from telephony.callerid import extract_caller_id
from telephony.message import SipParseError, SipRequest, parse_message

__all__ = ["ExplainError", "explain_invite"]


class ExplainError(ValueError):
    """The input is not a SIP request; the text is a one-line reason."""


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
