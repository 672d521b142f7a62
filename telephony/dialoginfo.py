"""RFC 4235 dialog event bodies: ``application/dialog-info+xml`` bytes to frozen data.

This module owns reading one dialog-info document (the body of a ``NOTIFY`` for
``Event: dialog``, or of a ``PUBLISH`` of the same) and the checks that a whole NOTIFY
carries one. It knows nothing of subscriptions, version sequencing, extensions or
staff: what a version gap or a ``partial`` document means is the subscription's
business. No sockets, no clock, no logging.

Hostile input is the normal case here (the body comes off the network): the XML is
read by ``defusedxml`` with DTDs forbidden (so no entity declarations, no billion
laughs, no external entities), from at most ``MAX_BODY_BYTES``, and only as UTF-8.
Every rejection is a ``DialogInfoError`` with a one-line reason, decided by an explicit
check or by the XML parser's own verdict (``ParseError``, ``DefusedXmlException``); any
other exception is a bug here and propagates, so the corpus and fuzz tests see it.

Real PBXs bend RFC 4235 (``tests/data/dialog-info/README.md`` and the shared corpus's
SOURCES.md list them); what is tolerated, on purpose:

- the namespace may be the default one, a prefixed one, or missing altogether;
  elements of other namespaces (``sa:`` shared-appearance, vendor extensions) are ignored;
- child elements in any order (``<state>`` last, ``<remote>`` before ``<local>``,
  ``<note>`` first, ``<param>`` directly under ``<dialog>``), and ``<local>`` nested
  inside ``<remote>`` as OpenSIPS' empty-body template writes it;
- line breaks inside start tags and attribute values (PDF-wrapped manuals; XML
  attribute-value normalisation turns them into spaces), padding around ``version``;
- identities with or without ``display``, any scheme or none (``sip:``, ``tel:``,
  bare ``10090``), several ``<identity>`` elements (the first one counts);
- a NOTIFY whose body starts right after the headers with no empty line, and whose
  Content-Length does not match the body (a log excerpt, a manual's rendering).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden
from defusedxml.ElementTree import fromstring

from telephony.message import SipParseError, SipRequest, parse_message

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_BYTES",
    "NAMESPACE",
    "Dialog",
    "DialogInfo",
    "DialogInfoError",
    "dialog_info_of_message",
    "dialog_info_of_request",
    "parse_dialog_info",
]

# RFC 4235 §4.1
NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"
CONTENT_TYPE = "application/dialog-info+xml"
# A full-state document for one extension is a few KB; 64 KiB is also the UDP limit.
MAX_BODY_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = MAX_BODY_BYTES + 16 * 1024
# RFC 4235 §4.1.1: version is an xs:unsignedInt; leave room for senders that overshoot.
_MAX_VERSION_DIGITS = 20
_MAX_DURATION_DIGITS = 10


class DialogInfoError(ValueError):
    """The input is not a dialog-info document (or NOTIFY) we can use; one line says why."""

    def __init__(self, reason: str) -> None:
        # One line whatever went into it (expat positions, attribute values).
        super().__init__(" ".join(reason.split()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialog:
    """One ``<dialog>`` element. Strings are as written (XML-normalised, trimmed text).

    ``state`` is the text of ``<state>`` (RFC 4235: trying, proceeding, early, confirmed,
    terminated); ``event`` its ``event`` attribute (cancelled, rejected, replaced,
    local-bye, remote-bye, error, timeout) or ``None``. ``remote_*``/``local_*`` come
    from the first ``<identity>`` and the ``<target>`` of ``<remote>``/``<local>``;
    which side is the caller depends on the sender (Wildix swaps them).
    """

    id: str
    call_id: str | None = None
    direction: str | None = None
    state: str
    event: str | None = None
    remote_identity: str | None = None
    remote_display: str | None = None
    local_identity: str | None = None
    local_display: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    remote_target: str | None = None
    local_target: str | None = None
    duration: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogInfo:
    """One ``<dialog-info>`` document: ``full`` replaces what the watcher knew of
    ``entity``, ``partial`` updates only the dialogs it lists (RFC 4235 §4.1)."""

    version: int
    state: Literal["full", "partial"]
    entity: str | None
    dialogs: tuple[Dialog, ...]


# --- one body -----------------------------------------------------------------


def parse_dialog_info(body: bytes) -> DialogInfo:
    """Read one ``application/dialog-info+xml`` body; raise ``DialogInfoError`` if it is not one."""
    root = _parse_xml(body)
    namespace, name = _split_tag(root.tag)
    if name != "dialog-info":
        raise DialogInfoError(f"root element is <{_shorten(name)}>, not <dialog-info>")
    if namespace not in ("", NAMESPACE):
        raise DialogInfoError(f"<dialog-info> in namespace {_shorten(namespace, 60)!r}")
    version = _version(root.get("version"))
    state: Literal["full", "partial"]
    match (root.get("state") or "").strip().lower():
        case "full":
            state = "full"
        case "partial":
            state = "partial"
        case _:
            raise DialogInfoError(f"<dialog-info> state is {_shorten(root.get('state'))!r}")
    dialogs = tuple(_dialog(element) for element in _children(root, "dialog"))
    return DialogInfo(version=version, state=state, entity=root.get("entity"), dialogs=dialogs)


def _parse_xml(body: bytes) -> Element:
    if len(body) > MAX_BODY_BYTES:
        raise DialogInfoError(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES} limit")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DialogInfoError(f"body is not UTF-8 (byte {exc.start})") from None
    # A str makes expat read UTF-8 whatever the XML declaration claims: the bytes were
    # just checked to be UTF-8, and a declared ISO-8859-1 would turn them into mojibake.
    # Whitespace before ``<?xml`` is not well-formed, but a log excerpt or a bare body
    # pasted into a file often has it; it carries nothing.
    text = text.lstrip()
    if not text:
        raise DialogInfoError("empty body")
    try:
        return fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except ParseError as exc:
        raise DialogInfoError(f"not XML: {exc}") from None
    except DTDForbidden:
        raise DialogInfoError("a DTD is not allowed in dialog-info") from None
    except EntitiesForbidden:
        raise DialogInfoError("entity declarations are not allowed in dialog-info") from None
    except DefusedXmlException as exc:
        raise DialogInfoError(f"refused XML: {type(exc).__name__}") from None


def _split_tag(tag: object) -> tuple[str, str]:
    """``{ns}local`` -> (ns, local). Comments/PIs are not kept by the tree builder."""
    if not isinstance(tag, str):
        return "", ""
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def _children(parent: Element, name: str) -> list[Element]:
    """Children called ``name`` in the dialog-info namespace or in none (a PBX that
    omits ``xmlns``); other namespaces are extensions and are skipped."""
    return [child for child in parent if _split_tag(child.tag) in ((NAMESPACE, name), ("", name))]


def _first(parent: Element, name: str) -> Element | None:
    found = _children(parent, name)
    return found[0] if found else None


def _text(element: Element | None) -> str | None:
    """Whitespace-trimmed text content, ``None`` when there is none."""
    if element is None:
        return None
    text = "".join(element.itertext()).strip()
    return text or None


def _version(value: str | None) -> int:
    if value is None:
        raise DialogInfoError("<dialog-info> has no version")
    digits = value.strip()  # OpenSIPS pads the version it rewrites in place
    if not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_VERSION_DIGITS:
        raise DialogInfoError(f"<dialog-info> version is {_shorten(value)!r}")
    return int(digits)


def _dialog(element: Element) -> Dialog:
    dialog_id = element.get("id")
    if not dialog_id:
        raise DialogInfoError("a <dialog> has no id")
    state_element = _first(element, "state")
    state = _text(state_element)
    if state_element is None or state is None:
        raise DialogInfoError(f"dialog {_shorten(dialog_id)!r} has no <state>")
    local = _first(element, "local")
    remote = _first(element, "remote")
    if local is None and remote is not None:
        local = _first(remote, "local")  # OpenSIPS presence_dialoginfo's empty-body form
    remote_identity = None if remote is None else _first(remote, "identity")
    local_identity = None if local is None else _first(local, "identity")
    return Dialog(
        id=dialog_id,
        call_id=element.get("call-id"),
        direction=_stripped(element.get("direction")),
        state=state,
        event=_stripped(state_element.get("event")),
        remote_identity=_text(remote_identity),
        remote_display=None if remote_identity is None else remote_identity.get("display"),
        local_identity=_text(local_identity),
        local_display=None if local_identity is None else local_identity.get("display"),
        local_tag=element.get("local-tag"),
        remote_tag=element.get("remote-tag"),
        remote_target=_target(remote),
        local_target=_target(local),
        duration=_duration(_text(_first(element, "duration"))),
    )


def _stripped(value: str | None) -> str | None:
    return None if value is None else value.strip() or None


def _target(party: Element | None) -> str | None:
    target = None if party is None else _first(party, "target")
    return None if target is None else target.get("uri")


def _duration(text: str | None) -> int | None:
    # Informational only: a bad <duration> is ignored rather than failing the document.
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= _MAX_DURATION_DIGITS else None


# --- a whole NOTIFY -----------------------------------------------------------


def dialog_info_of_request(request: SipRequest) -> DialogInfo:
    """The dialog-info in a parsed NOTIFY (or PUBLISH) for ``Event: dialog``."""
    if request.method not in ("NOTIFY", "PUBLISH"):
        raise DialogInfoError(f"a {_shorten(request.method)} request, not a NOTIFY")
    event = request.headers.get("event")
    if event is None:
        raise DialogInfoError("NOTIFY has no Event header")
    package = event.partition(";")[0].strip().lower()
    if package != "dialog":  # RFC 4235 §3.1; RFC 6665 §8.2.1 (case-insensitive token)
        raise DialogInfoError(f"Event is {_shorten(package)!r}, not 'dialog'")
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.partition(";")[0].strip().lower()
        if media != CONTENT_TYPE:
            raise DialogInfoError(f"Content-Type is {_shorten(media, 40)!r}, not {CONTENT_TYPE}")
    if not request.body.strip():
        raise DialogInfoError("NOTIFY has no body")
    return parse_dialog_info(request.body)


def dialog_info_of_message(data: bytes) -> DialogInfo:
    """The dialog-info in one whole NOTIFY message as bytes (a datagram or a log excerpt)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise DialogInfoError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    head, body = _split_message(bytes(data))
    try:
        message = parse_message(head + b"\r\n\r\n" + body)
    except SipParseError as exc:
        # A header that does not parse (``tag=`` without ``;`` in a manual's log) or a
        # Content-Length that does not fit the rendered body leaves the rest usable.
        if not isinstance(exc.partial, SipRequest):
            raise DialogInfoError(f"not a SIP request: {exc}") from None
        message = exc.partial  # its body is all of ``body``: Content-Length was not applied
    if not isinstance(message, SipRequest):
        raise DialogInfoError(f"a {message.status} response, not a NOTIFY")
    return dialog_info_of_request(message)


def _split_message(data: bytes) -> tuple[bytes, bytes]:
    """Header block (without its final line break) and body.

    RFC 3261 §7.5 puts an empty line between them; logs and manuals often drop it, so a
    line that starts with ``<`` (no header name can) also starts the body.
    """
    start = 0
    while data.startswith((b"\r\n", b"\n"), start):
        start += 2 if data[start] == 0x0D else 1
    line_start = data.find(b"\n", start) + 1  # after the start line
    if line_start == 0:
        return data[start:].rstrip(b"\r"), b""
    while line_start < len(data):
        line_end = data.find(b"\n", line_start)
        if line_end == -1:
            line_end = len(data)
        line = data[line_start:line_end].rstrip(b"\r")
        head_end = line_start - (2 if data[line_start - 2 : line_start] == b"\r\n" else 1)
        if not line:
            return data[start:head_end], data[line_end + 1 :]
        if line.startswith(b"<"):
            return data[start:head_end], data[line_start:]
        line_start = line_end + 1
    return data[start:].rstrip(b"\r\n"), b""


def _shorten(text: str | None, width: int = 20) -> str:
    if text is None:
        return ""
    return text if len(text) <= width else text[:width] + "..."
